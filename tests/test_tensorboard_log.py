"""trainWeakly(..., tensorboard=DIR) / matnet train --tensorboard DIR (not in MATLAB): the
event file holds the epoch losses, learning rate and validation / training recalls equal
to the checkpoint's history, and one batch/loss per batch; without the tensorboard
package the request fails before any compute with an error naming the extra."""
import sys

import numpy as np
import pytest

from matnet.synthetic import dbSynthetic, make_places, save_tiny_net
from matnet.train import train_weakly as tw
from matnet.train.checkpoint import load_checkpoint
from matnet.train.tensorboard_log import MissingExtraError
from helpers.train_driver import training_env

OPTS = dict(netID="tiny", layerName="conv3", batchSize=2, nNegChoice=8, nNegCap=3, nNegCache=4, margin=0.5,
            learningRate=0.05, useGPU=False, numThreads=2, saveFrequency=1000, compFeatsFrequency=1000,
            nTestSample=1000, nTestRankSample=12, recallNs=[1, 2, 5], backPropToLayer="conv2", nEpoch=2)


@pytest.fixture
def env(tmp_path, monkeypatch):
    make_places(tmp_path / "data", numImages=24, numQueries=8, imSize=(32, 40), splits=("train", "val"))
    save_tiny_net(tmp_path / "pre", [120, 120, 120], imSize=(32, 40))
    training_env(monkeypatch, tmp_path / "pre", tmp_path / "out")
    return dbSynthetic("train", tmp_path / "data"), dbSynthetic("val", tmp_path / "data"), tmp_path / "out"


def test_tensorboard_scalars(env, tmp_path):
    pytest.importorskip("tensorboard", reason="the optional tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    dbTrain, dbVal, out = env
    sid = tw.trainWeakly(dbTrain, dbVal, sessionID="tb", tensorboard=str(tmp_path / "tb"), **OPTS)
    ea = EventAccumulator(str(tmp_path / "tb"))
    ea.Reload()
    sc = lambda tag: [(e.step, e.value) for e in ea.Scalars(tag)]
    ck = load_checkpoint(f"{out}/{sid}_ep000002_latest.mat")
    obj = ck["obj"]
    nBatches = dbTrain.numQueries // OPTS["batchSize"]
    losses = np.asarray(obj["train"]["loss"]).ravel()
    assert len(losses) == 2 * nBatches
    np.testing.assert_allclose([v for _, v in sc("batch/loss")], losses, rtol=1e-6)
    assert [s for s, _ in sc("train/loss")] == [1, 2]
    np.testing.assert_allclose([v for _, v in sc("train/loss")],
                               [losses[:nBatches].mean(), losses[nBatches:].mean()], rtol=1e-6)
    assert [v for _, v in sc("train/learning_rate")] == pytest.approx([0.05, 0.05])
    val = np.asarray(obj["val"]["recall"]).reshape(3, -1)
    train = np.asarray(obj["train"]["recall"]).reshape(3, -1)
    for i, n in enumerate(OPTS["recallNs"]):
        np.testing.assert_allclose([v for _, v in sc(f"val/recall@{n}")], val[i, -2:], rtol=1e-6)
        np.testing.assert_allclose([v for _, v in sc(f"train/recall@{n}")], train[i, -2:], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in sc("val/rankloss")], np.asarray(obj["val"]["rankloss"]).ravel()[-2:],
                               rtol=1e-6)


def test_missing_tensorboard_named_before_compute(env, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "tensorboard" or m.startswith(("tensorboard.", "torch.utils.tensorboard"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    dbTrain, dbVal, out = env
    with pytest.raises(MissingExtraError, match=r"matnet\[tensorboard\]") as e:
        tw.trainWeakly(dbTrain, dbVal, sessionID="tb", tensorboard=str(tmp_path / "tb"), **OPTS)
    assert isinstance(e.value, ValueError) and "tensorboard=" in str(e.value)
    assert not out.exists() or not any(out.iterdir())  # nothing computed
    assert not (tmp_path / "tb").exists()


def test_only_rank0_writes(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="the optional tensorboard extra is not installed")
    from matnet.train import tensorboard_log
    monkeypatch.setattr(tensorboard_log.distributed, "is_rank0", lambda: False)
    log = tensorboard_log.TensorBoardLog(str(tmp_path / "r1"), [1, 5])
    log.batch(1, 0.5)
    log.epoch(1, 0.1, [0.5], ([0.5, 0.9], 0.2), None)
    log.close()
    assert not (tmp_path / "r1").exists()
    monkeypatch.setattr(tensorboard_log.distributed, "is_rank0", lambda: True)
    log = tensorboard_log.TensorBoardLog(str(tmp_path / "r0"), [1, 5])
    log.epoch(1, 0.1, [0.5], ([0.5, 0.9], 0.2), None)
    log.close()
    assert list((tmp_path / "r0").glob("events.out.tfevents.*"))
