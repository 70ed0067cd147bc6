"""trainWeakly and serialAllFeats on 1 process against N under torchrun (gloo on the
CPU, NCCL with --gpu), on the synthetic streets and the tiny base network with the
NetVLAD head: wall time of each job (process start-up excluded) and the share of it
spent in collectives (communication plus waiting for slower ranks), measured in the
same run.  On a 2-core machine 2 processes have no more compute than 1: parity is
the expectation, the overhead is what this measures.

    python benchmarks/bench_ddp.py [--nproc 2] [--images 160] [--queries 80] [--epochs 1] [--gpu]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OPTS = dict(netID="tiny", layerName="conv3", method="vlad_preL2_intra", batchSize=4, nNegChoice=60, nNegCap=6,
            nNegCache=6, margin=0.1, learningRate=1e-3, saveFrequency=200, compFeatsFrequency=200,
            computeBatchSize=20, nTestSample=1000, nTestRankSample=100, test0=True)


def _paths(root: Path) -> None:
    for field, sub in (("MATNET_DSET_SPEC_DIR", "data/datasets"), ("MATNET_PRETRAINED_CNNS", "pretrained"),
                       ("MATNET_INIT_DATA", "initdata"), ("MATNET_OUT_PREFIX", "output")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        os.environ[field] = str(root / sub) + "/"


def worker(cfg_fn: str) -> None:
    """One rank: time trainWeakly, then serialAllFeats of the database images."""
    cfg = json.loads(Path(cfg_fn).read_text())
    root = Path(cfg["root"])
    _paths(root)
    import torch.distributed as dist
    from matnet import distributed
    from matnet.extract import serialAllFeats
    from matnet.synthetic import dbSynthetic
    from matnet.train.train_weakly import trainWeakly
    distributed.init_from_env(cfg["gpu"])
    if cfg.get("threads"):  # a one-process baseline restricted to fewer cores
        distributed.cpu_share = lambda: cfg["threads"]
    dbT, dbV = dbSynthetic("train", root / "data"), dbSynthetic("val", root / "data")
    tag = f"n{distributed.world_size()}t{distributed.cpu_share()}"
    distributed.barrier("start")
    c0, t0 = distributed.comm_stats()["seconds"], time.perf_counter()
    trainWeakly(dbT, dbV, sessionID=tag, checkpoint0suffix=tag, nEpoch=cfg["epochs"], useGPU=cfg["gpu"],
                numThreads=distributed.cpu_share(),
                **OPTS)
    distributed.barrier("trained")
    c1, t1 = distributed.comm_stats()["seconds"], time.perf_counter()
    from converters.network import load_net
    net = load_net(f"{os.environ['MATNET_OUT_PREFIX']}{tag}_latest.mat")
    serialAllFeats(net, dbT.dbPath, dbT.dbImageFns, f"{os.environ['MATNET_OUT_PREFIX']}{tag}_db.bin",
                   useGPU=cfg["gpu"], batchSize=OPTS["computeBatchSize"])
    distributed.barrier("extracted")
    c2, t2 = distributed.comm_stats()["seconds"], time.perf_counter()
    res = {"train": [t1 - t0, c1 - c0], "extract": [t2 - t1, c2 - c1]}
    every = distributed.all_gather_json(res, "results")
    if distributed.is_rank0():
        Path(cfg["result"]).write_text(json.dumps(every))
    if dist.is_initialized():
        dist.destroy_process_group()


def _launch(n: int, cfg: dict, tmp: Path, threads=None) -> list:
    cfg = {**cfg, "result": str(tmp / f"result{n}_{threads}.json"), "threads": threads}
    fn = tmp / f"cfg{n}_{threads}.json"
    fn.write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if n == 1:
        cmd = [sys.executable, __file__, "--worker", str(fn)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", __file__,
               "--worker", str(fn)]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(Path(cfg["result"]).read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--nproc", type=int, default=2, help="processes of the distributed run (default 2)")
    ap.add_argument("--images", type=int, default=160, help="database images per street (default 160)")
    ap.add_argument("--queries", type=int, default=80, help="queries per street (default 80)")
    ap.add_argument("--epochs", type=int, default=1, help="training epochs (default 1)")
    ap.add_argument("--gpu", action="store_true", help="useGPU (NCCL between the processes)")
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker)
    sys.path.insert(0, str(REPO))
    import numpy as np
    from matnet.add_layers import addLayers
    from matnet.images import imread_uint8
    from matnet.pretrained import loadNet
    from matnet.synthetic import dbSynthetic, make_places, save_tiny_net
    from matnet.train.opts import TrainWeaklyOpts
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        _paths(root)
        make_places(root / "data", numImages=a.images, numQueries=a.queries, imSize=(64, 80), splits=("train", "val"))
        dbT = dbSynthetic("train", root / "data")
        mean = np.mean([imread_uint8(dbT.dbPath + f).reshape(-1, 3).mean(0) for f in dbT.dbImageFns[:20]], axis=0)
        save_tiny_net(root / "pretrained", mean, imSize=(64, 80))
        addLayers(loadNet("tiny", "conv3"), TrainWeaklyOpts(**OPTS), dbT)  # clusters computed once, for both runs
        cfg = {"root": str(root), "epochs": a.epochs, "gpu": a.gpu}
        cores = os.cpu_count() or 1
        one = _launch(1, cfg, root)[0]
        one_share = _launch(1, cfg, root, threads=max(1, cores // a.nproc))[0] if not a.gpu else None
        many = _launch(a.nproc, cfg, root)
    n = a.nproc
    print(f"synthetic: {a.images} db images + {a.queries} queries per street, {a.epochs} epoch(s), "
          f"{cores} CPU cores, {'GPU' if a.gpu else 'CPU'}")
    for job in ("train", "extract"):
        w1 = one[job][0]
        wn = max(r[job][0] for r in many)
        shares = "/".join(f"{100 * r[job][1] / max(r[job][0], 1e-9):.0f}%" for r in many)
        line = f"{job:8s} 1 process ({cores} threads) {w1:7.2f} s"
        if one_share:
            ws = one_share[job][0]
            line += f" | 1 process ({max(1, cores // n)} threads) {ws:7.2f} s"
        line += f" | {n} processes {wn:7.2f} s: {n}/1 = {wn / w1:.2f}"
        if one_share:
            line += f", {n}/1 at equal threads per process = {wn / ws:.2f}"
        print(f"{line}; time in collectives per rank {shares}")
    print("(rank 0's share is the communication; the other ranks' also hold their wait while rank 0 alone "
          "saves checkpoints and computes the recalls)")


if __name__ == "__main__":
    main()
