"""Network helpers NetVLAD uses (relja_matlab/matconvnet and netPrepareFor*.m).

Layer positions are 0-based Python indices, except ``backPropToLayer`` which is a
trainWeakly option and keeps MATLAB's 1-based meaning (1 = the first layer).
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from .simplenn import SimpleNN


def layerNames(net: SimpleNN) -> list[str]:
    """relja_layerNames: the layers' names in order."""
    return [l.name for l in net.layers]


def layerTypes(net: SimpleNN) -> list[str]:
    """relja_layerTypes: the layers' MatConvNet types ('custom' for classdef layers)."""
    return [l.type for l in net.layers]


def whichLayer(net: SimpleNN, layerName: str) -> int:
    """relja_whichLayer: 0-based index of the one layer called ``layerName``."""
    hits = [i for i, n in enumerate(layerNames(net)) if n == layerName]
    if len(hits) != 1:
        raise ValueError(f"whichLayer: {len(hits)} layers are named '{layerName}' (expected exactly 1); "
                         f"layers: {', '.join(layerNames(net))}")
    return hits[0]


def cropToLayer(net: SimpleNN, layerName: str) -> SimpleNN:
    """relja_cropToLayer: a copy of ``net`` keeping layers up to and including ``layerName``."""
    i = whichLayer(net, layerName)
    return SimpleNN([copy.deepcopy(l) for l in net.layers[: i + 1]], net.meta)


def swapLayersForEfficiency(net: SimpleNN) -> SimpleNN:
    """relja_swapLayersForEfficiency: every relu directly followed by a max pool is
    swapped with it (max and relu commute; pooling first makes the relu cheaper).
    Scans left to right and skips past a swapped pair.  Returns a new network."""
    layers = list(net.layers)
    i = 0
    while i < len(layers) - 1:
        a, b = layers[i], layers[i + 1]
        if a.type == "relu" and b.type == "pool" and getattr(b, "method", None) == "max":
            layers[i], layers[i + 1] = b, a
            i += 2
        else:
            i += 1
    return SimpleNN([copy.deepcopy(l) for l in layers], net.meta)


def netOutputDim(net: SimpleNN, imDim=None) -> tuple[int, tuple[int, ...]]:
    """relja_netOutputDim: (number of output values, MATLAB size H x W x C of the output)
    for one image of MATLAB size ``imDim`` = [H W C].  Default: the size of
    ``meta.normalization.averageImage``, as MATLAB; where that is a 1x1xC mean (newer
    MatConvNet models) and ``meta.normalization.imageSize`` exists, that size instead
    (MATLAB would fail in the first pooling layer)."""
    if imDim is None:
        norm = net.meta.get("normalization", {})
        avg = np.asarray(norm["averageImage"], dtype=np.float32)
        imDim = avg.shape + (1,) * (3 - avg.ndim)
        if imDim[:2] == (1, 1) and "imageSize" in norm:
            imDim = tuple(int(v) for v in np.asarray(norm["imageSize"]).reshape(-1)[:2]) + (imDim[2],)
    h, w, c = (int(v) for v in imDim)
    p = next(net.parameters(), None)
    x = torch.zeros((1, c, h, w), dtype=torch.float32, device=p.device if p is not None else "cpu")
    with torch.no_grad():
        y = net(x)
    return y.numel(), (y.shape[2], y.shape[3], y.shape[1])


def netPrepareForTest(net: SimpleNN, removeDropout: bool = False, removeExtras: bool = False) -> SimpleNN:
    """netPrepareForTest: clear ``precious``; ``removeExtras`` drops momentum;
    ``removeDropout`` deletes dropout layers.  Puts the net in eval mode."""
    for l in net.layers:
        l.precious = False
        if removeExtras:
            l.momentum = None
    if removeDropout:
        net.layers = torch.nn.ModuleList([l for l in net.layers if l.type != "dropout"])
    return net.eval()


def netPrepareForTrain(net: SimpleNN, backPropToLayer: int = 1) -> SimpleNN:
    """netPrepareForTrain: layers from ``backPropToLayer`` (1-based, as MATLAB) on get
    zero momentum per weight and 1.0 learningRate/weightDecay multipliers where
    missing; ``precious`` is set on layers >= backPropToLayer-1 not followed by a relu
    (MATLAB's memory rule; kept for fidelity, autograd decides what it keeps)."""
    n = len(net.layers)
    for i1, l in enumerate(net.layers, start=1):
        if i1 >= backPropToLayer and len(l.weights):
            l.momentum = [torch.zeros_like(w, requires_grad=False).detach() for w in l.weights]
            if not l.learningRate:
                l.learningRate = [1.0] * len(l.weights)
            if not l.weightDecay:
                l.weightDecay = [1.0] * len(l.weights)
        l.precious = i1 >= backPropToLayer - 1 and i1 < n and net.layers[i1].type != "relu"
    return net.train()


def size_free_problem(net: SimpleNN, channels: int = 3) -> tuple[int, str] | None:
    """The first layer that cannot run at *any* image size, as (0-based index, reason),
    or None.  Not in MATLAB (where such a network fails inside vl_simplenn).

    Follows the channel count (and, once a layer fixes it, the spatial size) from an
    input of ``channels`` channels without running anything: a convolution whose
    filters do not divide the channels (or whose filters do not split into the groups),
    a VLAD layer on the wrong number of channels, a VLAD layer without weights, a WPCA
    (1x1 conv after layerWholeL2Normalize) whose input size is not the descriptor's,
    a filter or pool larger than a fixed-size input (after a VLAD layer or a total
    pool).  Where the channels depend on the image size (layerWholeL2Normalize on a
    conv map) or a layer type is unknown here, the rest is not checked; a size below
    the receptive field is not a problem here (it shows when the network runs)."""
    from .layers import (Conv, Dropout, Normalize, Pool, ReLU, Softmax, layerTotalAvgPool,
                         layerTotalMaxPool, layerVLAD, layerVLADv2, layerWholeL2Normalize)
    c, h, w = channels, None, None  # None: depends on the image size

    def out_size(n, k, lo, hi, stride, dilate=1):
        return None if n is None else (n + lo + hi - dilate * (k - 1) - 1) // stride + 1

    for i, layer in enumerate(net.layers):
        if isinstance(layer, Conv):
            fh, fw, cin, cout = (int(v) for v in layer.weights[0].shape)
            if c is not None:
                if c % cin:
                    what = "a WPCA/projection layer: its input has" if (fh, fw) == (1, 1) and h == 1 and w == 1 \
                        else "input has"
                    return i, (f"{what} {c} channels, filters expect {cin}"
                               + ("" if "WPCA" in what else " (or a multiple of it for grouped convolution)"))
                if cout % (c // cin):
                    return i, f"{cout} filters cannot be split into {c // cin} groups of {cin} input channels"
            t, b, l, r = layer.pad
            h, w = (out_size(h, fh, t, b, layer.stride[0], layer.dilate[0]),
                    out_size(w, fw, l, r, layer.stride[1], layer.dilate[1]))
            if (h is not None and h < 1) or (w is not None and w < 1):
                return i, f"{fh}x{fw} filters are larger than its fixed-size input"
            c = cout
        elif isinstance(layer, Pool):
            t, b, l, r = layer.pad
            h, w = out_size(h, layer.pool[0], t, b, layer.stride[0]), out_size(w, layer.pool[1], l, r, layer.stride[1])
            if (h is not None and h < 1) or (w is not None and w < 1):
                return i, f"pool {layer.pool[0]}x{layer.pool[1]} is larger than its fixed-size input"
        elif isinstance(layer, (layerVLAD, layerVLADv2)):
            if not len(layer.weights):
                return i, "no weights"
            if c is not None and c != layer.D:
                return i, f"input has {c} channels, the layer has D={layer.D}"
            c, h, w = layer.D, 1, layer.K
        elif isinstance(layer, (layerTotalMaxPool, layerTotalAvgPool)):
            h = w = 1
        elif isinstance(layer, layerWholeL2Normalize):
            c = None if None in (c, h, w) else c * h * w
            h = w = 1
        elif not isinstance(layer, (ReLU, Dropout, Softmax, Normalize)):
            return None  # a layer this check does not know: stop here
    return None
