"""Numeric precision of a network's forward pass (an option of matnet, not in MATLAB).

``exact`` (the default): float32 everywhere with TF32 off on the GPU, MatConvNet's numbers.
``fast``: the trunk (every layer before the NetVLAD/pooling head) under bfloat16
autocast -- its convolutions run in bf16 -- and the head (preL2, layerVLAD, the
normalisations, the PCA/whitening convolution) in float32 on the trunk's output cast
back to float32; TF32 is allowed for float32 matmuls on the GPU.  CPUs run bf16
autocast too (fast where they have bf16 instructions).  The trunk's output stays within
cosine 0.99997 of exact; NetVLAD's residuals x - c amplify that error most where the
features sit on the centres (descriptor cosine 0.998 at worst, >= 0.9997 otherwise; the
README has the measurements).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from .layers import (Normalize, layerTotalAvgPool, layerTotalMaxPool, layerVLAD, layerVLADv2,
                     layerWholeL2Normalize)

PRECISIONS = ("exact", "fast")
_HEAD = (layerVLAD, layerVLADv2, layerTotalMaxPool, layerTotalAvgPool, layerWholeL2Normalize)


def check_precision(precision: str, what: str = "precision") -> str:
    """``precision`` if it is 'exact' or 'fast'; else a ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"{what} must be 'exact' or 'fast', got {precision!r}")
    return precision


def head_start(net) -> int:
    """Index of the head's first layer: the first NetVLAD/pooling/whole-L2 layer, or the
    normalize (preL2) just before it; len(net.layers) for a network without a head."""
    for i, layer in enumerate(net.layers):
        if isinstance(layer, _HEAD):
            return i - 1 if i and isinstance(net.layers[i - 1], Normalize) else i
    return len(net.layers)


def _new_api():
    """torch's per-backend fp32_precision settings (torch >= 2.9) as (object, attribute)
    pairs for cuBLAS matmuls and cuDNN convolutions, or None on an older torch."""
    try:
        pairs = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
        for obj in pairs:
            getattr(obj, "fp32_precision")
        return pairs
    except (AttributeError, RuntimeError):
        return None


def _resolved(obj, parents) -> str:
    """An fp32_precision setting with 'none' inherited from the parents (cuDNN's, then
    torch.backends'); 'none' at the top means IEEE float32."""
    v = obj.fp32_precision
    for p in parents:
        if v != "none":
            break
        v = getattr(p, "fp32_precision", "none")
    return v


def tf32_state() -> dict:
    """Whether TF32 is allowed now for float32 matmuls (cuBLAS) and convolutions
    (cuDNN): ``{'matmul': bool, 'conv': bool}``, read through torch's newer
    fp32_precision settings where they exist (reading the older ``allow_tf32`` flags
    raises once anything used the newer ones inconsistently)."""
    pairs = _new_api()
    if pairs is not None:
        mm, conv = pairs
        return {"matmul": _resolved(mm, (torch.backends,)) == "tf32",
                "conv": _resolved(conv, (torch.backends.cudnn, torch.backends)) == "tf32"}
    return {"matmul": bool(torch.backends.cuda.matmul.allow_tf32), "conv": bool(torch.backends.cudnn.allow_tf32)}


@contextmanager
def tf32(allowed: bool):
    """TF32 for float32 matmuls and convolutions on the GPU on or off; restored afterwards.
    Through torch's fp32_precision settings ('tf32' / 'ieee') where they exist: the
    older ``allow_tf32`` flags cannot be read once a program or library has used those
    (torch raises a RuntimeError), and writing them would make the newer ones unreadable
    for the caller; the old values are put back either way."""
    pairs = _new_api()
    if pairs is not None:
        old = [obj.fp32_precision for obj in pairs]
        for obj in pairs:
            obj.fp32_precision = "tf32" if allowed else "ieee"
        try:
            yield
        finally:
            for obj, v in zip(pairs, old):
                obj.fp32_precision = v
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def forward(net, x: torch.Tensor, precision: str = "exact") -> torch.Tensor:
    """``net(x)`` in ``precision``; the output is float32 either way."""
    if check_precision(precision) == "exact":
        with tf32(False):
            return net(x)
    h = head_start(net)
    with tf32(True):
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            y = net(x, stop=h)
        return net(y.float(), start=h)
