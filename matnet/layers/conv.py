"""``conv``: MatConvNet's vl_nnconv (cross-correlation, no kernel flip)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..layout import conv_filters_to_torch, matlab_shape
from .base import Layer, LayerError, as_list, pad4, pair, register_type, require


@register_type("conv")
class Conv(Layer):
    """weights = [filters H x W x Cin x Cout, biases Cout (or empty)].

    ``stride`` [sy sx], ``pad`` [top bottom left right], ``dilate`` [dy dx].  When the
    input has G*Cin channels the filters are applied in G groups (AlexNet/caffe-ref),
    as vl_nnconv does.  Output H' = floor((H + pt + pb - dy*(fh-1) - 1)/sy) + 1.
    """

    type = "conv"

    def __init__(self, name, weights, stride=1, pad=0, dilate=1, **kw):
        super().__init__(name, weights, **kw)
        if len(self.weights) not in (1, 2) or self.weights[0].dim() != 4:
            raise self.fail("weights must be {filters HxWxCinxCout, biases}")
        if len(self.weights) == 2 and self.weights[1].numel() not in (0, self.weights[0].shape[3]):
            raise self.fail(f"{self.weights[1].numel()} biases for {self.weights[0].shape[3]} filters")
        self.stride = pair(stride, 1)
        self.pad = pad4(pad)
        self.dilate = pair(dilate, 1)

    @classmethod
    def from_struct(cls, s):
        if "weights" in s:
            ws = as_list(s["weights"])
        elif "filters" in s:  # MatConvNet < beta17 field layout
            ws = [s["filters"], s.get("biases", np.zeros((0, 0), np.float32))]
        else:
            require(s, "weights")
        if not ws:
            raise LayerError(f"layer '{s['name']}' (conv): empty 'weights'")
        ws = [matlab_shape(ws[0], 4)] + [w if isinstance(w, torch.Tensor) else np.asarray(w) for w in ws[1:]]
        return cls(s["name"], ws, stride=s.get("stride"), pad=s.get("pad"), dilate=s.get("dilate"),
                   **cls.common_kwargs(s, ("stride", "pad", "dilate", "filters", "biases")))

    def struct_fields(self):
        return {"stride": np.asarray(self.stride, np.float64).reshape(1, 2),
                "pad": np.asarray(self.pad, np.float64).reshape(1, 4),
                "dilate": np.asarray(self.dilate, np.float64).reshape(1, 2)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = conv_filters_to_torch(self.weights[0])
        cin, cout = w.shape[1], w.shape[0]
        if x.dim() != 4 or x.shape[1] % cin:
            raise self.fail(f"input has {x.shape[1] if x.dim() == 4 else tuple(x.shape)} channels, "
                            f"filters expect {cin} (or a multiple of it for grouped convolution)")
        groups = x.shape[1] // cin
        if cout % groups:
            raise self.fail(f"{cout} filters cannot be split into {groups} groups")
        b = self.weights[1].reshape(-1) if len(self.weights) > 1 and self.weights[1].numel() else None
        if w.shape[2:] == (1, 1) and groups == 1 and self.stride == (1, 1) and not any(self.pad):
            # 1x1 filters (WPCA, projections): one matmul on the MatConvNet-shaped weights,
            # instead of conv2d re-laying out a possibly 512 MB filter bank on every call
            y = torch.matmul(x.permute(0, 2, 3, 1), self.weights[0].reshape(cin, cout))
            return (y if b is None else y + b).permute(0, 3, 1, 2)
        t, bo, l, r = self.pad
        if t == bo and l == r:
            padding = (t, l)
        else:
            x, padding = F.pad(x, (l, r, t, bo)), 0
        return F.conv2d(x, w, b, self.stride, padding, self.dilate, groups)
