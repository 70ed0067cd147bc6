"""A small base network in MatConvNet layout, the demo's stand-in for an ImageNet model.

conv1 5x5x3x16 (pad 2) - relu1 - pool1 (max 2x2/2) - conv2 3x3x16x32 (pad 1) - relu2 -
pool2 (max 2x2/2) - conv3 3x3x32x32 (pad 1) - relu3, deterministic He-normal
initialisation from ``seed``.  Saved like MatConvNet's pretrained files (variables
``layers`` and ``meta``) as ``matnet-tiny.mat`` so ``loadNet('tiny', 'conv3')`` finds it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from converters.matfile import savemat

TINY_FILE = "matnet-tiny.mat"


def _conv(name, rng, h, w, cin, cout, pad):
    std = np.sqrt(2.0 / (h * w * cin))
    return {"name": name, "type": "conv",
            "weights": [(rng.standard_normal((h, w, cin, cout)) * std).astype(np.float32),
                        np.zeros((1, cout), np.float32)],
            "stride": np.array([[1.0, 1.0]]), "pad": np.full((1, 4), float(pad)),
            "dilate": np.array([[1.0, 1.0]])}


def _relu(name):
    return {"name": name, "type": "relu"}


def _pool(name):
    return {"name": name, "type": "pool", "method": "max", "pool": np.array([[2.0, 2.0]]),
            "stride": np.array([[2.0, 2.0]]), "pad": np.zeros((1, 4))}


def tiny_net_structs(seed: int = 0) -> list[dict]:
    """The layer structs (MATLAB field names and shapes)."""
    rng = np.random.default_rng(seed)
    return [_conv("conv1", rng, 5, 5, 3, 16, 2), _relu("relu1"), _pool("pool1"),
            _conv("conv2", rng, 3, 3, 16, 32, 1), _relu("relu2"), _pool("pool2"),
            _conv("conv3", rng, 3, 3, 32, 32, 1), _relu("relu3")]


def save_tiny_net(folder, averageColour, imSize=(64, 80), seed: int = 0) -> Path:
    """Write ``<folder>/matnet-tiny.mat`` (``layers``, ``meta.normalization`` with an
    H x W x 3 ``averageImage`` filled with ``averageColour`` -- full size, so that
    relja_netOutputDim's default input goes through the pooling layers -- and
    ``imageSize`` [H W 3])."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"normalization": {
        "averageImage": np.tile(np.asarray(averageColour, np.float32).reshape(1, 1, 3), (imSize[0], imSize[1], 1)),
        "imageSize": np.array([[imSize[0], imSize[1], 3]], np.float64)}}
    out = folder / TINY_FILE
    savemat(out, {"layers": tiny_net_structs(seed), "meta": meta})
    return out
