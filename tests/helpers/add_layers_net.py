"""Shared test helpers: OPTS, tiny_net (from test_add_layers.py)."""
import numpy as np
import torch
from matnet.layers.conv import Conv
from matnet.layers.elementwise import ReLU
from matnet.simplenn import SimpleNN


D = 6


def tiny_net(d=D):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 3, 3, d, generator=g).numpy()
    layers = [Conv("conv1", [w, np.zeros(d, np.float32)], pad=1), ReLU("relu1")]
    meta = {"normalization": {"averageImage": np.full((1, 1, 3), 100, np.float32)},
            "sessionID": "tinynet", "netID": "tiny"}
    return SimpleNN(layers, meta)


OPTS = dict(netID="tiny", layerName="relu1", useGPU=False)
