import numpy as np
import pytest

from matnet.pick_best import getBestEpoch

NS = [1, 2, 5, 10]


def test_plain_maximum_at_N():
    r = np.array([[.1, .2, .3], [.2, .3, .4], [.5, .7, .6], [.8, .9, .9]])
    assert getBestEpoch(r, NS, 5) == 2  # 1-based
    assert getBestEpoch(r, NS, 1) == 3
    assert getBestEpoch(r, NS, 10) == 2  # tie .9/.9 at N=10 -> recall@5 decides: epoch 2


def test_ties_broken_by_smaller_then_larger_N():
    # recall@5 tied between epochs 1 and 3; recall@2 tied too; recall@1 decides -> epoch 3
    r = np.array([[.1, .0, .2], [.3, .1, .3], [.6, .5, .6], [.7, .9, .8]])
    assert getBestEpoch(r, NS, 5) == 3
    # all smaller Ns tied: the larger Ns decide (recall@10)
    r = np.array([[.1, .0, .1], [.3, .1, .3], [.6, .5, .6], [.7, .9, .8]])
    assert getBestEpoch(r, NS, 5) == 3
    # complete tie: the earliest epoch
    r = np.array([[.1, .1], [.3, .3], [.6, .6], [.7, .7]])
    assert getBestEpoch(r, NS, 5) == 1
    # within 1e-6 counts as a tie
    r = np.array([[.1, .2], [.3, .3], [.6, .6 + 5e-7], [.7, .7]])
    assert getBestEpoch(r, NS, 5) == 2


def test_bad_inputs():
    with pytest.raises(ValueError, match="N=3"):
        getBestEpoch(np.zeros((4, 2)), NS, 3)
    with pytest.raises(ValueError, match="rows"):
        getBestEpoch(np.zeros((3, 2)), NS, 5)


def test_pickBestNet_from_checkpoints(tmp_path):
    import torch

    from matnet.pick_best import pickBestNet
    from matnet.simplenn import SimpleNN
    from matnet.train.checkpoint import saveNet
    from matnet.train.opts import TrainWeaklyOpts

    opts = TrainWeaklyOpts(sessionID="sess", outPrefix=str(tmp_path) + "/", recallNs=NS, netID="tiny",
                           layerName="conv1", dbValName="v")
    # val recall: epoch 2 and 3 tie at N=5 and N=2; recall@1 makes epoch 3 the best
    val = np.array([[.1, .2, .3], [.2, .4, .4], [.5, .7, .7], [.8, .8, .9]])
    obj = {"train": {"loss": np.ones((1, 6)), "recall": val * 0.9, "rankloss": np.ones((1, 3))},
           "val": {"loss": np.zeros((1, 0)), "recall": val, "rankloss": np.ones((1, 3))},
           "pretrain": {"val": {"recall": val[:, :1] * 0.5, "rankloss": np.float64(2)},
                        "train": {"recall": val[:, :1] * 0.4, "rankloss": np.float64(2)}}}
    aux = {"epochStartTime": ["a", "b", "c"], "numTrain": 12, "negCache": [np.array([3, 1]), np.zeros(0, int)]}
    for ep in (1, 2, 3):
        net = SimpleNN.from_structs([{"type": "conv", "name": "c", "weights": [np.full((1, 1, 2, 2), ep, np.float32),
                                                                              np.zeros((1, 2), np.float32)]}], {})
        net.layers[0].momentum = [torch.ones(1, 1, 2, 2), torch.ones(2)]
        saveNet(net, obj, opts, aux, f"ep{ep:06d}_latest")
    best, net = pickBestNet("sess", 5, verbose=2, outPrefix=str(tmp_path) + "/")
    assert best == 3
    assert float(net.layers[0].weights[0].detach().reshape(-1)[0]) == 3  # the epoch-3 network
    assert net.meta["sessionID"] == "sess" and net.meta["epoch"] == 3 and net.layers[0].momentum is None
    assert (tmp_path / "sess_recall.png").is_file() and (tmp_path / "sess_training.png").is_file()
    assert pickBestNet("sess", 10, verbose=0, outPrefix=str(tmp_path) + "/")[0] == 3
    assert pickBestNet("sess", 1, verbose=0, outPrefix=str(tmp_path) + "/")[0] == 3
