"""``normalize`` / ``lrn``: MatConvNet's vl_nnnormalize (cross-channel LRN)."""
from __future__ import annotations

import numpy as np
import torch

from .base import Layer, add_epsilon, exporting, register_type


SUMSQ_BLOCK = 1 << 18  # elements of channel_sumsq's accumulator (1 MiB of float32: stays in the cache)
CHUNK = 1 << 22  # elements per piece of the CPU loops below (16 MiB of float32): few ops, small temporaries


def sample_chunks(x: torch.Tensor) -> int:
    """How many samples of ``x`` to process at a time: all on a GPU, pieces of about
    ``CHUNK`` elements on the CPU, where an x-sized temporary costs its page faults."""
    if x.device.type != "cpu":
        return max(1, x.shape[0])
    return max(1, CHUNK // max(1, x[0].numel()))


def channel_sumsq(x: torch.Tensor) -> torch.Tensor:
    """sum_c x_c^2 over dim 1 (N x 1 x H x W) without an x-sized temporary: the norm over
    the contiguous channels of a channels_last tensor, squared; for NCHW, where torch's
    strided norm is slow, the squares of ``rows`` channels at a time accumulated into one
    cache-sized N x rows x H x W buffer (``SUMSQ_BLOCK`` elements), summed at the end."""
    if x.is_contiguous(memory_format=torch.channels_last) or x.dim() != 4:
        return torch.linalg.vector_norm(x, dim=1, keepdim=True).square_()
    rows = min(x.shape[1], max(1, SUMSQ_BLOCK // max(1, x.shape[0] * x[0, 0].numel())))
    if x.device.type != "cpu" or rows == x.shape[1]:
        return (x * x).sum(1, keepdim=True)
    acc = x.new_zeros((x.shape[0], rows) + tuple(x.shape[2:]))
    for c in range(0, x.shape[1], rows):
        xs = x[:, c:c + rows]
        acc[:, :xs.shape[1]].addcmul_(xs, xs)
    return acc.sum(1, keepdim=True)


def fused_prenorm(layer: Layer, prenorm, c: int) -> tuple[float, float, float] | None:
    """(kappa, alpha, beta) of ``prenorm``, a normalize over all ``c`` channels that runs
    fused inside ``layer`` (SimpleNN's preL2 + VLAD and intranorm + postL2 steps), or None
    without one; any other layer is refused with an error naming both."""
    if prenorm is None:
        return None
    if not (isinstance(prenorm, Normalize) and prenorm.sums_all_channels(c)):
        raise layer.fail(f"cannot fuse layer '{getattr(prenorm, 'name', prenorm)}': only a "
                         f"normalize over all {c} channels runs inside it")
    return prenorm.kappa, prenorm.alpha, prenorm.beta


class _ChannelNorm(torch.autograd.Function):
    """vl_nnnormalize when every window holds all C channels (N >= 2C - 1):
    y = x q^-beta, q = kappa + alpha sum_c x_c^2 (kappa inside the power, as MatConvNet).
    Backward: dz/dx = r g - 2 alpha beta (r / q) <g, x>_c x with r = q^-beta.
    Saves x (which autograd holds for the layer below anyway) and two N x 1 x H x W
    maps, not the squares and powers an autograd graph of the formula keeps; the
    backward's only x-sized tensor is its result."""

    @staticmethod
    def forward(ctx, x, kappa, alpha, beta):
        q = channel_sumsq(x).mul_(alpha).add_(kappa)
        r = q.pow(-beta)
        ctx.save_for_backward(x, r, q)
        ctx.scale = -2.0 * alpha * beta
        return x * r

    @staticmethod
    def backward(ctx, g):
        x, r, q = ctx.saved_tensors
        dx = torch.empty_like(x)  # in the layout of x (preserve_format)
        b = sample_chunks(x)
        buf = torch.empty_like(x[:b])
        for xs, gs, rs, qs, dxs in zip(x.split(b), g.split(b), r.split(b), q.split(b), dx.split(b)):
            coef = torch.mul(gs, xs, out=buf[:len(xs)]).sum(1, keepdim=True)
            coef.mul_(rs).div_(qs).mul_(ctx.scale)
            torch.mul(gs, rs, out=dxs).addcmul_(xs, coef)
        return dx, None, None, None


@register_type("normalize", "lrn")
class Normalize(Layer):
    """``param`` = [N kappa alpha beta]:  y_t = x_t (kappa + alpha * sum_{q in Q(t)} x_q^2)^-beta,
    Q(t) = [t - floor((N-1)/2), t + ceil((N-1)/2)] clipped to the channels.

    N >= 2D sums over all channels: NetVLAD's preL2 and intra-normalisation use
    [2D, 1e-12, 1, 0.5], i.e. x / sqrt(1e-12 + ||x||^2); that case runs as one fused
    function with its own backward.  MatConvNet's CPU build evaluates the power with a
    polynomial approximation (``fast_pow``, about 1e-4 relative error); we compute it
    exactly, as its GPU build does.
    """

    type = "normalize"

    def __init__(self, name, param=(5, 1, 0.0001 / 5, 0.75), **kw):
        super().__init__(name, **kw)
        p = np.asarray(param, dtype=np.float64).reshape(-1)
        if p.size != 4 or p[0] < 1:
            raise self.fail(f"param must be [N kappa alpha beta] with N >= 1, got {p.tolist()}")
        self.depth = int(p[0])
        self.kappa, self.alpha, self.beta = float(p[1]), float(p[2]), float(p[3])

    @classmethod
    def from_struct(cls, s):
        kw = cls.common_kwargs(s, ("param",))
        return cls(s["name"], s.get("param", (5, 1, 0.0001 / 5, 0.75)), **kw)

    def struct_fields(self):
        return {"param": np.asarray([self.depth, self.kappa, self.alpha, self.beta]).reshape(1, 4)}

    def sums_all_channels(self, c: int) -> bool:
        """Whether every window of this layer holds all ``c`` channels (N >= 2C - 1)."""
        m1 = (self.depth - 1) // 2
        return m1 >= c - 1 and self.depth - m1 - 1 >= c - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        m1 = (self.depth - 1) // 2
        m2 = self.depth - m1 - 1
        if self.sums_all_channels(c):
            if exporting():  # the same forward, as plain ops a tracer can record (kappa kept)
                return x * add_epsilon(self.alpha * (x * x).sum(1, keepdim=True), self.kappa).pow(-self.beta)
            return _ChannelNorm.apply(x, self.kappa, self.alpha, self.beta)
        # window sums from a float64 running sum: no cancellation trouble
        cs = torch.nn.functional.pad((x * x).double().cumsum(1), (0, 0, 0, 0, 1, 0))
        t = torch.arange(c, device=x.device)
        hi = (t + m2).clamp(max=c - 1) + 1
        lo = (t - m1).clamp(min=0)
        s = (cs.index_select(1, hi) - cs.index_select(1, lo)).to(x.dtype)
        return x * add_epsilon(self.alpha * s, self.kappa).pow(-self.beta)
