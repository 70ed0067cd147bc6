"""A NetVLAD network as one image -> descriptor module (:class:`DescriptorNet`), the
thing torch.hub hands out and ONNX/TorchScript export write, and :func:`preprocess`.

The computation is serialAllFeats' for one batch: subtract ``averageImage(1,1,:)``,
run the SimpleNN, flatten the output in MATLAB order; ``dims`` below the full size is
testFromFn's cropToDim (the first ``dims`` values, L2-normalised again).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .images import to_rgb_uint8, mean_colour
from .layers.base import add_epsilon
from .layers.heads import layerWholeL2Normalize
from .nettools import netOutputDim
from .precision import tf32
from .simplenn import SimpleNN

EPS = 1e-12  # relja_l2normalize_col


def average_colour(net: SimpleNN) -> np.ndarray:
    """``averageImage(1,1,1:3)`` of ``net.meta.normalization`` (the per-channel mean
    serialAllFeats subtracts), float32."""
    norm = net.meta.get("normalization") if isinstance(net.meta, dict) else None
    return mean_colour(norm.get("averageImage") if isinstance(norm, dict) else None)


def preprocess(images) -> torch.Tensor:
    """Images -> the N x 3 x H x W float32 0..255 batch :class:`DescriptorNet` takes.

    ``images``: a PIL image, an H x W x 3 or H x W (grayscale) uint8 array, an
    N x H x W x 3 uint8 array, or a list of PIL images/uint8 arrays of one size.
    Grayscale is replicated and alpha dropped, as vl_imreadjpeg reads images; nothing is
    resized.  The batch is channels_last in memory (the fast CPU layout)."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        batch = images
    else:
        items = images if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError("preprocess: no images")
        arrays = [_one(im, i) for i, im in enumerate(items)]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"preprocess: images of different sizes {sorted(shapes)} cannot be one batch")
        batch = np.stack(arrays)
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] != 3:
        raise TypeError(f"preprocess: expected N x H x W x 3 uint8, got {batch.dtype} {batch.shape}")
    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float()


def _one(im, i: int) -> np.ndarray:
    from PIL import Image
    if isinstance(im, Image.Image):
        return to_rgb_uint8(im, f"image {i}")
    a = np.asarray(im)
    if a.dtype != np.uint8:
        raise TypeError(f"preprocess: image {i} is {a.dtype}; pass uint8 (0..255) images, or give float "
                        f"0..255 N x 3 x H x W tensors to the model directly")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise TypeError(f"preprocess: image {i} has shape {a.shape}, expected H x W x 3 or H x W")
    return a


class DescriptorNet(nn.Module):
    """``y = model(x)``: x is N x 3 x H x W RGB float in 0..255 (any H x W the network
    takes, e.g. from :func:`preprocess`), y is N x dims L2-normalised descriptors
    (MATLAB order; ``dims`` None = the network's full output).

    ``net`` must end in layerWholeL2Normalize (every NetVLAD network does: 'postL2' or,
    after WPCA, 'finalL2').  The module holds ``net`` itself (no copy).  On a GPU the
    forward runs with TF32 off (MatConvNet's float32, as ``precision='exact'``), except
    while being traced or compiled (export), where the caller's settings hold."""

    def __init__(self, net: SimpleNN, dims: int | None = None):
        super().__init__()
        if not len(net.layers) or not isinstance(net.layers[-1], layerWholeL2Normalize):
            last = net.layers[-1].name if len(net.layers) else "none"
            raise ValueError(f"not a descriptor network: the last layer ({last}) is not layerWholeL2Normalize")
        self.net = net
        self.register_buffer("mean", torch.from_numpy(average_colour(net)).reshape(1, 3, 1, 1))
        self.full_dim = netOutputDim(net)[0]
        if dims is not None and not 0 < int(dims) <= self.full_dim:
            raise ValueError(f"dims must be between 1 and the network's output size {self.full_dim}, got {dims}")
        self.dims = None if dims is None or int(dims) == self.full_dim else int(dims)

    @property
    def out_dim(self) -> int:
        return self.dims or self.full_dim

    def extra_repr(self) -> str:
        return f"out_dim={self.out_dim}" + (f" (cropToDim of {self.full_dim})" if self.dims else "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected N x 3 x H x W RGB images in 0..255, got shape {tuple(x.shape)}")
        if x.is_cuda and not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            with tf32(False):  # MatConvNet's float32 (cuDNN allows TF32 convolutions by default)
                y = self.net(x - self.mean)
        else:
            y = self.net(x - self.mean)
        y = y.permute(0, 1, 3, 2).reshape(y.shape[0], -1)  # MATLAB's reshape(res(end).x, [], N)
        if self.dims:
            y = y[:, :self.dims]
            y = y / add_epsilon(torch.linalg.vector_norm(y, dim=1, keepdim=True), EPS)
        return y

    preprocess = staticmethod(preprocess)
