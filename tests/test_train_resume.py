"""trainWeakly killed (SIGKILL, in a subprocess) at chosen stages, then resumed: the
result equals an uninterrupted run bit for bit and nothing temporary is left behind;
moved run folders and options given at resume."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import train_driver
from matnet.datasets.local_paths import env_name
from matnet.pick_best import pickBestNet
from matnet.synthetic import dbSynthetic, make_places, save_tiny_net
from matnet.train import session_files
from matnet.train import train_weakly as tw
from matnet.train.checkpoint import load_checkpoint

OPTS = dict(netID="tiny", layerName="conv3", batchSize=2, nNegChoice=8, nNegCap=3, nNegCache=4, margin=0.5,
            learningRate=0.05, useGPU=False, numThreads=2, saveFrequency=4, compFeatsFrequency=6,
            nTestSample=1000, nTestRankSample=12, recallNs=[1, 2, 5, 10], backPropToLayer="conv2", test0=False)
LEFTOVER = re.compile(r".*(\.matnet-tmp|\.partial|\.partial\.json|\.lock|_(train|val)_(q|db)\.bin)$")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    make_places(root / "data", numImages=24, numQueries=12, imSize=(32, 40), splits=("train", "val"))
    save_tiny_net(root / "pre", [120, 120, 120], imSize=(32, 40))
    return root


@pytest.fixture(scope="module")
def ref(data):
    """An uninterrupted 2-epoch run (session 'ref') in its own folder."""
    with pytest.MonkeyPatch.context() as mp:
        _environment(mp, data)
        out = data / "ref"
        tw.trainWeakly(*_dbs(data), sessionID="ref", nEpoch=2, outPrefix=f"{out}/", **OPTS)
    return out


@pytest.fixture
def env(data, monkeypatch):
    _environment(monkeypatch, data)
    return data


def _environment(mp, data):
    mp.setenv(env_name("pretrainedCNNs"), str(data / "pre"))
    mp.setitem(sys.modules, "matnet.add_layers", train_driver.install_head())


def _dbs(data):
    return dbSynthetic("train", data / "data"), dbSynthetic("val", data / "data")


def _killed_run(data, out, kill, **opts):
    """trainWeakly in a subprocess that SIGKILLs itself at the kill[1]-th fsync of a file named *kill[0]*."""
    spec = {"data": str(data / "data"), "pre": str(data / "pre"), "out": f"{out}/", "kill": kill,
            "opts": {**OPTS, "outPrefix": f"{out}/", **opts}}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), str(Path(__file__).parent)])}
    r = subprocess.run([sys.executable, str(Path(__file__).parent / "helpers" / "train_driver.py"), json.dumps(spec)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]


def _assert_same_run(a_fn, b_fn):
    """Same weights, momentum, losses, recalls, rank losses, negative caches, bit for bit."""
    a, b = load_checkpoint(a_fn), load_checkpoint(b_fn)
    for la, lb in zip(a["net"].layers, b["net"].layers):
        for x, y in zip(list(la.weights) + list(la.momentum or []), list(lb.weights) + list(lb.momentum or [])):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
    for part in ("train", "val"):
        for k in ("loss", "recall", "rankloss"):
            np.testing.assert_array_equal(a["obj"][part][k], b["obj"][part][k], err_msg=f"obj.{part}.{k}")
    for x, y in zip(a["auxData"]["negCache"], b["auxData"]["negCache"]):
        np.testing.assert_array_equal(x, y)


def _leftovers(out):
    return sorted(p.name for p in Path(out).iterdir() if LEFTOVER.fullmatch(p.name))


def test_killed_in_a_mid_epoch_save_then_in_the_epoch_tests(env, ref):
    data, out = env, env / "kill"
    dbT, dbV = _dbs(data)
    # 1. mid-epoch saves before batches 2, 4, 6 (saveFrequency 4, batchSize 2), the cache refreshed
    # before batch 3: killed while writing the second save's cache (fsyncs: b2 q, b2 db, b4 q, b4 db),
    # so the last checkpoint is batch 2's while batch 4's query cache was already written
    _killed_run(data, out, ["kill_ep000001_cache", 4], sessionID="kill", nEpoch=2)
    assert load_checkpoint(out / "kill_latest.mat", what=("auxData",))["auxData"]["resumeBatch"] == 1
    # 2. resumed from batch 2 on batch 2's cache, killed after epoch 1's end-of-epoch save, while
    # computing its validation features
    _killed_run(data, out, ["kill_ep000001_latest_val_q.bin.partial", 1], sessionID="kill", nEpoch=2,
                startEpoch=1)
    saved = load_checkpoint(out / "kill_latest.mat")
    assert saved["auxData"]["epochTestsPending"] == 1 and saved["obj"]["val"]["recall"].shape == (4, 0)
    # 3. resumed at the next epoch (as a MATLAB user would): epoch 1's tests are run first
    tw.trainWeakly(dbT, dbV, sessionID="kill", nEpoch=2, startEpoch=2, outPrefix=f"{out}/", **OPTS)
    _assert_same_run(ref / "ref_ep000001_latest.mat", out / "kill_ep000001_latest.mat")
    _assert_same_run(ref / "ref_latest.mat", out / "kill_latest.mat")
    assert load_checkpoint(out / "kill_latest.mat")["obj"]["val"]["recall"].shape == (4, 2)
    assert (pickBestNet("kill", 5, verbose=0, outPrefix=f"{out}/")[0]
            == pickBestNet("ref", 5, verbose=0, outPrefix=f"{ref}/")[0])
    assert _leftovers(out) == []


def test_killed_in_checkpoint0_extraction_resumes_where_it_stopped(env, monkeypatch):
    data, out = env, env / "c0"
    dbT, dbV = _dbs(data)
    opts = {**OPTS, "computeBatchSize": 1}
    q0 = f"{dbT.name}_tiny_conv3_vlad_preL2_intra_q.bin"
    # 12 queries, computeBatchSize 1: two chunks of 8 and 4 images; killed while writing the second
    # (fsyncs: chunk 1's rows, its .partial.json, chunk 2's rows)
    _killed_run(data, out, [q0 + ".partial", 3], sessionID="c0", nEpoch=1, computeBatchSize=1)
    assert not (out / q0).exists() and (out / (q0 + ".partial")).exists()
    from matnet import feature_files
    real, starts = feature_files.PartialFeatures.resume, {}

    def resume(self):
        starts[self.data.name] = real(self)
        return starts[self.data.name]
    monkeypatch.setattr(feature_files.PartialFeatures, "resume", resume)
    tw.trainWeakly(dbT, dbV, sessionID="c0", nEpoch=1, outPrefix=f"{out}/", **opts)
    assert starts[q0 + ".partial"] == 8  # not image 0
    # the same bytes as one uninterrupted extraction
    from matnet.pretrained import loadNet
    net = train_driver.simple_head(loadNet("tiny", "conv3"), None, dbT)
    session_files.serial_feats(net, dbT.qPath, dbT.qImageFns, str(data / "q0_uninterrupted.bin"), tw.TrainWeaklyOpts(**opts))
    assert (out / q0).read_bytes() == (data / "q0_uninterrupted.bin").read_bytes()
    assert load_checkpoint(out / "c0_latest.mat", what=("obj",))["obj"]["val"]["recall"].shape == (4, 1)
    assert _leftovers(out) == []


def test_moved_run_folder_and_ignored_options(env, ref):
    data = env
    dbT, dbV = _dbs(data)
    moved = data / "moved"
    shutil.copytree(ref, moved)
    for p in moved.glob("ref_ep000002*"):
        p.unlink()
    shutil.copyfile(moved / "ref_ep000001_latest.mat", moved / "ref_latest.mat")
    before = {p.name: p.stat().st_mtime_ns for p in ref.iterdir()}
    given = {**OPTS, "learningRate": 0.01, "margin": 0.25, "numThreads": 1, "nNegCap": 3.0}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tw.trainWeakly(dbT, dbV, sessionID="ref", nEpoch=2, startEpoch=2, outPrefix=f"{moved}/", **given)
    ignored = [str(w.message) for w in caught if "ignored" in str(w.message)]
    assert len(ignored) == 1
    assert "learningRate (saved 0.05, given 0.01)" in ignored[0] and "margin (saved 0.5, given 0.25)" in ignored[0]
    assert "numThreads" not in ignored[0] and "nNegCap" not in ignored[0]  # honoured / equal to the saved
    # the copy was continued where it was found; the original folder was not touched
    assert {p.name: p.stat().st_mtime_ns for p in ref.iterdir()} == before
    _assert_same_run(ref / "ref_ep000002_latest.mat", moved / "ref_ep000002_latest.mat")
    assert load_checkpoint(moved / "ref_latest.mat", what=("opts",))["opts"].outPrefix == f"{moved}/"
