"""MatConvNet's SimpleNN network: an ordered ``layers`` list plus a ``meta`` dict."""
from __future__ import annotations

import copy
import re

import torch
from torch import nn

from .layers import Layer, layer_from_struct, layerVLAD, layerVLADv2, layerWholeL2Normalize
from .layers.normalize import Normalize


class SimpleNN(nn.Module):
    """``net.layers`` (a list of :class:`~matnet.layers.Layer`) and ``net.meta``
    (``normalization.averageImage``, ``netID``, ``sessionID``, ``epoch``, ...).

    ``net(x)`` runs every layer on an N x C x H x W float32 tensor (MATLAB's
    H x W x C x N, see :mod:`matnet.layout`).  ``net.eval()`` is vl_simplenn's
    'test' mode (dropout off).
    """

    def __init__(self, layers=(), meta: dict | None = None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        for i, l in enumerate(self.layers):
            if not isinstance(l, Layer):
                raise TypeError(f"net.layers[{i}] is a {type(l).__name__}, not a matnet Layer")
        self.meta = copy.deepcopy(meta) if meta is not None else {}

    @classmethod
    def from_structs(cls, layer_structs, meta=None) -> "SimpleNN":
        """Build from MATLAB layer structs (dicts); ``(dict, class_name)`` pairs for classdef layers."""
        layers = []
        for i, s in enumerate(layer_structs):
            if isinstance(s, tuple):
                layers.append(layer_from_struct(s[0], class_name=s[1], index=i))
            else:
                layers.append(layer_from_struct(s, index=i))
        return cls(layers, meta)

    def forward(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Layers ``start`` .. ``stop`` - 1 (all by default) in order; an all-channel
        normalize followed by a VLAD layer (preL2) or by layerWholeL2Normalize (NetVLAD's
        intra-normalisation and postL2) runs as one fused step (the same function without
        the normalised features in memory; :func:`vl_simplenn` runs them one by one)."""
        layers = self.layers[:len(self.layers) if stop is None else stop]
        i = start
        while i < len(layers):
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            fuse = (isinstance(nxt, (layerVLAD, layerVLADv2, layerWholeL2Normalize))
                    and isinstance(layers[i], Normalize) and layers[i].sums_all_channels(x.shape[1]))
            try:
                x = nxt(x, prenorm=layers[i]) if fuse else layers[i](x)
            except Exception as e:
                _note_layer(e, i + fuse, nxt if fuse else layers[i])
                raise
            i += 1 + fuse
        return x

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")


def _note_layer(e: BaseException, i: int, layer: Layer) -> None:
    """Add to ``e`` a note naming the layer it came from (the type is kept)."""
    e.add_note(f"in layer {i} '{layer.name}' ({layer.class_name or layer.type}) of the network")


_DEVICE_FAILURE = re.compile(r"CUDA|cuDNN|CUDNN|CUBLAS|cuBLAS|NCCL|device-side assert|out of memory")


def is_device_failure(e: BaseException) -> bool:
    """Whether ``e`` is the GPU failing (out of memory, a CUDA, cuDNN or cuBLAS error)
    rather than the network refusing its input: such errors are re-raised as they are,
    never reported as a problem of the images."""
    kinds = (torch.cuda.OutOfMemoryError, getattr(torch, "AcceleratorError", torch.cuda.OutOfMemoryError))
    return isinstance(e, kinds) or bool(_DEVICE_FAILURE.search(str(e)))


def failure_text(e: BaseException) -> str:
    """The message of ``e`` with its notes (which layer failed), on one line."""
    return "; ".join([str(e), *getattr(e, "__notes__", ())])


def vl_simplenn(net: SimpleNN, x: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's output as vl_simplenn's ``res``: ``res[0]`` is the input and
    ``res[i]`` (0-based list index i) the output of layer i (MATLAB's ``res(i+1).x``)."""
    res = [x]
    for i, layer in enumerate(net.layers):
        try:
            res.append(layer(res[-1]))
        except Exception as e:
            _note_layer(e, i, layer)
            raise
    return res
