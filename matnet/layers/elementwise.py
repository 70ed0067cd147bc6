"""Parameter-free element/channel-wise layers: ``relu``, ``dropout``, ``softmax``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Layer, register_type, scalar


@register_type("relu")
class ReLU(Layer):
    """vl_nnrelu: y = x for x > 0, leak * x otherwise (``leak`` default 0)."""

    type = "relu"

    def __init__(self, name, leak=0.0, **kw):
        super().__init__(name, **kw)
        self.leak = float(leak)

    @classmethod
    def from_struct(cls, s):
        return cls(s["name"], scalar(s.get("leak"), 0.0), **cls.common_kwargs(s, ("leak",)))

    def struct_fields(self):
        return {"leak": self.leak}

    def forward(self, x):
        return F.leaky_relu(x, self.leak) if self.leak else F.relu(x)


@register_type("dropout")
class Dropout(Layer):
    """vl_nndropout: identity in test mode (``net.eval()``); in training zeroes with
    probability ``rate`` and scales survivors by 1/(1-rate)."""

    type = "dropout"

    def __init__(self, name, rate=0.5, **kw):
        super().__init__(name, **kw)
        self.rate = float(rate)

    @classmethod
    def from_struct(cls, s):
        return cls(s["name"], scalar(s.get("rate"), 0.5), **cls.common_kwargs(s, ("rate",)))

    def struct_fields(self):
        return {"rate": self.rate}

    def forward(self, x):
        return F.dropout(x, self.rate, self.training) if self.rate else x


@register_type("softmax")
class Softmax(Layer):
    """vl_nnsoftmax: softmax over channels (MATLAB's third dimension) at every pixel."""

    type = "softmax"

    @classmethod
    def from_struct(cls, s):
        return cls(s["name"], **cls.common_kwargs(s))

    def forward(self, x):
        return torch.softmax(x, dim=1)
