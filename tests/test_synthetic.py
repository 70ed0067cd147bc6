import numpy as np
import pytest
import torch
from PIL import Image

from converters.matfile import loadmat
from converters.dbstruct import load_dbstruct
from matnet.pretrained import loadNet
from matnet.synthetic.basenet import save_tiny_net
from matnet.synthetic.places import SplitSpec, make_split


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    make_split(root, SplitSpec("synth_train", "train", 24, 10, 3), imSize=(32, 40))
    return root


def test_spec_in_the_real_format(split):
    raw = loadmat(split / "datasets" / "synth_train.mat")["dbStruct"]
    assert list(raw) == ["whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages", "numQueries",
                         "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr"]
    assert raw["numImages"].dtype == np.uint16 and raw["posDistThr"].dtype == np.uint8
    s = load_dbstruct(split / "datasets" / "synth_train.mat")
    assert s["numImages"] == 24 and s["numQueries"] == 10 and s["posDistThr"] == 25
    assert s["nonTrivPosDistSqThr"] == 100 and s["posDistSqThr"] == 625
    assert s["utmDb"].shape == (2, 24) and s["utmQ"].shape == (2, 10)
    # every query has a database image within posDistThr, and db images are 5 m apart
    d = np.sqrt(((s["utmQ"][:, :, None] - s["utmDb"][:, None, :]) ** 2).sum(0))
    assert np.all(d.min(1) <= 25)
    np.testing.assert_allclose(np.diff(np.sqrt(((s["utmDb"] - s["utmDb"][:, :1]) ** 2).sum(0))), 5.0)
    for fn in s["dbImageFns"] + s["qImageFns"]:
        im = Image.open(split / "images" / fn)
        assert im.size == (40, 32) and im.mode == "RGB"


def test_views_of_the_same_place_look_alike(split):
    s = load_dbstruct(split / "datasets" / "synth_train.mat")
    db = np.stack([np.asarray(Image.open(split / "images" / f), np.float32) for f in s["dbImageFns"]])
    # neighbouring database views overlap (shifted by 5 m = 10 px), far ones do not
    near = np.mean([np.abs(db[i][:, 10:] - db[i + 1][:, :-10]).mean() for i in range(len(db) - 1)])
    far = np.mean([np.abs(db[i] - db[(i + 12) % len(db)]).mean() for i in range(len(db))])
    assert near < 0.6 * far


def test_tiny_net_through_loadNet(tmp_path):
    save_tiny_net(tmp_path, [100, 110, 120], imSize=(32, 40))
    net = loadNet("tiny", "conv3", pretrainedDir=tmp_path)
    assert [l.name for l in net.layers] == ["conv1", "pool1", "relu1", "conv2", "pool2", "relu2", "conv3"]
    assert net.meta["sessionID"] == "tiny_offtheshelf_conv3" and net.meta["epoch"] == 0
    avg = net.meta["normalization"]["averageImage"]
    assert avg.shape == (32, 40, 3)
    np.testing.assert_array_equal(avg[5, 7], [100, 110, 120])
    y = net(torch.zeros(2, 3, 32, 40))
    assert y.shape == (2, 32, 8, 10)
    again = loadNet("tiny", None, pretrainedDir=tmp_path)
    torch.testing.assert_close(again.layers[0].weights[0], net.layers[0].weights[0])  # deterministic init
    with pytest.raises(ValueError, match="unknown network ID"):
        loadNet("alexnet", pretrainedDir=tmp_path)
    with pytest.raises(FileNotFoundError, match="imagenet-vgg-verydeep-16.mat"):
        loadNet("vd16", pretrainedDir=tmp_path)
