import numpy as np
import torch

from converters.atomic_file import GLOB as TEMPORARIES
from converters.matfile import loadmat
from matnet.simplenn import SimpleNN
from matnet.train.checkpoint import load_checkpoint, saveNet
from matnet.train.opts import TrainWeaklyOpts


def test_checkpoint_as_matlab_saves_it(tmp_path):
    net = SimpleNN.from_structs([{"type": "conv", "name": "c", "weights": [np.arange(8, dtype=np.float32).reshape(1, 1, 2, 4),
                                                                          np.zeros((1, 4), np.float32)]}], {"epoch": 0})
    net.layers[0].momentum = [torch.full((1, 1, 2, 4), 0.5), torch.ones(4)]
    opts = TrainWeaklyOpts(sessionID="ab12", outPrefix=str(tmp_path) + "/", fixLayers=["c"], recallNs=[1, 5])
    obj = {"train": {"loss": np.array([[0.5, 0.25]]), "recall": np.zeros((2, 0)), "rankloss": np.zeros((1, 0))},
           "val": {"loss": np.zeros((1, 0)), "recall": np.zeros((2, 0)), "rankloss": np.zeros((1, 0))}}
    aux = {"epochStartTime": ["23-Nov-2026 10:00:00"], "numTrain": 3,
           "negCache": [np.array([4, 0]), np.zeros(0, np.int64), np.array([2])]}
    fn = saveNet(net, obj, opts, aux, "ep000001_latest")
    assert fn == f"{tmp_path}/ab12_ep000001_latest.mat"
    raw = loadmat(fn)
    assert set(raw) == {"net", "obj", "opts", "auxData"}
    # MATLAB's layout: 1-based ids in an N x 1 cell of column vectors, options as a struct
    cache = raw["auxData"]["negCache"]
    assert [np.asarray(c).reshape(-1).tolist() for c in cache] == [[5, 1], [], [3]]
    assert np.asarray(raw["opts"]["recallNs"]).shape == (1, 2) and raw["opts"]["sessionID"] == "ab12"
    # the latest copy is identical and no temporary file is left
    assert (tmp_path / "ab12_latest.mat").read_bytes() == (tmp_path / "ab12_ep000001_latest.mat").read_bytes()
    assert not list(tmp_path.glob(TEMPORARIES))
    back = load_checkpoint(tmp_path / "ab12_latest.mat")
    assert [c.tolist() for c in back["auxData"]["negCache"]] == [[4, 0], [], [2]]
    assert back["opts"].to_dict() == opts.to_dict()
    np.testing.assert_array_equal(back["obj"]["train"]["loss"], obj["train"]["loss"])
    torch.testing.assert_close(back["net"].layers[0].momentum[0], net.layers[0].momentum[0])
    torch.testing.assert_close(back["net"].layers[0].weights[0], net.layers[0].weights[0])
