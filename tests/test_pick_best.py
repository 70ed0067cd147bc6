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


def test_getBestEpoch_refuses_a_history_missing_an_epoch():
    r = np.array([[.1, .3], [.2, .4], [.5, .7], [.8, .9]])
    assert getBestEpoch(r, NS, 5, epochs=[1, 2]) == 2
    with pytest.raises(ValueError, match="no recall for epoch 2; resume trainWeakly with startEpoch=3"):
        getBestEpoch(r, NS, 5, epochs=[1, 3])  # without the check: column 2 -> "epoch 2", really epoch 3


def test_getBestEpoch_refuses_columns_that_disagree_with_the_epochs():
    r = np.array([[.1, .3], [.2, .4], [.5, .7], [.8, .9]])
    with pytest.raises(ValueError, match=r"2 columns but 3 epochs were tested \(1, 2, 3\)"):
        getBestEpoch(r, NS, 5, epochs=[1, 2, 3])
    with pytest.raises(ValueError, match=r"2 columns but 1 epochs were tested \(1\)"):
        getBestEpoch(r, NS, 5, epochs=[1])


def _save_epochs(tmp_path, recalls_per_epoch):
    """Checkpoints ep1..epE whose val recall history is recalls_per_epoch[e-1] (nR x ncols)."""
    import torch

    from matnet.simplenn import SimpleNN
    from matnet.train.checkpoint import saveNet
    from matnet.train.opts import TrainWeaklyOpts
    opts = TrainWeaklyOpts(sessionID="gap", outPrefix=str(tmp_path) + "/", recallNs=NS, netID="tiny",
                           layerName="conv1", dbValName="v", batchSize=4)
    aux = {"epochStartTime": [], "numTrain": 8, "negCache": [np.zeros(0, int)]}  # 2 batches an epoch
    for ep, rec in enumerate(recalls_per_epoch, 1):
        obj = {"train": {"loss": np.ones((1, 2 * ep)), "recall": rec, "rankloss": np.ones((1, rec.shape[1]))},
               "val": {"loss": np.zeros((1, 0)), "recall": rec, "rankloss": np.ones((1, rec.shape[1]))}}
        net = SimpleNN.from_structs([{"type": "conv", "name": "c", "weights": [np.full((1, 1, 2, 2), ep, np.float32),
                                                                              np.zeros((1, 2), np.float32)]}], {})
        net.layers[0].momentum = [torch.ones(1, 1, 2, 2), torch.ones(2)]
        saveNet(net, obj, opts, aux, f"ep{ep:06d}_latest")


def test_pickBestNet_names_the_epoch_whose_tests_are_missing(tmp_path):
    from matnet.pick_best import pickBestNet
    c1, c3 = np.array([[.1], [.2], [.3], [.4]]), np.array([[.5], [.6], [.7], [.8]])
    # epoch 2 was saved but killed before its tests, then resumed at startEpoch=3 (MATLAB's flaw):
    # the history holds epochs 1 and 3 in columns 1 and 2, so getBestEpoch alone would say "2"
    _save_epochs(tmp_path, [c1, c1, np.hstack([c1, c3])])
    with pytest.raises(ValueError, match=r"gap_latest\.mat.*2 columns for 3 trained epochs: no recall for epoch 2"):
        pickBestNet("gap", 5, verbose=0, outPrefix=str(tmp_path) + "/")
    # killed after epoch 3's first save, before its tests: the last epoch is missing
    _save_epochs(tmp_path, [c1, np.hstack([c1, c3]), np.hstack([c1, c3])])
    with pytest.raises(ValueError, match="no recall for epoch 3; resume trainWeakly with startEpoch=4"):
        pickBestNet("gap", 5, verbose=0, outPrefix=str(tmp_path) + "/")
    # complete: the best (epoch 3) is picked
    _save_epochs(tmp_path, [c1, np.hstack([c1, c1]), np.hstack([c1, c1, c3])])
    assert pickBestNet("gap", 5, verbose=0, outPrefix=str(tmp_path) + "/")[0] == 3


def test_pickBestNet_refuses_a_latest_history_shorter_than_the_epoch_files(tmp_path):
    """The per-epoch files say epochs 1-3 were tested, <session>_latest.mat's history has 2
    columns (its losses count 3 epochs): refused naming both, where trusting the files and
    indexing the shorter history picked a wrong epoch."""
    from matnet.pick_best import pickBestNet
    from matnet.train.checkpoint import load_checkpoint, saveNet
    c = [np.array([[v], [v], [v], [v]]) for v in (.1, .2, .9)]
    _save_epochs(tmp_path, [c[0], np.hstack(c[:2]), np.hstack(c)])
    res = load_checkpoint(tmp_path / "gap_latest.mat")
    obj = res["obj"]
    obj["val"]["recall"] = np.hstack(c[:2])  # epoch 3's column lost from the history
    saveNet(res["net"], obj, res["opts"], res["auxData"], "other")
    with pytest.raises(ValueError, match=r"gap_latest\.mat: the recall history has 2 columns, but the per-epoch "
                                         r"checkpoints .* say 3 epochs were tested \(1, 2, 3\)"):
        pickBestNet("gap", 5, verbose=0, outPrefix=str(tmp_path) + "/")


def test_pickBestNet_from_checkpoints(tmp_path, capsys):
    import torch

    from matnet.pick_best import pickBestNet
    from matnet.simplenn import SimpleNN
    from matnet.train.checkpoint import saveNet
    from matnet.train.opts import TrainWeaklyOpts

    opts = TrainWeaklyOpts(sessionID="sess", outPrefix=str(tmp_path) + "/", recallNs=NS, netID="tiny",
                           layerName="conv1", dbValName="v")
    # val recall: epoch 2 and 3 tie at N=5 and N=2; recall@1 makes epoch 3 the best
    val = np.array([[.1, .2, .3], [.2, .4, .4], [.5, .7, .7], [.8, .8, .9]])
    # 3 epochs of numTrain // batchSize = 12 // 4 = 3 batches
    obj = {"train": {"loss": np.ones((1, 9)), "recall": val * 0.9, "rankloss": np.ones((1, 3))},
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
    from converters.network import load_net
    saved = load_net(tmp_path / "sess_best.mat")  # the chosen network, as a loadable file
    assert saved.meta["epoch"] == 3 and float(saved.layers[0].weights[0].detach().reshape(-1)[0]) == 3
    assert "pickBestNet: the network of epoch 3 is " + str(tmp_path / "sess_best.mat") in capsys.readouterr().out
    assert pickBestNet("sess", 10, verbose=0, outPrefix=str(tmp_path) + "/")[0] == 3
    assert pickBestNet("sess", 1, verbose=0, outPrefix=str(tmp_path) + "/")[0] == 3
