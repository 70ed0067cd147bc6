"""A torch-native NetVLAD head for any backbone: :class:`NetVLAD`.

It is the head addLayers appends for method 'vlad[v2]_preL2_intra' (preL2 normalisation,
``layerVLAD``/``layerVLADv2``, intra-normalisation, whole L2) as one ordinary
``nn.Module``, running matnet's exact VLAD kernel (:func:`matnet.layers.vlad.vlad_aggregate`),
with parameters under the names the PyTorch ports use (``conv.weight`` K x D x 1 x 1,
``conv.bias`` K for v2, ``centroids`` K x D).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .add_layers import l2normalize_col, vlad_alpha, vladv2_alpha
from .layers.heads import layerWholeL2Normalize
from .layers.normalize import Normalize
from .layers.vlad import layerVLAD, layerVLADv2, vlad_aggregate

EPS = 1e-12  # MatConvNet's normalize [2D 1e-12 1 0.5] and relja_l2normalize_col
ORDERS = ("D", "K")


def l2_channels(x: torch.Tensor) -> torch.Tensor:
    """vl_nnnormalize with [2C 1e-12 1 0.5] over dim 1: x / sqrt(1e-12 + ||x||^2)."""
    return x * (EPS + (x * x).sum(1, keepdim=True)).pow(-0.5)


class NetVLAD(nn.Module):
    """NetVLAD pooling of N x D x H x W features (any H x W, NCHW or channels_last)
    into N x K·D L2-normalised descriptors.

    ``normalize_input``: preL2, every local descriptor divided by sqrt(1e-12 + ||x||^2)
    (MatConvNet normalize [2D 1e-12 1 0.5]); ``intra_norm``: the same per cluster;
    the result is always L2-normalised as a whole (x / (||x|| + 1e-12)).
    ``vladv2``: assignment with bias (``layerVLADv2``), else ``layerVLAD``.
    ``order``: 'D' (default) is MATLAB's order, element (k, d) at k + K·d, which the
    released WPCA matrices expect; 'K' puts it at d + D·k (the PyTorch ports' order).
    """

    def __init__(self, num_clusters: int = 64, dim: int = 512, normalize_input: bool = True,
                 intra_norm: bool = True, vladv2: bool = False, order: str = "D"):
        super().__init__()
        if order not in ORDERS:
            raise ValueError(f"NetVLAD: order must be 'D' (MATLAB's k + K*d) or 'K' (d + D*k), got {order!r}")
        if num_clusters < 1 or dim < 1:
            raise ValueError(f"NetVLAD: num_clusters and dim must be positive, got {num_clusters}, {dim}")
        self.num_clusters, self.dim = int(num_clusters), int(dim)
        self.normalize_input, self.intra_norm = bool(normalize_input), bool(intra_norm)
        self.vladv2, self.order = bool(vladv2), order
        self.alpha = None  # set by init_from
        self.conv = nn.Conv2d(self.dim, self.num_clusters, kernel_size=1, bias=self.vladv2)
        self.centroids = nn.Parameter(torch.rand(self.num_clusters, self.dim))

    def extra_repr(self) -> str:
        return (f"num_clusters={self.num_clusters}, dim={self.dim}, normalize_input={self.normalize_input}, "
                f"intra_norm={self.intra_norm}, vladv2={self.vladv2}, order={self.order!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"NetVLAD: expected N x {self.dim} x H x W features, got shape {tuple(x.shape)}")
        if self.normalize_input:
            x = l2_channels(x)
        k, d = self.num_clusters, self.dim
        v = vlad_aggregate(x, self.conv.weight.reshape(k, d).t(), self.conv.bias,
                           -self.centroids.t())                               # N x D x 1 x K
        if self.intra_norm:
            v = l2_channels(v)
        if self.order == "D":
            v = v.transpose(2, 3).reshape(v.shape[0], -1)                     # k + K*d
        else:
            v = v.permute(0, 3, 2, 1).reshape(v.shape[0], -1)                 # d + D*k
        return v / (torch.linalg.vector_norm(v, dim=1, keepdim=True) + EPS)

    # -- MATLAB initialisation -----------------------------------------------------------
    def init_from(self, centroids, train_descs) -> "NetVLAD":
        """addLayers' initialisation from k-means ``centroids`` (K x D) and training
        descriptors ``train_descs`` (N x D, the features the centres were computed on).

        layerVLAD: alpha = -log(0.01) / mean(top1 - top2 dot product with the
        L2-normalised centres); assignment weights alpha * c / (||c|| + 1e-12).
        layerVLADv2: alpha = -log(0.01) / mean(2nd - 1st smallest squared distance to the
        centres); weights 2 alpha c, bias -alpha ||c||^2.  Returns the module; ``alpha``
        is kept as an attribute."""
        c = np.asarray(torch.as_tensor(centroids).detach().cpu(), dtype=np.float32)
        t = np.asarray(torch.as_tensor(train_descs).detach().cpu(), dtype=np.float32)
        if c.shape != (self.num_clusters, self.dim):
            raise ValueError(f"NetVLAD.init_from: centroids must be {self.num_clusters} x {self.dim} (K x D), "
                             f"got {c.shape}")
        if t.ndim != 2 or t.shape[1] != self.dim or t.shape[0] < 1:
            raise ValueError(f"NetVLAD.init_from: train_descs must be N x {self.dim}, got {t.shape}")
        clsts, descs = c.T, t.T  # MATLAB's D x K and D x N
        with torch.no_grad():
            if self.vladv2:
                self.alpha = vladv2_alpha(clsts, descs)
                w = 2 * self.alpha * clsts
                self.conv.bias.copy_(torch.from_numpy(
                    -self.alpha * (clsts.astype(np.float64) ** 2).sum(0)).float())
            else:
                self.alpha = vlad_alpha(clsts, descs)
                w = self.alpha * l2normalize_col(clsts)
            self.conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T, np.float32)).reshape(
                self.num_clusters, self.dim, 1, 1))
            self.centroids.copy_(torch.from_numpy(c))
        return self

    # -- conversion to and from the MATLAB layers ---------------------------------------------
    @classmethod
    def from_layer(cls, layer, normalize_input: bool = True, intra_norm: bool = True,
                   order: str = "D") -> "NetVLAD":
        """The module holding ``layer``'s (layerVLAD or layerVLADv2) weights, bit for bit."""
        if not isinstance(layer, (layerVLAD, layerVLADv2)):
            raise TypeError(f"NetVLAD.from_layer: expected a layerVLAD or layerVLADv2, got {type(layer).__name__}")
        if not len(layer.weights):
            raise ValueError(f"NetVLAD.from_layer: layer '{layer.name}' has no weights")
        k, d = layer.K, layer.D
        v2 = isinstance(layer, layerVLADv2)
        m = cls(k, d, normalize_input, intra_norm, vladv2=v2, order=order)
        with torch.no_grad():
            m.conv.weight.copy_(layer.weights[0].reshape(d, k).t().reshape(k, d, 1, 1))
            m.centroids.copy_(-layer.weights[-1].reshape(d, k).t())
            if v2:
                m.conv.bias.copy_(layer.weights[1].reshape(k))
        return m

    def to_layer(self, name: str = "vlad:core"):
        """The ``layerVLAD`` (``layerVLADv2`` with ``vladv2``) holding these weights, bit for bit."""
        k, d = self.num_clusters, self.dim
        a = self.conv.weight.detach().cpu().reshape(k, d).t().numpy()
        c = self.centroids.detach().cpu().t().numpy()
        if self.vladv2:
            b = self.conv.bias.detach().cpu().reshape(1, k).numpy()
            return layerVLADv2(name).constructor([a, b, -c])
        return layerVLAD(name).constructor([a, c])

    def to_layers(self) -> list:
        """The SimpleNN layers addLayers builds for this head ('preL2', 'vlad:core',
        'vlad:intranorm', 'postL2'); MATLAB's descriptor order only (order 'D')."""
        if self.order != "D":
            raise ValueError("NetVLAD.to_layers: SimpleNN layers give MATLAB's order; this module has order 'K'")
        norm = [2 * self.dim, EPS, 1, 0.5]
        return ([Normalize("preL2", norm)] if self.normalize_input else []) + [self.to_layer()] + \
            ([Normalize("vlad:intranorm", norm)] if self.intra_norm else []) + [layerWholeL2Normalize("postL2")]
