"""converters.network: released-format NetVLAD networks, MatConvNet models, checkpoints."""
import h5py
import numpy as np
import pytest
import torch

from converters.matfile import MatFileError, MatObject, loadmat, savemat
from converters.network import load_net, save_net
from helpers.released_net import _conv, _pool, _relu, check_net, released_net

D, K, P = 6, 3, 5


@pytest.mark.parametrize("fmt", ["7.3", "5"])
@pytest.mark.parametrize("struct_variant", [False, True])
def test_load_released_format(tmp_path, fmt, struct_variant):
    src = released_net(struct_variant=struct_variant)
    f = savemat(tmp_path / "vd16_tiny.mat", {"net": src}, format=fmt)
    net = load_net(f)
    check_net(net, src)
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
    check_net(load_net(f), src)


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
    check_net(again, src)
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


def test_killed_convert_temporary_removed_by_the_next(tmp_path, capfd):
    """Issue 24 case 19: a killed `matnet convert` left its temporary; the next convert to
    that output removes it (another output's temporary is kept)."""
    from matnet.cli import main
    src = savemat(tmp_path / "in.mat", {"net": released_net()})
    stale = tmp_path / "out.safetensors.4242-deadbeef.matnet-tmp"
    stale.write_bytes(b"x" * 100)
    other = tmp_path / "else.safetensors.4242-deadbeef.matnet-tmp"
    other.write_bytes(b"y")
    assert main(["convert", str(src), str(tmp_path / "out.safetensors")]) == 0
    assert not stale.exists() and other.exists() and (tmp_path / "out.safetensors").is_file()
    assert "out.safetensors: removed 1 temporary a killed run left" in capfd.readouterr().err
