"""torch.profiler summaries of the suite's workloads, for the targets a run misses."""
from __future__ import annotations

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from ..precision import forward


def _self_time(e, cuda: bool) -> float:
    if cuda:
        for name in ("self_device_time_total", "self_cuda_time_total"):
            v = getattr(e, name, None)
            if v:
                return float(v)
        return 0.0
    return float(e.self_cpu_time_total)


def _top_ops(prof, cuda: bool) -> tuple[str, list]:
    """The ten ops of ``prof`` with the most self time (device time when recorded) as a
    table and as records."""
    avg = prof.key_averages()
    on_device = cuda and any(_self_time(e, True) for e in avg)  # no device times without CUPTI: the CPU's
    events = sorted(avg, key=lambda e: _self_time(e, on_device), reverse=True)[:10]
    total = sum(_self_time(e, on_device) for e in avg) or 1.0
    top = [{"op": e.key, "self_ms": _self_time(e, on_device) / 1e3, "share": _self_time(e, on_device) / total,
            "calls": e.count} for e in events]
    clock = "device" if on_device else "CPU"
    table = "\n".join([f"{'op':<50} {'self ' + clock + ' ms':>14} {'share':>7} {'calls':>7}"] +
                      [f"{t['op'][:50]:<50} {t['self_ms']:14.2f} {100 * t['share']:6.1f}% {t['calls']:7d}" for t in top])
    return table, top


def profile_workload(ws, target: str) -> dict:
    """{'what', 'table' (text), 'top': [{'op', 'self_ms', 'calls'}]} of a few iterations
    of the workload behind ``target`` ('target.fast' / 'target.exact': the network on
    device tensors; 'target.files': serialAllFeats on JPEG files; 'target.epoch': a
    trainWeakly batch in fast mode)."""
    from .steps import train_opts, quiet
    rec, s = ws.record, ws.sizes
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ws.cuda else [])
    precision = "exact" if target == "target.exact" else "fast"
    best = max((f for f in rec.figures if f["id"].startswith(f"extract.memory.{precision}.")
                and isinstance(f["value"], float)), key=lambda f: f["value"], default=None)
    bs = best["batch_size"] if best else s.batch_sizes[0]
    if target in ("target.fast", "target.exact"):
        net = ws.net_copy().eval()
        x = ws.device_batch(bs).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            forward(net, x, precision)
            ws.sync()
            with profile(activities=acts) as prof:
                for _ in range(s.min_iters):
                    forward(net, x, precision)
                ws.sync()
        what = f"network on device tensors, {precision}, batch size {bs}, {s.min_iters} batch(es)"
    elif target == "target.files":
        from ..extract import serialAllFeats
        net = ws.net_copy().eval()
        root, fns = ws.jpegs
        fns = fns[:max(4 * bs, 8)]
        with quiet(), profile(activities=acts) as prof:
            serialAllFeats(net, root, fns, ws.tmp / "profile.bin", useGPU=ws.cuda, batchSize=bs, precision=precision)
            ws.sync()
        (ws.tmp / "profile.bin").unlink(missing_ok=True)
        what = f"serialAllFeats on {len(fns)} JPEG files, {precision}, batch size {bs}"
    elif target == "target.epoch":
        from ..train.batch import TupleTrainer
        from .steps import random_cache
        tr = TupleTrainer(ws.net_copy("cpu"), ws.street, train_opts(ws, "fast"), device=ws.device)
        try:
            tr.set_cache(*random_cache(ws.street, s.pca_dim))
            rng = np.random.default_rng(2)
            with quiet():
                tr.batch([0, 1, 2, 3], 1e-2, rng)
                with profile(activities=acts) as prof:
                    tr.batch([4, 5, 6, 7], 1e-2, rng)
                    ws.sync()
        finally:
            tr.close()
        what = "one trainWeakly batch (4 tuples of 12 images), fast"
    else:
        raise ValueError(f"no workload to profile for {target!r}")
    table, top = _top_ops(prof, ws.cuda)
    ws.free_device_memory()
    return {"what": f"{target}: {what}", "table": table, "top": top}
