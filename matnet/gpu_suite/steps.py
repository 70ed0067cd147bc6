"""The suite's six steps (see :mod:`matnet.gpu_suite`).  Each takes the
:class:`~matnet.gpu_suite.workspace.Workspace` and adds figures and checks to its record."""
from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..precision import forward, head_start, tf32, tf32_state
from .flops import PUBLISHED_GFLOP
from .workspace import PITTS30K_IMAGES, PITTS30K_QUERIES, PITTS30K_REFRESHES

EXACT_REL = 1e-5     # device against CPU: descriptors and weights, relative
FAST_COSINE = 0.999  # fast against exact, per descriptor
PRECISIONS = ("exact", "fast")


@contextlib.contextmanager
def quiet():
    """The library's progress bars and prints out of the suite's output."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _rel(a, b) -> float:
    """max |a - b| / max |b| (0 for two empty or equal tensors)."""
    a, b = torch.as_tensor(a).double().cpu(), torch.as_tensor(b).double().cpu()
    if a.numel() == 0:
        return 0.0
    return float((a - b).abs().max() / max(float(b.abs().max()), 1e-30))


def _row_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest per-row ||a - b|| / ||b|| (descriptor against descriptor)."""
    a, b = a.double().cpu(), b.double().cpu()
    return float(((a - b).norm(dim=1) / b.norm(dim=1).clamp_min(1e-30)).max())


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.double().cpu(), b.double().cpu()
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)


def is_oom(e: BaseException) -> bool:
    return isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(e).lower()


# ----- 1 environment

def environment(ws) -> None:
    rec = ws.record
    env = {"matnet": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "cuda (torch build)": torch.version.cuda or "none", "cpu cores": os.cpu_count(),
           "suite size": ws.sizes.name, "device": str(ws.device)}
    if ws.cuda:
        p = torch.cuda.get_device_properties(ws.device)
        env.update({"cudnn": torch.backends.cudnn.version(), "device name": p.name,
                    "compute capability": f"{p.major}.{p.minor}", "GPUs visible": torch.cuda.device_count(),
                    "cudnn.benchmark": torch.backends.cudnn.benchmark,
                    "TF32 allowed outside matnet (matmul, conv)": tuple(tf32_state().values())})
        memory = p.total_memory / 2**30
    else:
        env["device name"] = ws.record.device_name
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        import faiss
        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        env["faiss"] = f"{faiss.__version__} ({'GPU build, ' + str(gpus) + ' GPUs' if gpus else 'no GPU'})"
    except ImportError:
        env["faiss"] = "not installed"
    rec.environment.update(env)
    rec.figure("env.memory", "device memory" if ws.cuda else "host memory", memory, "GiB")


# ----- 2 exactness

def exactness(ws) -> None:
    rec, s = ws.record, ws.sizes
    flops = ws.flops["total"]
    rec.figure("model.gflop_per_image", f"network FLOPs per {s.image[0]}x{s.image[1]} image (counted per layer)",
               flops / 1e9, "GFLOP")
    full = s.name == "full"
    rec.check("model.gflop_vs_published", f"FLOPs per image against the published {PUBLISHED_GFLOP} GFLOP",
              flops / 1e9, f"{PUBLISHED_GFLOP} +- 0.5%",
              abs(flops / 1e9 - PUBLISHED_GFLOP) <= 0.005 * PUBLISHED_GFLOP if full else None, "GFLOP",
              note=None if full else "the small network is not the published one")
    # descriptors: CPU exact against device exact, TF32 and fast
    x_cpu = ws.device_batch(s.n_exact).cpu().contiguous(memory_format=torch.channels_last)
    trunk = {}

    def keep(where):  # conv5_3's output (the trunk's), kept by a hook during the forward
        return lambda m, a, y: trunk.__setitem__(where, y.detach().reshape(len(y), -1).cpu())
    net_cpu = ws.net_copy("cpu")
    last = net_cpu.layers[head_start(net_cpu) - 1]
    hook = last.register_forward_hook(keep("cpu"))
    with torch.no_grad():
        ref = forward(net_cpu, x_cpu, "exact").reshape(len(x_cpu), -1)
    hook.remove()
    del net_cpu
    net = ws.net_copy()
    x = x_cpu.to(ws.device)
    seen = []
    first_conv = next(layer for layer in net.layers if layer.type == "conv")
    hooks = [first_conv.register_forward_pre_hook(lambda m, a: seen.append(tuple(tf32_state().values()))),
             net.layers[head_start(net) - 1].register_forward_hook(keep("device"))]
    with torch.no_grad():
        exact = forward(net, x, "exact").reshape(len(x), -1).cpu()
        for h in hooks:
            h.remove()
        with tf32(True):
            tf = net(x).reshape(len(x), -1).cpu()
        fast = forward(net, x, "fast").reshape(len(x), -1).cpu()
    rel = _row_rel(exact, ref)
    rec.check("exact.descriptors_rel", f"exact descriptors, {ws.device.type} against CPU (worst of {len(x)} images, "
              "norm(d - d_cpu) / norm(d_cpu))", rel, f"<= {EXACT_REL}", rel <= EXACT_REL, precision="exact",
              batch_size=len(x))
    rec.figure("exact.trunk_rel", f"exact trunk output ({last.name}), {ws.device.type} against CPU (worst image, "
               "norm(d - d_cpu) / norm(d_cpu))", _row_rel(trunk["device"], trunk["cpu"]), "", len(x), "exact")
    rec.check("exact.tf32_off", "TF32 off (matmul, conv) while the exact forward runs", float(any(any(v) for v in seen)),
              "0 (off)", (not any(any(v) for v in seen)) if ws.cuda else None, precision="exact",
              note=None if ws.cuda else "n/a on the CPU")
    rel_tf = _row_rel(tf, ref)
    rec.check("exact.tf32_differs", "a TF32 forward differs from the CPU more than the exact one (TF32 is real "
              "and off in exact)", rel_tf, "> exact's and > 1e-5", (rel_tf > max(rel, EXACT_REL)) if ws.cuda else None,
              note=None if ws.cuda else "n/a on the CPU")
    cos = _cosines(fast, exact)
    rec.check("fast.cosine_min", "fast against exact, cosine per descriptor (worst)", float(cos.min()),
              f">= {FAST_COSINE}", bool(cos.min() >= FAST_COSINE), precision="fast", batch_size=len(x))
    rec.figure("fast.cosine_mean", "fast against exact, mean cosine", float(cos.mean()), "", precision="fast")
    del net, x
    ws.free_device_memory()
    _exact_training_step(ws)


def train_opts(ws, precision="exact", **kw):
    from ..train.opts import TrainWeaklyOpts
    db = ws.street
    # every sampled negative must leave room for positives (about 10 at 5 m spacing, 25 m)
    base = dict(batchSize=4, nNegCap=10, nNegCache=10, nNegChoice=min(1000, db.numImages - 20), margin=10.0,
                backPropToLayer="conv5_1", learningRate=1e-2, useGPU=ws.cuda, numThreads=ws.threads,
                precision=precision, outPrefix=str(ws.tmp / "train") + os.sep, sessionID="gpusuite")
    base.update(kw)
    os.makedirs(base["outPrefix"], exist_ok=True)
    return TrainWeaklyOpts(**base)


def random_cache(db, D: int, seed: int = 0):
    """A feature cache to mine on: unit rows (the mining is what it drives; the tuples'
    forward/backward are the network's)."""
    g = np.random.default_rng(seed)
    q = g.standard_normal((db.numQueries, D)).astype(np.float32)
    d = g.standard_normal((db.numImages, D)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True), d / np.linalg.norm(d, axis=1, keepdims=True)


def _trainable(net) -> list[tuple[str, torch.Tensor]]:
    return [(f"{l.name}[{j}]", w.detach().cpu().clone()) for l in net.layers for j, w in enumerate(l.weights)
            if w.requires_grad]


def _exact_training_step(ws) -> None:
    """One trainWeakly batch (1 query, 2 negatives: 4 images) on the CPU and the device
    from the same weights and cache: weights after the SGD step."""
    from ..train.batch import TupleTrainer
    rec, db = ws.record, ws.street
    opts = train_opts(ws, batchSize=1, nNegCap=2, nNegCache=2)
    D = ws.sizes.pca_dim
    cache = random_cache(db, D)
    before = {n: w for n, w in _trainable(_prepared(ws, opts))}
    out = {}
    for where in ("cpu", ws.device):
        tr = TupleTrainer(ws.net_copy("cpu"), db, opts, device=where)
        try:
            tr.set_cache(*cache)
            with quiet():
                loss = tr.batch([0], opts.learningRate, np.random.default_rng(5))
            out[str(where)] = (loss, dict(_trainable(tr.net)))
        finally:
            tr.close()
    (lc, wc), (ld, wd) = out["cpu"], out[str(ws.device)]
    w_rel = max(_rel(wd[n], wc[n]) for n in wc)
    upd_rel = max(_rel(wd[n] - before[n], wc[n] - before[n]) for n in wc)
    moved = max(_rel(wc[n], before[n]) for n in wc)
    rec.check("exact.train_weights_rel", f"weights after one trainWeakly step (tuple forward/backward to conv5_1 + "
              f"SGD), {ws.device.type} against CPU", w_rel, f"<= {EXACT_REL}", w_rel <= EXACT_REL and moved > 0,
              precision="exact", batch_size=1)
    rec.figure("exact.train_update_rel", "that step's update (w_after - w_before), device against CPU, relative",
               upd_rel, "", precision="exact")
    rec.figure("exact.train_loss_rel", "that step's loss, device against CPU, relative",
               abs(ld - lc) / max(abs(lc), 1e-30), "", precision="exact")


def _prepared(ws, opts):
    """The network as TupleTrainer prepares it (for the weights before a step)."""
    from ..nettools import netPrepareForTrain, whichLayer
    from ..train.sgd import set_backprop_depth
    net = ws.net_copy("cpu")
    bp = whichLayer(net, opts.backPropToLayer) + 1
    net = netPrepareForTrain(net, bp)
    set_backprop_depth(net, bp)
    return net


# ----- 3 extraction throughput

def _rate_in_memory(ws, net, bs: int, precision: str) -> float:
    """Images/s of the network alone on device tensors (serialAllFeats' layout)."""
    x = ws.device_batch(bs).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for _ in range(ws.sizes.warmup):
            forward(net, x, precision)
        ws.sync()
        n, t0 = 0, time.perf_counter()
        while True:
            forward(net, x, precision)
            n += 1
            if n % ws.sizes.min_iters == 0:  # the device waited for every few batches only
                ws.sync()
                if time.perf_counter() - t0 >= ws.sizes.min_seconds:
                    break
    return n * bs / (time.perf_counter() - t0)


def _rate_files(ws, net, bs: int, precision: str) -> float:
    from ..extract import serialAllFeats
    root, fns = ws.jpegs
    fns = fns[:ws.sizes.n_jpegs_bs1 if bs == 1 else ws.sizes.n_jpegs]
    out = ws.tmp / f"feats_bs{bs}_{precision}.bin"
    with quiet():
        _, t = ws.timed(serialAllFeats, net, root, fns, out, useGPU=ws.cuda, batchSize=bs, precision=precision)
    out.unlink(missing_ok=True)
    return len(fns) / t


def _rate_or_oom(ws, measure, bs: int, precision: str, where: str):
    """``measure()``'s rate; None after recording the batch size that ran out of memory
    (any other error propagates to the step's guard)."""
    try:
        return measure()
    except Exception as e:
        if not is_oom(e):
            raise
        ws.free_device_memory()
        ws.record.figure(f"extract.oom.{precision}", f"first batch size out of memory{where} (larger ones not run)",
                         bs, "images", bs, precision)
        return None


def extraction(ws) -> None:
    rec, s = ws.record, ws.sizes
    fl = ws.flops["total"]
    ws.jpegs  # written before any timing
    net = ws.net_copy().eval()
    for precision in PRECISIONS:
        for bs in s.batch_sizes:
            ws.reset_peak()
            r = _rate_or_oom(ws, lambda: _rate_in_memory(ws, net, bs, precision), bs, precision, "")
            if r is None:
                break
            rec.figure(f"extract.memory.{precision}.bs{bs}", "extraction from device tensors", r, "images/s", bs,
                       precision, fl)
            rec.figure(f"extract.memory_peak.{precision}.bs{bs}", "extraction peak memory", ws.peak_mib(),
                       ws.memory_unit, bs, precision)
            f = _rate_or_oom(ws, lambda: _rate_files(ws, net, bs, precision), bs, precision, " in serialAllFeats")
            if f is None:
                break
            rec.figure(f"extract.files.{precision}.bs{bs}", "serialAllFeats on JPEG files", f, "images/s", bs,
                       precision, fl)
            rec.figure(f"extract.files_ratio.{precision}.bs{bs}", "file pipeline / device tensors", f / r, "x", bs,
                       precision)
    net = None  # the copy freed before the device memory is (not del: the lambdas above read it)
    ws.free_device_memory()


# ----- 4 training

def training(ws) -> None:
    from ..train.batch import TupleTrainer
    rec, s, db = ws.record, ws.sizes, ws.street
    fl = ws.flops
    nets = _prepared(ws, train_opts(ws))
    bp = next(i for i, l in enumerate(nets.layers) if l.weights and l.weights[0].requires_grad)
    from .flops import network_flops
    tr_flops = network_flops(nets, *s.image, backprop_from=bp)["trainable"]
    del nets
    per_tuple = 12 * (fl["total"] + 2 * tr_flops)  # forward, and backward of the trained layers (2x forward)
    for precision in PRECISIONS:
        opts = train_opts(ws, precision)
        tr = TupleTrainer(ws.net_copy("cpu"), db, opts, device=ws.device)
        try:
            with quiet():
                if s.warmup:
                    tr.refresh_cache("refresh_warmup")
                _, t = ws.timed(tr.refresh_cache, "refresh")
            n_im = db.numImages + db.numQueries
            refresh = n_im / t
            rec.figure(f"train.refresh.{precision}", "cache refresh (computeAllFeats: queries + database)", refresh,
                       "images/s", opts.computeBatchSize, precision, fl["total"])
            rng = np.random.default_rng(1)
            order = rng.permutation(db.numQueries)
            with quiet():
                for _ in range(s.warmup):
                    tr.batch(order[:4], opts.learningRate, rng)
            ws.reset_peak()
            nb = min(s.train_batches, db.numQueries // 4)
            t0 = time.perf_counter()
            with quiet():
                for b in range(nb):
                    tr.batch(order[4 * b:4 * b + 4], opts.learningRate, rng)
            ws.sync()
            t = time.perf_counter() - t0
        finally:
            tr.close()
        tps = 4 * nb / t
        rec.figure(f"train.tuples.{precision}", "trainWeakly's inner loop (batchSize 4, 10 negatives, backprop to "
                   "conv5_1; mining, image reading, forward, backward, SGD)", tps, "tuples/s", 4, precision, per_tuple)
        rec.figure(f"train.peak.{precision}", "training peak memory", ws.peak_mib(), ws.memory_unit, 4, precision)
        epoch = PITTS30K_QUERIES / tps + PITTS30K_REFRESHES * PITTS30K_IMAGES / refresh
        rec.figure(f"train.pitts30k_epoch.{precision}",
                   f"Pitts30k epoch estimate ({PITTS30K_QUERIES} tuples + {PITTS30K_REFRESHES} refreshes of "
                   f"{PITTS30K_IMAGES} images)", epoch / 60, "min", 4, precision)
    ws.free_device_memory()


# ----- 5 search

def _search_data(ws):
    """(database on the device, its .bin file, queries on the device): unit rows in
    chunks from a seeded generator on the device; queries are database rows plus noise."""
    s = ws.sizes
    N, D = s.search_rows, s.search_dim
    path = ws.tmp / "search_db.bin"
    db = torch.empty((N, D), dtype=torch.float32, device=ws.device)
    g = torch.Generator(device=ws.device).manual_seed(0)
    step = max(1, (1 << 26) // D)
    with open(path, "wb") as f:
        for a in range(0, N, step):
            c = torch.randn((min(step, N - a), D), generator=g, device=ws.device)
            c /= c.norm(dim=1, keepdim=True)
            db[a:a + len(c)] = c
            f.write(np.ascontiguousarray(c.cpu().numpy(), "<f4").data)  # no bytes copy of 256 MB
    ids = torch.randperm(N, generator=g, device=ws.device)[:s.search_queries]
    q = db[ids] + 0.05 * torch.randn((len(ids), D), generator=g, device=ws.device) / D ** 0.5
    return db, path, q / q.norm(dim=1, keepdim=True)


def search(ws) -> None:
    from converters.bin_features import MappedBin
    from ..get_clusters import kmeans
    from ..search import knn
    from ..search.memory import parse_bytes
    rec, s = ws.record, ws.sizes
    db, path, q = _search_data(ws)
    nQ, k = len(q), s.search_k
    flop_q = 2.0 * s.search_rows * s.search_dim
    try:
        knn(q[:8], db, k, ws.device)  # warm-up
        (ids_m, ds_m), t = ws.timed(knn, q, db, k, ws.device)
        rec.figure("search.memory", f"exact kNN (k={k}), {s.search_rows} x {s.search_dim} database in memory",
                   nQ / t, "queries/s", nQ, "exact", flop_q)
        del db
        ws.free_device_memory()
        mapped = MappedBin(path, D=s.search_dim)
        (ids_s, _), t = ws.timed(knn, q, mapped, k, ws.device, s.search_cap)
        rec.figure("search.streamed", f"the same, streamed from a .bin under memoryCap {s.search_cap}", nQ / t,
                   "queries/s", nQ, "exact", flop_q)
        same = float((ids_s == ids_m).all(axis=1).mean())
        rec.check("search.streamed_equals_memory", "streamed ids = in-memory ids (share of queries)", same, "1",
                  same == 1.0)
        if ws.cuda:  # a few queries on the CPU, streamed within the same cap
            ids_c, _ = knn(q[:8].cpu(), mapped, k, torch.device("cpu"), parse_bytes(s.search_cap))
            agree = float((ids_c == ids_m[:8]).mean())
        else:
            agree = 1.0
        rec.check("search.device_equals_cpu", "device ids = CPU ids (8 queries, share of entries)", agree,
                  ">= 0.99 (near-ties may swap)", agree >= 0.99 if ws.cuda else None,
                  note=None if ws.cuda else "n/a on the CPU")
    finally:
        path.unlink(missing_ok=True)
    # getClusters' k-means
    n, d, K = s.kmeans
    g = np.random.default_rng(0)
    centres = g.standard_normal((K, d)).astype(np.float32)
    x = (centres[g.integers(0, K, n)] + 0.5 * g.standard_normal((n, d)).astype(np.float32)).T
    gpus = 0
    try:
        import faiss
        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    except ImportError:
        pass
    if ws.cuda and not gpus:
        rec.figure("search.kmeans", f"getClusters' k-means ({n} x {d}, K={K}, 100 iterations)", None, "s",
                   note="skipped: faiss has no GPU here (faiss-gpu not installed or sees no GPU)")
        return
    clsts, t = ws.timed(kmeans, np.ascontiguousarray(x), K, ws.cuda)
    rec.figure("search.kmeans", f"getClusters' k-means ({n} x {d}, K={K}, 100 iterations)", t, "s",
               note=f"faiss on {'the GPU' if ws.cuda else 'the CPU'}")
    rec.check("search.kmeans_finite", "k-means centres finite, D x K", float(np.isfinite(clsts).all()), "1",
              bool(np.isfinite(clsts).all() and clsts.shape == (d, K)))


# ----- 6 torchrun

def torchrun(ws) -> None:
    """trainWeakly's step and sharded serialAllFeats under torchrun on every GPU (NCCL; gloo
    and one process on the CPU) against one process here: weights and features."""
    from converters.bin_features import read_bin
    from converters.network import load_net, save_net
    from ..extract import serialAllFeats
    from ..train.batch import TupleTrainer
    rec, s, db = ws.record, ws.sizes, ws.street
    work = ws.tmp / "ddp"
    work.mkdir(parents=True, exist_ok=True)
    netFn = work / "net.safetensors"
    save_net(ws.net, netFn)
    opts = train_opts(ws, nNegCap=4, nNegCache=4)
    q, d = random_cache(db, s.pca_dim, seed=3)
    np.save(work / "q.npy", q)
    np.save(work / "db.npy", d)
    root, fns = ws.jpegs
    cfg = {"net": str(netFn), "street": str(Path(db.dbPath).parent), "cache": [str(work / "q.npy"),
           str(work / "db.npy")], "opts": opts.to_dict(), "qIDs": [0, 1, 2, 3], "lr": opts.learningRate,
           "seed": 11, "root": root, "fns": fns[:s.ddp_images], "batchSize": 8, "cuda": ws.cuda,
           "out": str(work)}
    (work / "cfg.json").write_text(json.dumps(cfg))
    # one process, here
    tr = TupleTrainer(load_net(netFn), db, opts, device=ws.device)
    try:
        tr.set_cache(q, d)
        with quiet():
            tr.batch(cfg["qIDs"], cfg["lr"], np.random.default_rng(cfg["seed"]))
        ref_w = dict(_trainable(tr.net))
    finally:
        tr.close()
    with quiet():
        serialAllFeats(load_net(netFn), root, cfg["fns"], work / "one.bin", useGPU=ws.cuda, batchSize=cfg["batchSize"])
    nproc = torch.cuda.device_count() if ws.cuda else 1
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]) + os.pathsep
           + os.environ.get("PYTHONPATH", ""), "MATNET_DIST_TIMEOUT": "300",
           "OMP_NUM_THREADS": str(max(1, torch.get_num_threads() // nproc))}  # one process: this one's threads
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(Path(__file__).with_name("ddp_worker.py")), str(work / "cfg.json")]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420)
    t = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(f"torchrun exited with status {p.returncode}: {(p.stderr or p.stdout)[-2000:]}")
    res = json.loads((work / "result.json").read_text())
    rec.environment["torchrun"] = f"{res['world_size']} process(es), backend {res['backend']}"
    rec.figure("ddp.world_size", f"torchrun processes (backend {res['backend']})", res["world_size"], "processes")
    rec.figure("ddp.seconds", "torchrun job (start-up, one step, sharded extraction)", t, "s")
    ddp_w = {n: w for n, w in zip(res["names"], _load_tensors(work / "weights.pt"))}
    w_rel = max(_rel(ddp_w[n], ref_w[n]) for n in ref_w)
    rec.check("ddp.weights_rel", "weights after one trainWeakly step under torchrun against one process", w_rel,
              f"<= {EXACT_REL}", w_rel <= EXACT_REL, precision="exact", batch_size=4)
    one = read_bin(work / "one.bin", n=len(cfg["fns"]))
    two = read_bin(work / "ddp.bin", n=len(cfg["fns"]))
    f_rel = _rel(two, one)
    rec.check("ddp.features_rel", "sharded serialAllFeats under torchrun against one process", f_rel,
              f"<= {EXACT_REL}", f_rel <= EXACT_REL, precision="exact", batch_size=cfg["batchSize"])


def _load_tensors(fn):
    return torch.load(fn, weights_only=True)
