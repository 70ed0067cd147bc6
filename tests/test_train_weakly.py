"""trainWeakly end to end on a tiny synthetic set: schedule, checkpoints, resume."""
import math
import sys

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from converters.atomic_file import GLOB as TEMPORARIES
from matnet.synthetic import dbSynthetic, make_places, save_tiny_net
from matnet.images import TrainingImageLoader
from matnet.train import session_files
from matnet.train import train_weakly as tw
from matnet.train.batch import train_batch
from matnet.train.sgd import lr_schedule
from matnet.train.checkpoint import load_checkpoint
from matnet.train.opts import TrainWeaklyOpts
from helpers.train_driver import OPTS, simple_head, training_env


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tw")
    make_places(root / "data", numImages=24, numQueries=12, imSize=(32, 40), splits=("train", "val"))
    save_tiny_net(root / "pre", [120, 120, 120], imSize=(32, 40))
    return root


@pytest.fixture
def env(data, tmp_path, monkeypatch):
    training_env(monkeypatch, data / "pre", tmp_path / "out")
    return dbSynthetic("train", data / "data"), dbSynthetic("val", data / "data"), tmp_path / "out"


def _weights(net):
    return [w.detach().clone() for l in net.layers for w in l.weights]


def test_lr_and_cache_period_schedule():
    o = TrainWeaklyOpts(learningRate=1.0, lrDownFreq=3, lrDownFactor=2, nEpoch=8, compFeatsFrequency=10, batchSize=4)
    sched = lr_schedule(o)
    assert [lr for lr, _ in sched] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert [p for _, p in sched] == [3, 3, 3, 6, 6, 6, 12, 12]  # ceil(10/4)=3, then x2 with each lr drop
    assert all(lr == 1 for lr, _ in lr_schedule(o.replace(lrDownFreq=1)))  # rem(e,1) is never 1


def test_resume_equals_uninterrupted(env):
    dbT, dbV, out = env
    tw.trainWeakly(dbT, dbV, sessionID="full", nEpoch=2, **OPTS)
    tw.trainWeakly(dbT, dbV, sessionID="split", nEpoch=1, **OPTS)
    first = load_checkpoint(out / "split_ep000001_latest.mat")
    tw.trainWeakly(dbT, dbV, sessionID="split", nEpoch=2, startEpoch=2, **OPTS)
    a = load_checkpoint(out / "full_ep000002_latest.mat")
    b = load_checkpoint(out / "split_latest.mat")
    nb = dbT.numQueries // OPTS["batchSize"]
    assert a["obj"]["train"]["loss"].shape == (1, 2 * nb)
    assert a["obj"]["val"]["recall"].shape == (4, 2) and "pretrain" in a["obj"]
    for x, y in zip(_weights(a["net"]), _weights(b["net"])):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    np.testing.assert_array_equal(a["obj"]["train"]["loss"], b["obj"]["train"]["loss"])
    np.testing.assert_array_equal(a["obj"]["val"]["recall"], b["obj"]["val"]["recall"])
    for x, y in zip(a["auxData"]["negCache"], b["auxData"]["negCache"]):
        np.testing.assert_array_equal(x, y)
    # training changed the trained layers only (backPropToLayer conv2: conv1 fixed)
    w0 = {l.name: l.weights[0].detach() for l in first["net"].layers if len(l.weights)}
    w2 = {l.name: l.weights[0].detach() for l in a["net"].layers if len(l.weights)}
    assert not torch.equal(w0["conv3"], w2["conv3"])
    torch.testing.assert_close(w0["conv1"], w2["conv1"], rtol=0, atol=0)
    # the negative caches hold at most nNegCache ids, which are negatives of their query
    for q, c in enumerate(a["auxData"]["negCache"]):
        assert len(c) <= OPTS["nNegCache"]
        assert not np.any(dbT.isPosQ(q, c))
    assert a["opts"].backPropToLayer == 4 and a["opts"].backPropToLayerName == "conv2"


class _Killed(Exception):
    pass


def test_interrupted_mid_epoch_then_resumed(env, monkeypatch):
    dbT, dbV, out = env
    tw.trainWeakly(dbT, dbV, sessionID="ref", nEpoch=2, **OPTS)
    real, calls = tw.train_batch, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 6 + 5:  # epoch 2, batch 5: the last save was before batch 4
            raise _Killed()
        return real(*a, **k)
    monkeypatch.setattr(tw, "train_batch", dying)
    with pytest.raises(_Killed):
        tw.trainWeakly(dbT, dbV, sessionID="kill", nEpoch=2, **OPTS)
    monkeypatch.setattr(tw, "train_batch", real)
    saved = load_checkpoint(out / "kill_latest.mat")
    assert saved["auxData"]["resumeBatch"] == 3 and saved["obj"]["train"]["loss"].size == 6 + 3
    tw.trainWeakly(dbT, dbV, sessionID="kill", nEpoch=2, startEpoch=2, **OPTS)
    a = load_checkpoint(out / "ref_latest.mat")
    b = load_checkpoint(out / "kill_latest.mat")
    for x, y in zip(_weights(a["net"]), _weights(b["net"])):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    np.testing.assert_array_equal(a["obj"]["train"]["loss"], b["obj"]["train"]["loss"])
    np.testing.assert_array_equal(a["obj"]["train"]["recall"], b["obj"]["train"]["recall"])
    assert not list(out.glob(TEMPORARIES)) and not list(out.glob("*_cache_*.bin"))


def test_bad_options(env):
    dbT, dbV, _ = env
    with pytest.raises(ValueError, match="sessionID"):
        tw.trainWeakly(dbT, dbV, startEpoch=3, **OPTS)
    with pytest.raises(ValueError, match="fixLayers"):
        tw.trainWeakly(dbT, dbV, fixLayers=["nope"], **OPTS)
    with pytest.raises(ValueError, match="unknown option"):
        tw.trainWeakly(dbT, dbV, nNegcap=3, **OPTS)


@pytest.mark.parametrize("option,value,message", [
    ("backPropToLayer", 99, "backPropToLayer=99 is not allowed: the network has 9 layers"),
    ("backPropToLayer", "conv9", "backPropToLayer='conv9' is not allowed: 0 layers"),
    ("fixLayers", ["conv1", "vlad:core"], "'vlad:core' is not a layer of the network"),
])
def test_layer_options_checked_before_any_compute(env, monkeypatch, option, value, message):
    dbT, dbV, out = env
    computed = []
    monkeypatch.setattr(sys.modules["matnet.add_layers"], "addLayers", lambda *a: computed.append(a))
    monkeypatch.setattr(session_files, "serial_feats", lambda *a: computed.append(a))
    with pytest.raises(ValueError, match=message) as e:
        tw.trainWeakly(dbT, dbV, sessionID="badlayer", nEpoch=1, **{**OPTS, option: value})
    assert "conv1, pool1" in str(e.value) and "max:core, postL2" in str(e.value)  # the allowed names
    assert computed == [] and not list(out.glob("badlayer*"))


def test_infinite_frequencies_and_no_rank_sample_as_matlab(env):
    # MATLAB accepts saveFrequency/compFeatsFrequency = inf (never within an epoch) and
    # nTestRankSample = 0 (its testNet's rank loss is then the mean of nothing: NaN)
    dbT, dbV, out = env
    tw.trainWeakly(dbT, dbV, sessionID="inf", nEpoch=2, test0=False,
                   **{**OPTS, "saveFrequency": math.inf, "compFeatsFrequency": math.inf, "nTestRankSample": 0,
                      "lrDownFreq": 1})
    ck = load_checkpoint(out / "inf_latest.mat")
    assert ck["obj"]["train"]["loss"].size == 2 * (dbT.numQueries // OPTS["batchSize"])
    assert ck["obj"]["val"]["recall"].shape == (4, 2)
    assert np.isnan(ck["obj"]["val"]["rankloss"]).all() and np.isnan(ck["obj"]["train"]["rankloss"]).all()
    assert not list(out.glob("*_cache_*.bin"))  # no mid-epoch save happened


def test_jitter_runs_and_image_loader_resizes(env):
    dbT, dbV, out = env
    loader = TrainingImageLoader(np.full((1, 1, 3), 10, np.float32), 2)
    ims = loader([dbT.dbPath + dbT.dbImageFns[0]], shorter=16)
    assert ims.shape == (1, 16, 20, 3)  # the shorter side (32) scaled to 16, aspect kept
    raw = loader([dbT.dbPath + dbT.dbImageFns[0]])
    assert raw.shape == (1, 32, 40, 3) and raw.min() >= -10
    tw.trainWeakly(dbT, dbV, sessionID="jit", nEpoch=1, jitterFlip=True, jitterScale=[0.75, 1.0], test0=False,
                   **OPTS)
    ck = load_checkpoint(out / "jit_latest.mat")
    assert ck["obj"]["train"]["loss"].size == dbT.numQueries // OPTS["batchSize"]
    assert ck["opts"].jitterScale == [0.75, 1.0] and ck["opts"].jitterFlip is True


def _setup_batch(env):
    dbT, dbV, out = env
    from matnet.pretrained import loadNet
    from matnet.nettools import netPrepareForTrain
    net = netPrepareForTrain(simple_head(loadNet("tiny", "conv3"), None, dbT), 1)
    calls = []
    real = TrainingImageLoader(net.meta["normalization"]["averageImage"], 1)

    def loader(fns, shorter=None):
        calls.append(len(fns))
        return real(fns, shorter)
    g = torch.Generator().manual_seed(0)
    qf = torch.nn.functional.normalize(torch.randn(dbT.numQueries, 32, generator=g), dim=1)
    dbf = torch.nn.functional.normalize(torch.randn(dbT.numImages, 32, generator=g), dim=1)
    aux = {"negCache": [np.zeros(0, np.int64) for _ in range(dbT.numQueries)]}
    return dbT, net, loader, calls, qf, dbf, aux


def test_batch_skips_queries_without_positives_and_without_violations(env, monkeypatch):
    dbT, net, loader, calls, qf, dbf, aux = _setup_batch(env)
    before = _weights(net)
    o = TrainWeaklyOpts(**{**OPTS, "backPropToLayer": 1})
    rng = np.random.default_rng(0)

    def session(opts):  # what the batch step reads of trainWeakly's session
        return SimpleNamespace(net=net, dbTrain=dbT, qFeat=qf, dbFeat=dbf, auxData=aux, opts=opts, loader=loader,
                               origImS=32, device=torch.device("cpu"))
    # no potential positives: skipped, nothing loaded, no loss recorded (batch loss 0), no update
    monkeypatch.setattr(dbT, "nontrivialPosQ", lambda q: np.zeros(0, np.int64))
    assert train_batch(session(o), [0, 1], 0.1, rng) == 0.0
    assert calls == [] and all(c.size == 0 for c in aux["negCache"])
    monkeypatch.undo()
    # negative margin: nothing violates -> loss 0, no image loaded, caches filled, no update
    o2 = o.replace(margin=-10.0)
    assert train_batch(session(o2), [0, 1], 0.1, rng) == 0.0
    assert calls == [] and len(aux["negCache"][0]) == o.nNegCache and len(aux["negCache"][1]) == o.nNegCache
    for x, y in zip(before, _weights(net)):
        assert torch.equal(x, y)
    # huge margin: every query violates -> 1 + 1 + nNegCap images per query, weights move
    o3 = o.replace(margin=10.0)
    loss = train_batch(session(o3), [0, 1], 0.1, rng)
    assert calls == [2 + o.nNegCap] * 2 and loss > 0
    assert any(not torch.equal(x, y) for x, y in zip(before, _weights(net)))


def test_concurrent_checkpoint0_writers_do_not_corrupt(env):
    import threading
    from converters.bin_features import read_bin
    from matnet.pretrained import loadNet
    dbT, _, out = env
    out.mkdir(parents=True, exist_ok=True)
    nets = [simple_head(loadNet("tiny", "conv3"), None, dbT) for _ in range(2)]
    o = TrainWeaklyOpts(**OPTS)
    fn = out / "shared_q.bin"
    ts = [threading.Thread(target=session_files.checkpoint0_feats, args=(n, dbT.qPath, dbT.qImageFns, str(fn), o)) for n in nets]
    [t.start() for t in ts]
    [t.join() for t in ts]
    f = read_bin(fn, n=dbT.numQueries)
    assert f.shape == (dbT.numQueries, 32) and np.all(np.isfinite(f))
    assert not [p for p in out.iterdir() if ".partial" in p.name] and not list(out.glob(TEMPORARIES))


def test_nNegChoice_above_a_querys_negatives_refused_before_any_feature(env, monkeypatch):
    """Issue 24 case 20 / issue 22: query 0 of the synthetic train set has 14 negatives,
    others up to 19; nNegChoice=15 hung in sampling (or failed after the features) with a
    message not naming the option.  Now: refused before any feature is computed."""
    dbTrain, dbVal, out = env

    def no_features(*a, **k):
        raise AssertionError("features were computed before the options were checked")
    monkeypatch.setattr(tw, "checkpoint0_feats", no_features)
    monkeypatch.setattr(session_files, "serial_feats", no_features)
    with pytest.raises(ValueError) as e:
        tw.trainWeakly(dbTrain, dbVal, **{**OPTS, "nNegChoice": 15, "nEpoch": 1})
    msg = str(e.value)
    assert "nNegChoice=15" in msg and "query 0" in msg and "14 negatives" in msg and "at most 14" in msg
    assert dbTrain.name in msg
