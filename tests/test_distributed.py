"""trainWeakly and serialAllFeats under torch.distributed (gloo, CPU): 2 processes
against 1 on the synthetic set, resume, sharding, and the failures (ranks with other
options, a rank that dies or hangs).  The multi-process runs go through
tests/helpers/ddp_worker.py, launched by torchrun or as plain processes."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.ddp_worker import use_simple_head
from converters.atomic_file import GLOB as TEMPORARIES
from matnet import distributed
from matnet.datasets.local_paths import env_name
from matnet.synthetic import dbSynthetic, make_places, save_tiny_net
from matnet.train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
WORKER = str(Path(__file__).parent / "helpers" / "ddp_worker.py")
OPTS = dict(netID="tiny", layerName="conv3", batchSize=3, nNegChoice=8, nNegCap=3, nNegCache=4, margin=0.5,
            learningRate=0.05, useGPU=False, numThreads=1, saveFrequency=8, compFeatsFrequency=8,
            nTestSample=1000, nTestRankSample=12, recallNs=[1, 2, 5, 10], backPropToLayer="conv2",
            jitterFlip=True)


# ----- sharding (no processes)

@pytest.mark.parametrize("n,unit,world", [(10, 1, 3), (24, 8, 2), (21, 8, 2), (5, 8, 2), (0, 4, 3),
                                          (17, 2, 4), (3, 1, 5)])
def test_shard_tiles_in_order_and_evenly(n, unit, world):
    parts = [distributed.shard(n, unit, r, world) for r in range(world)]
    assert [i for p in parts for i in p] == list(range(n))  # contiguous, in rank order, all of them
    blocks = [-(-len(p) // unit) for p in parts]
    assert max(blocks) - min(blocks) <= 1 and blocks == sorted(blocks, reverse=True)
    assert all(p.start % unit == 0 for p in parts if len(p))  # whole blocks: batches as one process
    assert distributed.shard(n, unit) == range(n)  # no process group: everything


def test_single_process_helpers_are_identities():
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert distributed.all_gather_rows(a, "x") is a
    assert distributed.all_gather_json({"k": 1}, "x") == [{"k": 1}]
    assert distributed.on_rank0(lambda: 5, "x") == 5
    distributed.check_same("anything", "x")
    assert distributed.options_hash({"a": 1, "b": [2]}) == distributed.options_hash({"b": [2], "a": 1})
    assert distributed.options_hash({"a": 1}) != distributed.options_hash({"a": 2})


# ----- multi-process runs

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    make_places(root / "data", numImages=24, numQueries=12, imSize=(32, 40), splits=("train", "val"))
    save_tiny_net(root / "pre", [120, 120, 120], imSize=(32, 40))
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(cfg: dict, tmp: Path, n=2, torchrun=False, timeout_s=30, limit=240):
    """Run tests/helpers/ddp_worker.py on ``n`` ranks; [(returncode, stderr)] per process."""
    fn = tmp / f"cfg{_free_port()}.json"
    fn.write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", distributed.TIMEOUT_ENV: str(timeout_s)}
    if torchrun:
        p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                            WORKER, str(fn)], env=env, capture_output=True, text=True, timeout=limit)
        return [(p.returncode, p.stderr)]
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, WORKER, str(fn)], stderr=subprocess.PIPE, text=True,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(n),
                                   "LOCAL_WORLD_SIZE": str(n), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
             for r in range(n)]
    out = []
    for p in procs:  # once a rank failed, the others get a few seconds, then are killed
        try:
            _, err = p.communicate(timeout=limit if all(rc == 0 for rc, _ in out) else 5)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            err += "\n<killed by the test: hung>"
        out.append((p.returncode, err))
    return out


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """One process in this one; then two processes under torchrun: a full run, a run
    stopped mid-epoch 2 and resumed, epoch 2 of a one-process run, extraction."""
    from matnet.extract import serialAllFeats
    from converters.network import load_net
    from matnet.train import train_weakly as tw
    out = tmp_path_factory.mktemp("ddp_out")
    dbT, dbV = dbSynthetic("train", data / "data"), dbSynthetic("val", data / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(env_name("pretrainedCNNs"), str(data / "pre"))
        mp.setenv(env_name("outPrefix"), str(out) + "/")
        use_simple_head(mp.setattr)
        tw.trainWeakly(dbT, dbV, sessionID="one", nEpoch=2, **OPTS)
        tw.trainWeakly(dbT, dbV, sessionID="split", nEpoch=1, **OPTS)
        net = load_net(data / "pre" / "matnet-tiny.mat")  # the file `matnet features` reads
        serialAllFeats(net, dbT.dbPath, dbT.dbImageFns, out / "one_db.bin", batchSize=1, useGPU=False)
        serialAllFeats(net, dbT.qPath, dbT.qImageFns, out / "one_q.bin", batchSize=3, useGPU=False)
    cfg = {"data": str(data), "out": str(out), "opts": OPTS, "phases": [
        {"kind": "train", "kw": {"sessionID": "two", "nEpoch": 2}},
        {"kind": "train", "kw": {"sessionID": "kill", "nEpoch": 2}, "stop_at": 4 + 4},  # epoch 2, batch 4
        {"kind": "train", "kw": {"sessionID": "kill", "nEpoch": 2, "startEpoch": 2}},
        {"kind": "train", "kw": {"sessionID": "split", "nEpoch": 2, "startEpoch": 2}},
        {"kind": "train", "kw": {"sessionID": "two2one", "nEpoch": 2}, "stop_at": 4 + 4},  # resumed by 1 below
        # matnet features: 24 images in chunks of 8: shards 16 + 8; 12 queries in chunks of 24: 12 + nothing
        {"kind": "extract", "which": "db", "out": str(out / "two_db.bin"), "batchSize": 1},
        {"kind": "extract", "which": "q", "out": str(out / "two_q.bin"), "batchSize": 3},
    ]}
    res = _launch(cfg, out, torchrun=True)
    assert res[0][0] == 0, res[0][1][-3000:]
    return out


def _rel(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).abs().max() / max(float(a.abs().max()), 1e-30)) if a.numel() else 0.0


def _compare(a, b, tol):
    """Checkpoints a and b: weights, momentum and losses within ``tol`` relative (0: equal
    bits); negative caches and recalls exactly."""
    la, lb = a["net"].layers, b["net"].layers
    assert [l.name for l in la] == [l.name for l in lb]
    trained = 0
    for x, y in zip(la, lb):
        for w, v in zip(x.weights, y.weights):
            assert _rel(w.detach(), v.detach()) <= tol, x.name
        for m, n in zip(x.momentum or [], y.momentum or []):
            assert _rel(m, n) <= tol, x.name
            trained += bool(torch.count_nonzero(m))
    assert trained >= 2  # the momentum really moved (conv2, conv3)
    assert a["obj"]["train"]["loss"].shape == b["obj"]["train"]["loss"].shape
    assert _rel(a["obj"]["train"]["loss"], b["obj"]["train"]["loss"]) <= tol
    for part in ("train", "val"):
        np.testing.assert_array_equal(a["obj"][part]["recall"], b["obj"][part]["recall"])
        assert _rel(a["obj"][part]["rankloss"], b["obj"][part]["rankloss"]) <= tol
    assert len(a["auxData"]["negCache"]) == len(b["auxData"]["negCache"])
    for x, y in zip(a["auxData"]["negCache"], b["auxData"]["negCache"]):
        np.testing.assert_array_equal(x, y)


def test_two_processes_train_as_one(runs):
    one, two = load_checkpoint(runs / "one_ep000002_latest.mat"), load_checkpoint(runs / "two_ep000002_latest.mat")
    assert one["obj"]["train"]["loss"].size == 2 * 4 and np.all(one["obj"]["train"]["loss"] > 0)
    _compare(one, two, 1e-5)
    np.testing.assert_array_equal(one["obj"]["pretrain"]["val"]["recall"], two["obj"]["pretrain"]["val"]["recall"])


def test_resume_under_two_processes_equals_uninterrupted(runs):
    two, kill = load_checkpoint(runs / "two_latest.mat"), load_checkpoint(runs / "kill_latest.mat")
    _compare(two, kill, 0)  # same ranks, same reductions: the same bits


def test_checkpoint_of_one_process_resumes_on_two(runs):
    _compare(load_checkpoint(runs / "one_latest.mat"), load_checkpoint(runs / "split_latest.mat"), 1e-5)


def test_mid_epoch_save_of_two_processes_resumes_in_one(runs, data, monkeypatch):
    from matnet.train import train_weakly as tw
    assert load_checkpoint(runs / "two2one_latest.mat")["auxData"]["resumeBatch"] == 2  # stopped in epoch 2
    monkeypatch.setenv(env_name("pretrainedCNNs"), str(data / "pre"))
    monkeypatch.setenv(env_name("outPrefix"), str(runs) + "/")
    use_simple_head(monkeypatch.setattr)
    dbT, dbV = dbSynthetic("train", data / "data"), dbSynthetic("val", data / "data")
    tw.trainWeakly(dbT, dbV, sessionID="two2one", nEpoch=2, startEpoch=2, **OPTS)
    _compare(load_checkpoint(runs / "one_latest.mat"), load_checkpoint(runs / "two2one_latest.mat"), 1e-5)
    _compare(load_checkpoint(runs / "two_latest.mat"), load_checkpoint(runs / "two2one_latest.mat"), 1e-5)


def test_extraction_shards_merge_to_the_same_bytes(runs):
    for which in ("db", "q"):
        assert (runs / f"two_{which}.bin").read_bytes() == (runs / f"one_{which}.bin").read_bytes()
    assert not [p.name for p in runs.iterdir() if ".shard" in p.name or ".partial" in p.name]
    assert not list(runs.glob(TEMPORARIES))


def test_only_rank0_writes_the_log(runs):
    lines = (runs / "two.log").read_text().splitlines()
    # 4 batches per epoch: one progress line per epoch (after the last batch), from one writer
    assert sum(" batch 4/4 loss " in l for l in lines) == 2
    assert sum("testNet: two ep000002_latest_val: recall@1/5/10 " in l for l in lines) == 1
    assert "2 process(es)" in lines[0] and lines[-1].endswith("done")


def test_ranks_with_different_options_are_refused(data, tmp_path):
    cfg = {"data": str(data), "out": str(tmp_path), "opts": OPTS, "rank_kw": {"1": {"learningRate": 0.01}},
           "phases": [{"kind": "train", "kw": {"sessionID": "bad", "nEpoch": 1}}]}
    res = _launch(cfg, tmp_path)
    for rc, err in res:
        assert rc == 3 and "ranks [1] differ from rank 0 in trainWeakly options" in err, err[-2000:]
    assert not list(tmp_path.glob("bad_*.mat"))


@pytest.mark.parametrize("how", ["exit", "hang"])
def test_a_dead_or_hung_rank_stops_the_others_with_a_clear_error(data, tmp_path, how):
    cfg = {"data": str(data), "out": str(tmp_path), "opts": {**OPTS, "test0": False},
           "phases": [{"kind": "train", "kw": {"sessionID": "dies", "nEpoch": 1}, "die_at": 2, "rank": 1,
                       "how": how}]}
    (rc0, err0), (rc1, _) = _launch(cfg, tmp_path, timeout_s=4, limit=60)
    assert rc0 == 3 and "WORKER-ERROR DistributedError" in err0 and "another rank died, stopped answering" \
        in err0, err0[-2000:]
    assert "<killed by the test" not in err0
    assert rc1 == 7 if how == "exit" else rc1 != 0


def test_a_killed_rank_extraction_resumes_its_shard(runs, data, tmp_path):
    """Rank 0 dies after the first of its shard's two chunks; the rerun resumes its shard
    at image 8, keeps rank 1's finished shard, and merges the bytes one process writes."""
    out = tmp_path / "db.bin"
    phase = {"kind": "extract", "which": "db", "out": str(out), "batchSize": 1}
    cfg = {"data": str(data), "out": str(tmp_path), "phases": [{**phase, "rank": 0, "die_after": 1}]}
    (rc0, _), (rc1, err1) = _launch(cfg, tmp_path, timeout_s=10, limit=60)
    assert rc0 == 7 and rc1 == 3 and "shards done' failed: another rank died" in err1, err1[-2000:]
    assert not out.exists()
    assert json.loads(Path(f"{out}.shard0of2.partial.json").read_text())["done"] == 8
    ref = (runs / "one_db.bin").read_bytes()  # 24 images: rank 0's shard is images 0-15, rank 1's 16-23
    assert Path(f"{out}.shard1of2").read_bytes() == ref[len(ref) * 2 // 3:] and Path(f"{out}.shard1of2.json").is_file()
    (rc0, err0), (rc1, _) = _launch({**cfg, "phases": [phase]}, tmp_path)
    assert rc0 == rc1 == 0, err0[-2000:]
    assert out.read_bytes() == ref
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("db.bin")) == ["db.bin"]


def test_nccl_init_binds_the_rank_gpu(monkeypatch):
    """Under torchrun with GPUs: NCCL on the GPU of LOCAL_RANK, given to init_process_group
    as device_id where torch takes one (barriers then know the device); a LOCAL_RANK
    beyond the visible GPUs is refused naming both (not a CUDA error later)."""
    import torch.distributed as dist
    calls = {}
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.setdefault("set_device", d))
    real = dist.init_process_group

    def init(backend, timeout=None, device_id=None, **kw):
        calls.update(backend=backend, device_id=device_id)
    init.__signature__ = __import__("inspect").signature(real)
    monkeypatch.setattr(dist, "init_process_group", init)
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    for k, v in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    assert distributed.init_from_env(useGPU=True)
    assert calls["backend"] == "nccl" and calls["set_device"] == 1
    if "device_id" in __import__("inspect").signature(real).parameters:
        assert calls["device_id"] == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(distributed.DistributedError, match=r"LOCAL_RANK 2 but this machine shows 2 GPU\(s\)"):
        distributed.init_from_env(useGPU=True)
    calls.clear()
    distributed.init_from_env(useGPU=False)
    assert calls == {"backend": "gloo", "device_id": None}
    monkeypatch.setenv("LOCAL_RANK", "0")
    distributed.init_from_env(useGPU=None)  # `matnet features --device auto` on a GPU machine
    assert calls["backend"] == "nccl" and calls["set_device"] == 0
