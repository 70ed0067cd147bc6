"""matnet.load_net / save_net: every network file kind, told by content; round trips per extension."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import converters
import matnet
from converters.atomic_file import GLOB as TEMPORARIES
from converters.matfile import MatFileError, MatObject, loadmat, savemat
from matnet.train.checkpoint import saveNet
from matnet.train.opts import TrainWeaklyOpts
from helpers.released_net import released_net


def _forward(net, seed=1):
    x = torch.randn(2, 3, 12, 10, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return net.eval()(x).reshape(2, -1)


def _reference_output():
    """The released-format test network built straight from its structs (no file involved)."""
    src = released_net()
    structs = [dict(x.props) if isinstance(x, MatObject) else x for x in src["layers"]]
    classes = [x.class_name if isinstance(x, MatObject) else None for x in src["layers"]]
    layers = [matnet.layer_from_struct(s, class_name=c, index=i) for i, (s, c) in enumerate(zip(structs, classes))]
    return _forward(matnet.SimpleNN(layers, src["meta"]))


def _imagenet_model(tmp_path):
    """A MatConvNet ImageNet model: top-level ``layers`` + ``meta`` (with classes), MAT v5."""
    src = released_net()
    trunk = src["layers"][:8]
    meta = dict(src["meta"], classes={"name": ["a", "b"], "description": ["A", "B"]})
    return savemat(tmp_path / "imagenet-model.mat", {"layers": trunk, "meta": meta}, format="5")


def _checkpoint(tmp_path):
    net = matnet.load_net(savemat(tmp_path / "src.mat", {"net": released_net()}))
    opts = TrainWeaklyOpts(sessionID="ab12", outPrefix=str(tmp_path) + "/")
    obj = {"train": {"loss": np.array([[0.5]]), "recall": np.zeros((2, 0)), "rankloss": np.zeros((1, 0))},
           "val": {"loss": np.zeros((1, 0)), "recall": np.zeros((2, 0)), "rankloss": np.zeros((1, 0))}}
    aux = {"epochStartTime": ["23-Nov-2026 10:00:00"], "numTrain": 1, "negCache": [np.array([0])]}
    return saveNet(net, obj, opts, aux, "ep000001_latest")


def test_load_net_every_kind_by_content(tmp_path):
    ref = _reference_output()
    released = savemat(tmp_path / "released.mat", {"net": released_net()})  # v7.3, classdef layers
    struct = savemat(tmp_path / "released_struct.mat", {"net": released_net(struct_variant=True)})
    native = converters.save_native(matnet.load_net(released), tmp_path / "n.safetensors")
    checkpoint = _checkpoint(tmp_path)
    assert set(loadmat(checkpoint)) == {"net", "obj", "opts", "auxData"}
    for f in (released, struct, native, checkpoint):
        torch.testing.assert_close(_forward(matnet.load_net(f)), ref, rtol=0, atol=0)
        # the kind comes from the bytes: a misleading extension changes nothing
        renamed = shutil.copyfile(f, tmp_path / f"misnamed_{Path(f).stem}.bin")
        torch.testing.assert_close(_forward(matnet.load_net(renamed)), ref, rtol=0, atol=0)
    model = matnet.load_net(_imagenet_model(tmp_path))
    assert [l.name for l in model.layers][-1] == "conv2_2" and model.meta["classes"]["name"] == ["a", "b"]
    assert converters.network_file_kind(native) == "safetensors" and converters.network_file_kind(struct) == "mat"


@pytest.mark.parametrize("name,fmt,objects", [("out.mat", "7.3", True), ("out_struct.mat", "7.3", False),
                                               ("out.mat", "5", True), ("out.safetensors", None, None)])
def test_save_net_by_extension_round_trip(tmp_path, name, fmt, objects):
    net = matnet.load_net(savemat(tmp_path / "src.mat", {"net": released_net()}))
    out = matnet.save_net(net, tmp_path / name, **({"format": fmt} if fmt else {}))
    assert out == tmp_path / name and not list(tmp_path.glob(TEMPORARIES))
    back = matnet.load_net(out)
    torch.testing.assert_close(_forward(back), _forward(net), rtol=0, atol=0)
    assert [l.name for l in back.layers] == [l.name for l in net.layers]
    if objects is not None:  # classdef objects, or the plain 'custom' structs of *_struct.mat
        vlad = loadmat(out)["net"]["layers"][9]
        assert isinstance(vlad, MatObject) == objects
        if not objects:
            assert vlad["type"] == "custom"
    else:
        assert converters.network_file_kind(out) == "safetensors"


def test_errors_name_the_file(tmp_path):
    net = matnet.load_net(savemat(tmp_path / "src.mat", {"net": released_net()}))
    with pytest.raises(ValueError, match=r"out\.onnx: unknown network file extension"):
        matnet.save_net(net, tmp_path / "out.onnx")
    with pytest.raises(FileNotFoundError, match="absent.mat"):
        matnet.load_net(tmp_path / "absent.mat")
    text = tmp_path / "notes.mat"
    text.write_text("hello, not a network\n")
    with pytest.raises(MatFileError, match=r"notes\.mat: not a network file"):
        matnet.load_net(text)
    clusters = savemat(tmp_path / "clusters.mat", {"clsts": np.zeros((4, 2), np.float32)}, format="5")
    with pytest.raises(MatFileError, match=r"clusters\.mat: no network.*has: clsts"):
        matnet.load_net(clusters)
    with pytest.raises(FileNotFoundError, match="absent.mat"):  # loadNet given a path reads the file
        matnet.loadNet(str(tmp_path / "absent.mat"))


def test_public_faces():
    from matnet import load_net, save_net
    assert callable(load_net) and callable(save_net) and load_net is converters.load_net
    for name in ("loadmat", "savemat", "whosmat", "load_net", "save_net", "read_bin", "write_bin",
                 "load_dbstruct", "read_clusters", "read_train_descs", "read_pca", "write_clusters",
                 "write_train_descs", "write_pca"):
        assert callable(getattr(converters, name)), name
    assert all(hasattr(matnet, n) for n in matnet.__all__)
