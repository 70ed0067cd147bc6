"""Shared test helpers: EXPECTED_CLASSES, check_net, released_net (from test_convert_network.py)."""
import numpy as np
import torch
from converters.matfile import MatObject


D, K, P = 6, 3, 5


def _conv(rng, name, h, cin, cout, pad=1, old=False):
    w = rng.standard_normal((h, h, cin, cout)).astype(np.float32)
    b = rng.standard_normal((1, cout)).astype(np.float32)
    s = {"name": name, "type": "conv"}
    if old:  # MatConvNet < beta17: filters/biases
        s.update(filters=w, biases=b)
    else:
        s.update(weights=[w, b], size=np.array([[h, h, cin, cout]], float))
    s.update(pad=np.array([[pad]], float), stride=np.array([[1.0]]), precious=np.array([[False]]),
             learningRate=np.array([[1, 2]], np.float32), weightDecay=np.array([[1, 0]], np.float32),
             opts=[])
    return s


def _relu(name):
    return {"name": name, "type": "relu", "leak": np.array([[0.0]]), "precious": np.array([[False]])}


def _pool(name):
    return {"name": name, "type": "pool", "method": "max", "pool": np.array([[2.0, 2.0]]),
            "stride": np.array([[2.0]]), "pad": np.array([[0.0]]), "precious": np.array([[False]])}


def _norm(name, d):
    return {"name": name, "type": "normalize", "param": np.array([[2 * d, 1e-12, 1, 0.5]]),
            "precious": np.array([[False]])}


def _vlad_props(rng):
    return {"type": "custom", "name": "vlad:core", "K": np.array([[float(K)]]), "D": np.array([[float(D)]]),
            "vladDim": np.array([[float(K * D)]]),
            "weights": [rng.standard_normal((1, 1, D, K)).astype(np.float32),
                        rng.standard_normal((1, K)).astype(np.float32),
                        rng.standard_normal((1, 1, D, K)).astype(np.float32)],
            "momentum": np.zeros((0, 0)), "learningRate": np.array([[1, 1, 1]], np.float32),
            "weightDecay": np.array([[1, 0, 1]], np.float32), "precious": np.array([[False]])}


def _l2(name):
    return MatObject("layerWholeL2Normalize", {"type": "custom", "name": name, "precious": np.array([[False]])})


def released_net(seed=0, struct_variant=False):
    """A tiny network shaped like vd16_pitts30k_conv5_3_vlad_preL2_intra_white.mat's ``net``:
    trunk cropped at the last conv with relu/pool swapped, preL2, layerVLADv2 (saveobj),
    intranorm, postL2, WPCA conv, finalL2, meta."""
    rng = np.random.default_rng(seed)
    layers = [_conv(rng, "conv1_1", 3, 3, 4), _relu("relu1_1"), _conv(rng, "conv1_2", 3, 4, 4),
              _pool("pool1"), _relu("relu1_2"), _conv(rng, "conv2_1", 3, 4, 5), _relu("relu2_1"),
              _conv(rng, "conv2_2", 3, 5, D), _norm("preL2", D),
              MatObject("layerVLADv2", _vlad_props(rng), saveobj=True), _norm("vlad:intranorm", D),
              _l2("postL2"), _conv(rng, "WPCA", 1, K * D, P, pad=0), _l2("finalL2")]
    if struct_variant:
        layers = [dict(x.props) if isinstance(x, MatObject) else x for x in layers]
    meta = {"normalization": {"averageImage": rng.standard_normal((1, 1, 3)).astype(np.float32),
                              "imageSize": np.array([[224.0, 224, 3]]), "interpolation": "bilinear"},
            "netID": "vd16", "sessionID": "vd16_pitts30k_conv5_3_vlad_preL2_intra_white",
            "epoch": np.array([[30.0]])}
    return {"layers": layers, "meta": meta}


EXPECTED_CLASSES = ["Conv", "ReLU", "Conv", "Pool", "ReLU", "Conv", "ReLU", "Conv", "Normalize",
                    "layerVLADv2", "Normalize", "layerWholeL2Normalize", "Conv", "layerWholeL2Normalize"]


def _weights_of(item):
    s = item.props if isinstance(item, MatObject) else item
    return s.get("weights", [s["filters"], s["biases"]] if "filters" in s else [])


def check_net(net, source):
    assert [type(l).__name__ for l in net.layers] == EXPECTED_CLASSES
    assert [l.name for l in net.layers] == [(x.props if isinstance(x, MatObject) else x)["name"]
                                            for x in source["layers"]]
    for layer, item in zip(net.layers, source["layers"]):
        ws = _weights_of(item)
        assert len(layer.weights) == len(ws), layer.name
        for w, ref in zip(layer.weights, ws):
            got = w.detach().numpy()
            assert got.shape == ref.shape and got.dtype == np.float32
            assert np.array_equal(got, ref), layer.name  # bit for bit
    avg = net.meta["normalization"]["averageImage"]
    assert avg.shape == (1, 1, 3)
    assert np.array_equal(avg, source["meta"]["normalization"]["averageImage"])
    x = torch.randn(2, 3, 12, 10)
    y = net.eval()(x)
    assert y.shape == (2, P, 1, 1)
    torch.testing.assert_close(y.reshape(2, -1).norm(dim=1), torch.ones(2))
