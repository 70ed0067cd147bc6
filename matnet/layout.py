"""MATLAB <-> torch array layouts, stated once for the whole package.

MatConvNet holds activations as H x W x C x N (column-major, h varies fastest).
matnet holds them as torch N x C x H x W.  The two index the same element:
``x_matlab[h, w, c, n] == x_torch[n, c, h, w]``.

Weights keep MatConvNet's shapes everywhere (conv filters H x W x Cin x Cout,
biases Cout) so that saving to ``.mat`` is a plain copy; only the forward pass
permutes them to torch's Cout x Cin x H x W.
"""
from __future__ import annotations

import numpy as np
import torch


def matlab_to_torch(x) -> torch.Tensor:
    """H x W x C x N (numpy or tensor, MATLAB order) -> torch N x C x H x W float32.

    Trailing singleton dimensions that MATLAB drops (an H x W x C image is one
    image, an H x W map is one channel) are restored first."""
    a = torch.as_tensor(np.asarray(x, dtype=np.float32))
    while a.dim() < 4:
        a = a.unsqueeze(-1)
    if a.dim() != 4:
        raise ValueError(f"expected an H x W x C x N array, got shape {tuple(a.shape)}")
    return a.permute(3, 2, 0, 1).contiguous()


def torch_to_matlab(x: torch.Tensor) -> np.ndarray:
    """torch N x C x H x W -> numpy H x W x C x N (MATLAB order)."""
    if x.dim() != 4:
        raise ValueError(f"expected an N x C x H x W tensor, got shape {tuple(x.shape)}")
    return x.detach().cpu().permute(2, 3, 1, 0).numpy()


def conv_filters_to_torch(w: torch.Tensor) -> torch.Tensor:
    """MatConvNet filters H x W x Cin x Cout -> torch Cout x Cin x H x W (a view)."""
    return w.permute(3, 2, 0, 1)


def conv_filters_from_torch(w: torch.Tensor) -> torch.Tensor:
    """torch Cout x Cin x H x W -> MatConvNet H x W x Cin x Cout (a view)."""
    return w.permute(2, 3, 1, 0)


def matlab_shape(a, ndim: int):
    """Restore trailing singleton dims MATLAB truncated: a 3x3x64 filter bank
    with one output channel comes back as 3x3x64x1 for ``ndim=4``.  Tensors stay
    tensors (a view, no copy); anything else becomes a numpy array."""
    if not isinstance(a, torch.Tensor):
        a = np.asarray(a)
    if a.ndim > ndim:
        if any(s != 1 for s in a.shape[ndim:]):
            raise ValueError(f"array of shape {a.shape} has more than {ndim} dimensions")
        a = a.reshape(tuple(a.shape[:ndim]))
    return a.reshape(tuple(a.shape) + (1,) * (ndim - a.ndim))
