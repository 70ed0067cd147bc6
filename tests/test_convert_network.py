"""converters.network: released-format NetVLAD networks, MatConvNet models, checkpoints."""
import h5py
import numpy as np
import pytest
import torch

from converters.matfile import MatFileError, MatObject, loadmat, savemat
from converters.network import load_net, save_net

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


def _check_net(net, source):
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


@pytest.mark.parametrize("fmt", ["7.3", "5"])
@pytest.mark.parametrize("struct_variant", [False, True])
def test_load_released_format(tmp_path, fmt, struct_variant):
    src = released_net(struct_variant=struct_variant)
    f = savemat(tmp_path / "vd16_tiny.mat", {"net": src}, format=fmt)
    net = load_net(f)
    _check_net(net, src)
    assert net.meta["netID"] == "vd16" and net.meta["epoch"][0, 0] == 30
    assert net.layers[8].depth == 2 * D


def test_object_and_struct_variants_compute_the_same(tmp_path):
    a = load_net(savemat(tmp_path / "a.mat", {"net": released_net()}))
    b = load_net(savemat(tmp_path / "b.mat", {"net": released_net(struct_variant=True)}))
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(a.eval()(x), b.eval()(x))


def test_checkpoint_variables(tmp_path):
    src = released_net()
    f = savemat(tmp_path / "ckpt.mat", {"net": src, "opts": {"sessionID": "x", "lr": np.array([[1e-4]])},
                                        "obj": {"train": {"loss": np.ones((1, 3))}},
                                        "auxData": {"epochStartTime": [np.array([[1.0]])]}})
    _check_net(load_net(f), src)


def test_matconvnet_model_layouts_and_tidy(tmp_path):
    """imagenet-*.mat: layers/meta at top; old layout with filters/biases, normalization and
    classes at top and netID/sessionID/epoch on the net (moved into meta)."""
    rng = np.random.default_rng(1)
    new = {"layers": [_conv(rng, "conv1", 3, 3, 4), _relu("relu1"), _pool("pool1"),
                      {"name": "prob", "type": "softmax"}],
           "meta": {"normalization": {"averageImage": np.full((1, 1, 3), 120, np.float32)},
                    "classes": {"name": ["n01", "n02"], "description": ["a", "b"]}}}
    net = load_net(savemat(tmp_path / "imagenet-new.mat", new, format="5"))
    assert [l.type for l in net.layers] == ["conv", "relu", "pool", "softmax"]
    assert net.meta["classes"]["name"] == ["n01", "n02"]
    assert np.array_equal(net.layers[0].weights[0].detach().numpy(), new["layers"][0]["weights"][0])

    avg = rng.standard_normal((6, 6, 3)).astype(np.float32)
    old = {"layers": [_conv(rng, "conv1", 3, 3, 4, old=True), {"type": "relu"}],
           "normalization": {"averageImage": avg, "imageSize": np.array([[4.0, 4, 3]]),
                             "border": np.array([[2.0, 2]])},
           "classes": {"name": ["n01"]}, "netID": "caffe", "sessionID": "caffe_offtheshelf",
           "epoch": np.array([[0.0]])}
    net = load_net(savemat(tmp_path / "imagenet-old.mat", {"net": old}, format="5"))
    assert np.array_equal(net.layers[0].weights[0].detach().numpy(), old["layers"][0]["filters"])
    assert np.array_equal(net.layers[0].weights[1].detach().numpy(), old["layers"][0]["biases"])
    assert net.layers[1].name == "layer2"  # vl_simplenn_tidy's default name
    assert np.array_equal(net.meta["normalization"]["averageImage"], avg)
    np.testing.assert_array_equal(net.meta["normalization"]["cropSize"], [[4 / 6, 4 / 6]])
    assert (net.meta["netID"], net.meta["sessionID"]) == ("caffe", "caffe_offtheshelf")
    assert net.meta["classes"] == {"name": ["n01"]}


def test_truncated_trailing_singletons_rebuilt(tmp_path):
    """MATLAB drops trailing singleton dims: a 3x3x4x1 filter bank is stored 3x3x4."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 3, 4)).astype(np.float32)
    net = load_net(savemat(tmp_path / "t.mat", {"layers": [
        {"name": "c", "type": "conv", "weights": [w, np.zeros((1, 1), np.float32)]}]}))
    got = net.layers[0].weights[0].detach().numpy()
    assert got.shape == (3, 3, 4, 1) and np.array_equal(got[..., 0], w)


@pytest.mark.parametrize("fmt", ["7.3", "5"])
@pytest.mark.parametrize("struct", [False, True])
def test_save_net_round_trip_bit_exact(tmp_path, fmt, struct):
    src = released_net(seed=3)
    net = load_net(savemat(tmp_path / "in.mat", {"net": src}))
    out = save_net(net, tmp_path / "out.mat", format=fmt, struct=struct)
    again = load_net(out)
    _check_net(again, src)
    for a, b in zip(net.layers, again.layers):
        assert type(a) is type(b) and a.name == b.name
        assert a.learningRate == b.learningRate and a.weightDecay == b.weightDecay
    raw = loadmat(out)["net"]
    vlad = raw["layers"][9]
    if struct:
        assert isinstance(vlad, dict) and vlad["type"] == "custom"
    else:
        assert isinstance(vlad, MatObject) and vlad.class_name == "layerVLADv2" and vlad.saveobj
        assert list(vlad.props)[:10] == ["type", "name", "K", "D", "vladDim", "weights", "momentum",
                                         "learningRate", "weightDecay", "precious"]
        assert raw["layers"][13].class_name == "layerWholeL2Normalize" and not raw["layers"][13].saveobj


def test_saved_v73_is_matlab_shaped(tmp_path):
    net = load_net(savemat(tmp_path / "in.mat", {"net": released_net()}))
    out = save_net(net, tmp_path / "out.mat")
    with h5py.File(out, "r") as h:
        assert h["net"].attrs["MATLAB_class"] == b"struct"
        layers = h["net"]["layers"]
        assert layers.attrs["MATLAB_class"] == b"cell" and layers.shape == (14, 1)
        conv = h[layers[0, 0]]
        w = h[conv["weights"][0, 0]]
        assert w.shape == (4, 3, 3, 3) and w.attrs["MATLAB_class"] == b"single"
        vlad = h[layers[9, 0]]
        assert vlad.attrs["MATLAB_class"] == b"layerVLADv2"


def test_bad_networks(tmp_path):
    f = savemat(tmp_path / "nolayers.mat", {"net": {"meta": {"netID": "x"}}})
    with pytest.raises(MatFileError, match=r"nolayers\.mat.*'net' has no field 'layers'"):
        load_net(f)
    f = savemat(tmp_path / "nonet.mat", {"clsts": np.ones((2, 2))})
    with pytest.raises(MatFileError, match=r"nonet\.mat.*no network.*clsts"):
        load_net(f)
    src = released_net()
    src["layers"][11] = MatObject("layerMystery", {"type": "custom", "name": "mystery"})
    f = savemat(tmp_path / "unknown.mat", {"net": src})
    with pytest.raises(MatFileError, match=r"unknown\.mat.*layers\{12\}.*unknown layer class 'layerMystery'"):
        load_net(f)
    src = released_net(struct_variant=True)
    src["layers"][11] = {"type": "custom", "name": "mystery"}
    with pytest.raises(MatFileError, match=r"layers\{12\}.*'mystery'.*unknown class"):
        load_net(savemat(tmp_path / "unknown2.mat", {"net": src}))
    txt = tmp_path / "model.mat"
    txt.write_bytes(b"\x00" * 300)
    with pytest.raises(MatFileError, match=r"model\.mat.*not a MAT file"):
        load_net(txt)
