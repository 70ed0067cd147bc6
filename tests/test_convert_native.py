"""converters.native (safetensors + JSON) and the ``matnet convert`` / ``matnet inspect`` commands."""
import json
import struct

import numpy as np
import pytest
import torch

from converters.matfile import MatFileError, savemat
from converters.native import load_native, save_native
from converters.network import load_net
from matnet.cli import main
from helpers.released_net import EXPECTED_CLASSES, check_net, released_net


def _header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def test_native_round_trip_exact(tmp_path):
    src = released_net(seed=5)
    net = load_net(savemat(tmp_path / "n.mat", {"net": src}))
    out = save_native(net, tmp_path / "n.safetensors")
    back = load_native(out)
    check_net(back, src)
    for a, b in zip(net.layers, back.layers):
        assert type(a) is type(b) and a.name == b.name and a.extra.keys() == b.extra.keys()
        assert a.learningRate == b.learningRate and a.weightDecay == b.weightDecay
    assert back.meta["sessionID"] == src["meta"]["sessionID"]
    x = torch.randn(2, 3, 14, 11)
    assert torch.equal(net.eval()(x), back.eval()(x))
    # the file: tensors named by layer index / name / weight index, JSON metadata only
    h = _header(out)
    assert "9/vlad:core/weights/0" in h and h["9/vlad:core/weights/0"]["shape"] == [1, 1, 6, 3]
    assert h["meta/normalization/averageImage"]["shape"] == [1, 1, 3]
    doc = json.loads(h["__metadata__"]["matnet"])
    assert [l["class_name"] for l in doc["layers"]][9] == "layerVLADv2"


def test_native_errors(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(MatFileError, match=r"x\.safetensors.*not a safetensors file"):
        load_native(bad)
    from safetensors.numpy import save_file
    save_file({"a": np.ones(2, np.float32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(MatFileError, match=r"plain\.safetensors.*without matnet metadata"):
        load_native(tmp_path / "plain.safetensors")


def test_cli_convert_and_inspect(tmp_path, capsys):
    src = released_net(seed=6)
    mat = savemat(tmp_path / "net.mat", {"net": src})
    st = tmp_path / "net.safetensors"
    assert main(["convert", str(mat), str(st)]) == 0
    check_net(load_native(st), src)
    back = tmp_path / "back.mat"
    assert main(["convert", str(st), str(back), "--mat-format", "5", "--struct"]) == 0
    check_net(load_net(back), src)
    capsys.readouterr()
    assert main(["inspect", str(mat), "--size", "16", "12"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = out[1:1 + len(EXPECTED_CLASSES)]
    assert rows[0].split()[:4] == ["0", "conv1_1", "conv", "3x3x3x4,"]
    assert rows[9].split()[:3] == ["9", "vlad:core", "layerVLADv2"]
    # 16x12 input, one 2x2 pool: 8x6x6 before the head; VLAD 1x3x6; WPCA output 1x1x5
    assert rows[7].split()[-2:] == ["8x6x6", "[288]"]
    assert rows[9].split()[-2:] == ["1x3x6", "[18]"]
    assert rows[13].split()[-2:] == ["1x1x5", "[5]"]
    assert main(["inspect", str(tmp_path / "missing.mat")]) == 1
    assert "missing.mat: no such file" in capsys.readouterr().err
