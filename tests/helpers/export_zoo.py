"""A zoo of small MatConvNet-style networks, one per layer kind the engine runs and one
with all of them, built from the engine's own layer structs (MATLAB field names and
shapes) for the export tests.  Channels and images are tiny so that every network
exports in seconds; the VLAD assignments are sharp (large weights), so that on small
images some clusters receive no assignment at all.

``ZOO[name]()`` returns ``(net, dims)``: a SimpleNN in eval mode ending in
layerWholeL2Normalize, and the ``--dims`` to export with (None: all)."""
from __future__ import annotations

import numpy as np

from matnet import SimpleNN

TRACE_HW = (40, 48)                      # averageImage size: the traced (nominal) size
SIZES = [(1, 24, 30), (2, 37, 53), (2, 61, 45)]  # (N, H, W) compared, none the traced one


def conv(name, rng, h, w, cin, cout, stride=1, pad=0, dilate=1, bias=True, scale=1.0):
    std = scale * np.sqrt(2.0 / (h * w * cin))
    return {"name": name, "type": "conv",
            "weights": [(rng.standard_normal((h, w, cin, cout)) * std).astype(np.float32),
                        (rng.standard_normal((1, cout)) * 0.1).astype(np.float32) if bias
                        else np.zeros((0, 0), np.float32)],
            "stride": np.asarray(stride, np.float64).reshape(1, -1),
            "pad": np.asarray(pad, np.float64).reshape(1, -1),
            "dilate": np.asarray(dilate, np.float64).reshape(1, -1)}


def relu(name, leak=0.0):
    return {"name": name, "type": "relu", "leak": leak}


def pool(name, size, stride, pad, method):
    return {"name": name, "type": "pool", "method": method, "pool": np.asarray(size, np.float64).reshape(1, 2),
            "stride": np.asarray(stride, np.float64).reshape(1, 2), "pad": np.asarray(pad, np.float64).reshape(1, 4)}


def normalize(name, param):
    return {"name": name, "type": "normalize", "param": np.asarray(param, np.float64).reshape(1, 4)}


def custom(cls, name, weights=None):
    s = {"name": name, "type": "custom"}
    if weights is not None:
        s["weights"] = weights
    return (s, cls)


def head(rng, d, k=6, pre=True, v2=False, intra=True, wpca=None, sharp=40.0):
    """addLayers' NetVLAD head as structs: [preL2,] layerVLAD[v2], [intranorm,] postL2
    [, WPCA conv, finalL2].  ``sharp`` scales the assignment so that softmax is nearly
    hard (as a trained alpha makes it); the last two centres point away from the
    positive orthant, where relu features live, so they receive (almost) no assignment."""
    centres = rng.standard_normal((d, k)).astype(np.float32)
    centres[:, -2:] = -np.abs(centres[:, -2:])
    centres /= np.linalg.norm(centres, axis=0, keepdims=True)
    assign = (sharp * centres).reshape(1, 1, d, k).astype(np.float32)
    l2 = [2 * d, 1e-12, 1, 0.5]
    layers = [normalize("preL2", l2)] if pre else []
    if v2:
        bias = (-0.5 * sharp * np.ones((1, k))).astype(np.float32)
        layers.append(custom("layerVLADv2", "vlad:core", [assign, bias, (-centres).reshape(1, 1, d, k)]))
    else:
        layers.append(custom("layerVLAD", "vlad:core", [assign, (-centres).reshape(1, 1, d, k)]))
    if intra:
        layers.append(normalize("vlad:intranorm", l2))
    layers.append(custom("layerWholeL2Normalize", "postL2"))
    if wpca:
        layers += [conv("WPCA", rng, 1, 1, d * k, wpca, scale=0.5), custom("layerWholeL2Normalize", "finalL2")]
    return layers


def trunk(rng, cout=8):
    """conv 3x3 (pad 1) + relu: the plainest front for the head-kind networks."""
    return [conv("conv1", rng, 3, 3, 3, cout, pad=1), relu("relu1")]


def build(structs) -> SimpleNN:
    meta = {"normalization": {"averageImage": np.tile(np.float32([[[122, 116, 104]]]), TRACE_HW + (1,)),
                              "imageSize": np.float64([[TRACE_HW[0], TRACE_HW[1], 3]])}}
    return SimpleNN.from_structs(structs, meta).eval()


def _net(kind: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    if kind == "conv":  # strides, asymmetric pads, dilation, grouped, no bias
        s = [conv("conv1", rng, 3, 5, 3, 8, stride=[2, 1], pad=[1, 0, 2, 1], dilate=[1, 2]), relu("relu1"),
             conv("conv2", rng, 3, 3, 4, 8, stride=[1, 2], pad=[0, 2, 1, 0], dilate=[2, 1], bias=False),
             relu("relu2")]
        return s + head(rng, 8), None
    if kind == "maxpool":
        return trunk(rng) + [pool("pool1", [3, 2], [2, 1], [1, 0, 0, 1], "max")] + head(rng, 8), None
    if kind == "avgpool":
        return trunk(rng) + [pool("pool1", [3, 3], [2, 3], [0, 2, 1, 1], "avg")] + head(rng, 8), None
    if kind == "relu":  # leaky relu (the plain one is in every trunk)
        return [conv("conv1", rng, 3, 3, 3, 8, pad=1), relu("relu1", 0.1)] + head(rng, 8), None
    if kind == "dropout":
        return trunk(rng) + [{"name": "drop1", "type": "dropout", "rate": 0.5}] + head(rng, 8), None
    if kind == "lrn":  # windows smaller than the 8 channels, odd and even
        return trunk(rng) + [normalize("norm1", [5, 1, 2e-2, 0.75]), normalize("norm2", [4, 2, 1e-1, 0.5])] \
            + head(rng, 8), None
    if kind == "no_prel2":
        return trunk(rng) + head(rng, 8, pre=False), None
    if kind == "vladv2":
        return trunk(rng) + head(rng, 8, v2=True), None
    if kind == "no_intra":
        return trunk(rng) + head(rng, 8, intra=False), None
    if kind == "wpca":
        return trunk(rng) + head(rng, 8, wpca=12), None
    if kind == "dims":
        return trunk(rng) + head(rng, 8, wpca=12), 5
    if kind == "totalpool":  # addLayers' 'max' and 'avg' heads
        return trunk(rng) + [custom("layerTotalMaxPool", "maxTotal"), custom("layerWholeL2Normalize", "postL2")], None
    if kind == "softmax":
        return trunk(rng) + [{"name": "softmax", "type": "softmax"}] + head(rng, 8), None
    if kind == "all":
        s = [conv("conv1", rng, 3, 5, 3, 8, stride=[2, 1], pad=[1, 0, 2, 1], dilate=[1, 2]), relu("relu1", 0.05),
             pool("pool1", [3, 2], [1, 2], [1, 0, 0, 1], "max"), normalize("norm1", [5, 1, 2e-2, 0.75]),
             {"name": "drop1", "type": "dropout", "rate": 0.5},
             conv("conv2", rng, 3, 3, 4, 12, pad=[0, 2, 1, 0], dilate=[2, 1], bias=False), relu("relu2"),
             pool("pool2", [3, 3], [2, 1], [0, 2, 1, 1], "avg")]
        return s + head(rng, 12, v2=True, wpca=10), 7
    raise KeyError(kind)


KINDS = ("conv", "maxpool", "avgpool", "relu", "dropout", "lrn", "no_prel2", "vladv2", "no_intra",
         "wpca", "dims", "totalpool", "softmax", "all")


def zoo_net(kind: str, seed: int = 0):
    """(SimpleNN, dims) of the zoo network ``kind`` (one of :data:`KINDS`)."""
    structs, dims = _net(kind, seed)
    return build(structs), dims


def images(n, h, w, seed):
    """A batch 0..255: noise, then (n > 1) a flat image, where most clusters stay empty."""
    import torch
    x = torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 255
    if n > 1:
        x[1:] = 128.0
    return x
