"""Shared test helpers: OUT, released_format_net (from test_reference_harness.py)."""
import numpy as np
from matnet import SimpleNN, layer_from_struct
from matnet.layers import layerVLAD, layerWholeL2Normalize


D, K, OUT = 8, 4, 12


rng = np.random.default_rng(7)


def released_format_net() -> SimpleNN:
    """conv/pool/relu trunk (relu and max-pool swapped), preL2, layerVLAD, intranorm,
    postL2, WPCA conv, finalL2: the layer list of the released networks, tiny."""
    structs = [
        dict(name="conv1", type="conv", weights=[rng.standard_normal((3, 3, 3, 6)).astype(np.float32) * 0.05,
                                                 np.zeros((1, 6), np.float32)], stride=[1, 1], pad=[1, 1, 1, 1]),
        dict(name="pool1", type="pool", method="max", pool=[2, 2], stride=[2, 2], pad=[0, 0, 0, 0]),
        dict(name="relu1", type="relu"),
        dict(name="conv5_3", type="conv", weights=[rng.standard_normal((3, 3, 6, D)).astype(np.float32) * 0.1,
                                                   rng.standard_normal((1, D)).astype(np.float32)],
             stride=[1, 1], pad=[1, 1, 1, 1]),
        dict(name="preL2", type="normalize", param=[2 * D, 1e-12, 1, 0.5]),
    ]
    layers = [layer_from_struct(s) for s in structs]
    centres = rng.standard_normal((D, K)).astype(np.float32)
    vlad = layerVLAD("vlad:core")
    vlad.constructor([centres * 5.0, centres])
    layers += [vlad,
               layer_from_struct(dict(name="vlad:intranorm", type="normalize", param=[2 * D, 1e-12, 1, 0.5])),
               layerWholeL2Normalize("vlad:l2"),
               layer_from_struct(dict(name="WPCA", type="conv",
                                      weights=[rng.standard_normal((1, 1, D * K, OUT)).astype(np.float32),
                                               rng.standard_normal((OUT, 1)).astype(np.float32)])),
               layerWholeL2Normalize("WPCA:l2")]
    return SimpleNN(layers, meta={"normalization": {"averageImage": np.array([[[120.0, 110.0, 100.0]]], np.float32)},
                                  "netID": "tiny", "sessionID": "tiny_test", "epoch": 0})
