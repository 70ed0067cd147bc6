"""NetVLAD's parameter-free classdef layers: layerWholeL2Normalize, layerTotalMaxPool,
layerTotalAvgPool (``type`` 'custom'; properties type, name, precious)."""
from __future__ import annotations

import torch

from .base import Layer, add_epsilon, exporting, register_class
from .normalize import Normalize, channel_sumsq, fused_prenorm

EPS = 1e-12  # relja_l2normalize_col: x / (||x|| + 1e-12)


def matlab_flatten(x: torch.Tensor) -> torch.Tensor:
    """N x C x H x W -> N x (H*W*C) in MATLAB's ``reshape(x, [], N)`` order (h fastest, then w, c)."""
    return x.transpose(2, 3).reshape(x.shape[0], -1)


def _norm(x: torch.Tensor) -> torch.Tensor:
    return add_epsilon(torch.linalg.vector_norm(x, dim=1, keepdim=True), EPS)


class _WholeL2(torch.autograd.Function):
    """y = x / n per row, n = ||x|| + 1e-12, with layerWholeL2Normalize.backward_'s
    gradient dz/dx = dzdy / n - x (x^T dzdy) / n^3.  Saves x and the N norms; the
    backward's only x-sized tensor is its result."""

    @staticmethod
    def forward(ctx, x):
        n = _norm(x)
        ctx.save_for_backward(x, n)
        return x / n

    @staticmethod
    def backward(ctx, g):
        x, n = ctx.saved_tensors
        coef = (x * g).sum(1, keepdim=True).div_(n.pow(3))
        return torch.div(g, n).addcmul_(x, coef, value=-1)


def _normalized_whole_l2(x, kappa, alpha, beta):
    """:class:`_NormalizedWholeL2`'s forward as plain ops (for a tracer); the epsilons
    (kappa, 1e-12) through :func:`~matnet.layers.base.add_epsilon`."""
    sumsq = (x * x).sum(1, keepdim=True)
    r = add_epsilon(sumsq * alpha, kappa).pow(-beta)
    return x * (r / add_epsilon((r * r * sumsq).sum((1, 2, 3), keepdim=True).sqrt(), EPS))


class _NormalizedWholeL2(torch.autograd.Function):
    """The all-channel normalize (y = x r, r = q^-beta, q = kappa + alpha S, S = sum_c x_c^2
    per pixel) followed by _WholeL2 (z = y / n, n = ||y|| + 1e-12), in one pass each way:
    ||y||^2 = sum_pixels r^2 S, so y is never formed.  The backward composes the two
    layers' gradients (vl_nnnormalize's, then layerWholeL2Normalize.backward_'s n^-3):
    dz/dx = (r/n) g - c x per pixel, c = r^2 (y.g)/n^3 + 2 alpha beta (r/q) <g_y, x>,
    with y.g = sum_pixels r <x, g> and <g_y, x> = <x, g>/n - r S (y.g)/n^3."""

    @staticmethod
    def forward(ctx, x, kappa, alpha, beta):
        sumsq = channel_sumsq(x)                                        # S, N x 1 x H x W
        q = sumsq * alpha + kappa
        r = q.pow(-beta)
        n = (r * r * sumsq).sum((1, 2, 3), keepdim=True).sqrt_().add_(EPS)
        ctx.save_for_backward(x, r, q, sumsq, n)
        ctx.scale = 2.0 * alpha * beta
        return x * (r / n)

    @staticmethod
    def backward(ctx, g):
        x, r, q, sumsq, n = ctx.saved_tensors
        xg = (x * g).sum(1, keepdim=True)                               # <x, g> per pixel
        yg_n3 = (r * xg).sum((1, 2, 3), keepdim=True).div_(n.pow(3))      # (y.g) / n^3
        gyx = xg / n - r * sumsq * yg_n3                                # <g_y, x>
        coef = (r * r * yg_n3).addcmul_(r / q, gyx, value=ctx.scale)
        dx = torch.mul(g, r / n, out=torch.empty_like(x))              # in the layout of x
        return dx.addcmul_(x, coef, value=-1), None, None, None


class _Parameterless(Layer):
    type = "custom"

    def __init__(self, name: str | None = None, *, precious: bool = False, extra=None):
        super().__init__(self.default_name if name is None else name, precious=precious, extra=extra)

    @classmethod
    def from_struct(cls, s: dict):
        kw = cls.common_kwargs(s)
        return cls(s.get("name", cls.default_name), precious=kw["precious"], extra=kw["extra"])

    def to_struct(self) -> dict:
        """The MATLAB object's properties (type, name, precious)."""
        return {"type": self.type, "name": self.name, "precious": self.precious, **self.extra}


@register_class("layerWholeL2Normalize")
class layerWholeL2Normalize(_Parameterless):
    """L2-normalise each sample's whole output, relja_l2normalize_col (x / (||x|| + 1e-12)).
    Output N x (H*W*C) x 1 x 1 (MATLAB 1 x 1 x HWC x N) in MATLAB's column-major order."""

    default_name = "wholeL2"

    def forward(self, x: torch.Tensor, prenorm: Normalize | None = None) -> torch.Tensor:
        """This layer on x, or with ``prenorm`` (a normalize over all channels, NetVLAD's
        intra-normalisation) on prenorm(x) in one fused step (the same numbers)."""
        params = fused_prenorm(self, prenorm, x.shape[1])
        if params is not None:
            y = (_normalized_whole_l2 if exporting() else _NormalizedWholeL2.apply)(x, *params)
            return matlab_flatten(y).reshape(y.shape[0], -1, 1, 1)
        x = matlab_flatten(x)
        y = x / _norm(x) if exporting() else _WholeL2.apply(x)
        return y.reshape(y.shape[0], -1, 1, 1)


@register_class("layerTotalMaxPool")
class layerTotalMaxPool(_Parameterless):
    """Max over the whole H x W map per channel (vl_nnpool 'max' with pool [H W]) -> N x C x 1 x 1.
    The gradient goes to the first maximum in MATLAB's column-major order, as vl_nnpool's."""

    default_name = "maxTotal"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.transpose(2, 3).reshape(x.shape[0], x.shape[1], -1)
        idx = flat.argmax(2, keepdim=True)
        return flat.gather(2, idx).unsqueeze(3)


@register_class("layerTotalAvgPool")
class layerTotalAvgPool(_Parameterless):
    """Mean over the whole H x W map per channel (vl_nnpool 'avg' with pool [H W]) -> N x C x 1 x 1."""

    default_name = "avgTotal"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)
