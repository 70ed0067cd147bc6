"""loadNet (matnet/pretrained.py): by MATLAB's network ID, or (not in MATLAB) by a file's path."""
import pytest
import torch

from matnet.pretrained import PRETRAINED, loadNet
from matnet.synthetic import save_tiny_net


def test_loadNet_by_path_reads_the_file_as_by_id(tmp_path):
    fn = save_tiny_net(tmp_path, [100, 110, 120], imSize=(32, 40))
    by_id = loadNet("tiny", "conv3", pretrainedDir=tmp_path)
    for path in (fn, str(fn)):
        by_path = loadNet(path, "conv3")
        assert [l.name for l in by_path.layers] == [l.name for l in by_id.layers]
        for a, b in zip(by_path.layers, by_id.layers):
            assert all(torch.equal(x, y) for x, y in zip(a.weights, b.weights))
        assert by_path.meta["netID"] == "tiny"  # named as loadNet's tiny file
        assert by_path.meta["sessionID"] == "tiny_offtheshelf_conv3" and by_path.meta["epoch"] == 0
    other = tmp_path / "mine.mat"
    fn.rename(other)
    assert loadNet(other).meta["netID"] == "mine" and loadNet(other).meta["sessionID"] == "mine_offtheshelf"
    with pytest.raises(FileNotFoundError, match="absent.mat"):
        loadNet(tmp_path / "absent.mat")


def test_unknown_id_lists_the_ids_and_names_load_net():
    with pytest.raises(ValueError) as e:
        loadNet("alexnet")
    assert all(k in str(e.value) for k in PRETRAINED) and "matnet.load_net" in str(e.value)
