"""``pool``: MatConvNet's vl_nnpool, max or avg, with asymmetric padding."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .base import Layer, pad4, pair, register_type, require


@register_type("pool")
class Pool(Layer):
    """``pool`` [ph pw], ``stride`` [sy sx], ``pad`` [top bottom left right], ``method``.

    As vl_nnpool: output H' = floor((H + pt + pb - ph)/sy) + 1; padding never enters
    a max, and an average divides by the number of *image* pixels under the window
    (the window clipped to the image), not by ph*pw.
    """

    type = "pool"

    def __init__(self, name, pool, stride=1, pad=0, method="max", **kw):
        super().__init__(name, **kw)
        self.pool = pair(pool, 1)
        self.stride = pair(stride, 1)
        self.pad = pad4(pad)
        if method not in ("max", "avg"):
            raise self.fail(f"unknown pooling method '{method}' (max or avg)")
        self.method = method
        t, b, l, r = self.pad
        if max(t, b) >= self.pool[0] or max(l, r) >= self.pool[1]:
            raise self.fail(f"padding {list(self.pad)} must be smaller than the pool size {list(self.pool)}")

    @classmethod
    def from_struct(cls, s):
        method = s.get("method", "max")
        return cls(s["name"], require(s, "pool"), stride=s.get("stride"), pad=s.get("pad"),
                   method=method, **cls.common_kwargs(s, ("pool", "stride", "pad", "method")))

    def struct_fields(self):
        return {"method": self.method,
                "pool": np.asarray(self.pool, np.float64).reshape(1, 2),
                "stride": np.asarray(self.stride, np.float64).reshape(1, 2),
                "pad": np.asarray(self.pad, np.float64).reshape(1, 4)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b, l, r = self.pad
        ph, pw = self.pool
        if x.shape[2] + t + b < ph or x.shape[3] + l + r < pw:
            raise self.fail(f"pool {ph}x{pw} is larger than the padded input "
                            f"{x.shape[2] + t + b}x{x.shape[3] + l + r}")
        if self.method == "max":
            if any(self.pad):
                x = F.pad(x, (l, r, t, b), value=float("-inf"))
            return F.max_pool2d(x, self.pool, self.stride)
        if not any(self.pad):
            return F.avg_pool2d(x, self.pool, self.stride)
        sums = F.avg_pool2d(F.pad(x, (l, r, t, b)), self.pool, self.stride, divisor_override=1)
        inside = F.pad(x.new_ones((1, 1) + x.shape[2:]), (l, r, t, b))
        counts = F.avg_pool2d(inside, self.pool, self.stride, divisor_override=1)
        return sums / counts
