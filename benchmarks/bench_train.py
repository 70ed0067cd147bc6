"""Training throughput of trainWeakly on the synthetic dataset (CPU by default).

Measures, in the same run:
* training: tuples/s and images/s of trainWeakly's per-batch step (mining on the
  cache, image loading, forward, MATLAB dz/dy, backward, MatConvNet SGD), against a
  baseline step that gets the same gradients from autograd of the hinge loss over
  every negative (no violation pre-filter, all nNegCap*10 mined negatives forwarded);
* cache refresh: images/s of computeAllFeats (serialAllFeats on queries + database);
* mining: mine_query on a Pitts30k-sized cache (10000 x 4096) vs a plain per-candidate loop.

    python benchmarks/bench_train.py [--images 200] [--queries 100] [--batches 10] [--threads 2]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from matnet.add_layers import addLayers
    from matnet.commands.demo import dataset_mean_colour, set_demo_paths
    from matnet.pretrained import loadNet
    from matnet.nettools import netPrepareForTrain
    from matnet.images import TrainingImageLoader
    from matnet.synthetic import dbSynthetic, make_places, save_tiny_net
    from matnet.train.batch import train_batch
    from matnet.train import train_weakly as tw
    from matnet.train.mining import mine_query
    from matnet.train.opts import TrainWeaklyOpts
    from matnet.train.sgd import set_backprop_depth

    root = Path(a.workdir or tempfile.mkdtemp(prefix="bench_train_"))
    set_demo_paths(root)
    make_places(root / "data", numImages=a.images, numQueries=a.queries, imSize=(64, 80), splits=("train",))
    db = dbSynthetic("train", root / "data")
    save_tiny_net(root / "pretrained", dataset_mean_colour(db), imSize=(64, 80))
    opts = TrainWeaklyOpts(netID="tiny", layerName="conv3", useGPU=False, numThreads=a.threads, nNegChoice=60,
                           nNegCap=6, nNegCache=6, margin=0.1, sessionID="bench", outPrefix=str(root / "output") + "/")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        net = netPrepareForTrain(addLayers(loadNet("tiny", "conv3"), opts, db), 1)
    set_backprop_depth(net, 1)

    # --- cache refresh
    t = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        qFeat, dbFeat = tw.computeAllFeats(db, net, opts, "bench")
    t_cache = time.perf_counter() - t
    nIm = db.numImages + db.numQueries
    qf, dbf = torch.from_numpy(qFeat), torch.from_numpy(dbFeat)

    # --- training steps: trainWeakly's vs the autograd baseline
    loader = TrainingImageLoader(net.meta["normalization"]["averageImage"], a.threads)
    aux = {"negCache": [np.zeros(0, np.int64) for _ in range(db.numQueries)]}
    rng = np.random.default_rng(0)
    order = rng.permutation(db.numQueries)
    nb = min(a.batches, db.numQueries // opts.batchSize)
    counted = {"tuples": 0, "images": 0}
    real_loader = loader.__call__

    def counting(fns, shorter=None):
        counted["tuples"] += 1
        counted["images"] += len(fns)
        return real_loader(fns, shorter)
    session = SimpleNamespace(net=net, dbTrain=db, qFeat=qf, dbFeat=dbf, auxData=aux, opts=opts, loader=counting,
                              origImS=64, device=torch.device("cpu"))
    t = time.perf_counter()
    for b in range(nb):
        qIDs = order[b * opts.batchSize:(b + 1) * opts.batchSize]
        with contextlib.redirect_stdout(io.StringIO()):
            train_batch(session, qIDs, 1e-3, rng)
    t_ours = time.perf_counter() - t
    ours_tuples, ours_images = counted["tuples"], counted["images"]

    def baseline_batch(qIDs):
        losses = []
        for qID in (int(q) for q in qIDs):
            pos = np.asarray(db.nontrivialPosQ(qID)).reshape(-1)
            if not pos.size:
                continue
            m = mine_query(qf[qID], dbf, pos, aux["negCache"][qID], db.sampleNegsQ(qID, opts.nNegChoice, rng=rng),
                          10 * opts.nNegCap, opts.nNegCache, 1e9)  # every candidate kept
            fns = [db.qPath + db.qImageFns[qID]] + [db.dbPath + db.dbImageFns[i] for i in [m.posID, *m.negIDs]]
            x = torch.from_numpy(np.ascontiguousarray(real_loader(fns).transpose(0, 3, 1, 2)))
            f = net(x).reshape(len(fns), -1)
            dpos = ((f[1] - f[0]) ** 2).sum()
            dneg = ((f[2:] - f[0]) ** 2).sum(1)
            loss = torch.clamp(dpos + opts.margin - dneg, min=0).sum()
            loss.backward()
            losses.append(len(fns))
        net.zero_grad()
        return losses
    t = time.perf_counter()
    base_images = 0
    for b in range(nb):
        base_images += sum(baseline_batch(order[b * opts.batchSize:(b + 1) * opts.batchSize]))
    t_base = time.perf_counter() - t
    nq = nb * opts.batchSize

    # --- mining on a Pitts30k-sized cache
    g = np.random.default_rng(1)
    bigDb = torch.from_numpy(g.standard_normal((10000, 4096), dtype=np.float32))
    q = torch.from_numpy(g.standard_normal(4096, dtype=np.float32))
    cands = g.choice(10000, 1000, replace=False)
    reps = 20
    t = time.perf_counter()
    for _ in range(reps):
        mine_query(q, bigDb, [0, 1, 2], cands[:10], cands, 10, 10, 0.1)
    t_mine = (time.perf_counter() - t) / reps
    t = time.perf_counter()
    d = [float(((bigDb[int(i)] - q) ** 2).sum()) for i in sorted(set(cands.tolist()))]
    sorted(range(len(d)), key=lambda i: d[i])[:100]  # the per-candidate sort being timed
    t_loop = time.perf_counter() - t

    print(f"threads={a.threads}  synthetic street {db.numImages} db / {db.numQueries} queries, 64x80 images, "
          f"tiny net + NetVLAD (K=64, D=2048)")
    print(f"training (trainWeakly step): {nq / t_ours:7.2f} queries/s, {ours_tuples / t_ours:7.2f} tuples/s, "
          f"{ours_images / t_ours:7.1f} images/s (fwd+bwd)  [{nq} queries, {ours_tuples} with violations]")
    print(f"training (autograd baseline, all mined negatives): {nq / t_base:7.2f} queries/s, "
          f"{base_images / t_base:7.1f} images/s  -> trainWeakly step is {t_base / t_ours:.2f}x faster per query")
    print(f"cache refresh (computeAllFeats): {nIm / t_cache:7.1f} images/s ({nIm} images, {t_cache:.2f} s)")
    print(f"mining, 10000x4096 cache, 1000 candidates: mine_query {1e3 * t_mine:.2f} ms vs per-candidate loop "
          f"{1e3 * t_loop:.1f} ms -> {t_loop / t_mine:.1f}x")


if __name__ == "__main__":
    main()
