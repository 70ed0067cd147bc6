"""``normalize`` / ``lrn``: MatConvNet's vl_nnnormalize (cross-channel LRN)."""
from __future__ import annotations

import numpy as np
import torch

from .base import Layer, register_type


@register_type("normalize", "lrn")
class Normalize(Layer):
    """``param`` = [N kappa alpha beta]:  y_t = x_t (kappa + alpha * sum_{q in Q(t)} x_q^2)^-beta,
    Q(t) = [t - floor((N-1)/2), t + ceil((N-1)/2)] clipped to the channels.

    N >= 2D sums over all channels: NetVLAD's preL2 and intra-normalisation use
    [2D, 1e-12, 1, 0.5], i.e. x / sqrt(1e-12 + ||x||^2).  MatConvNet's CPU build
    evaluates the power with a polynomial approximation (``fast_pow``, about 1e-4
    relative error); we compute it exactly, as its GPU build does.
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        m1 = (self.depth - 1) // 2
        m2 = self.depth - m1 - 1
        sq = x * x
        if m1 >= c - 1 and m2 >= c - 1:  # every window holds all channels
            s = sq.sum(1, keepdim=True)
        else:  # window sums from a float64 running sum: no cancellation trouble
            cs = torch.nn.functional.pad(sq.double().cumsum(1), (0, 0, 0, 0, 1, 0))
            t = torch.arange(c, device=x.device)
            hi = (t + m2).clamp(max=c - 1) + 1
            lo = (t - m1).clamp(min=0)
            s = (cs.index_select(1, hi) - cs.index_select(1, lo)).to(x.dtype)
        return x * (self.kappa + self.alpha * s).pow(-self.beta)
