"""``matnet selftest --gpu``: one command that proves the GPU path exact and measures it.

Six steps, in order, each timed and guarded (a failure is recorded with its message and
the next step runs):

1. **environment** -- torch / CUDA / cuDNN versions, the device and its memory, faiss-gpu;
2. **exactness** -- VGG16-NetVLAD(K=64)-WPCA-4096 in the released layout (random weights
   of realistic scales, MatConvNet's averageImage): exact descriptors on the device
   against the CPU (<= 1e-5 relative), TF32 off while they run and a TF32 forward really
   different, one trainWeakly step on both (weights <= 1e-5), fast against exact (cosine
   >= 0.999 per descriptor);
3. **extraction** -- images/s from device tensors and through serialAllFeats on JPEG
   files, exact and fast, batch sizes 1, 8, 32, 64 (stopping at the first out of memory),
   peak memory;
4. **training** -- tuples/s of trainWeakly's inner loop at the released settings, cache
   refresh images/s, peak memory, the Pitts30k epoch it implies;
5. **search** -- exact kNN on a 1M x 4096 database in memory and streamed under a memory
   cap; getClusters' k-means through faiss-gpu;
6. **torchrun** -- the DDP training step and sharded extraction (NCCL on every GPU; gloo on
   the CPU) against one process.

Then the targets (one H100, full size: fast >= 1500 images/s, exact >= 250, file
pipeline >= 0.8x in memory, a fast Pitts30k epoch < 30 min) and, for each one missed, a
torch.profiler summary (top 10 ops) of its workload.  ``gpu_report.json`` and
``gpu_report.md`` go to the output folder.  ``--small`` runs every step of the same code
on a VGG16-shaped network with fewer channels at 64 x 80 (the CI run on the CPU).
docs/benchmarks.md ("GPU suite") describes every figure.
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .record import Record

STEPS = ("environment", "exactness", "extraction", "training", "search", "torchrun")
TARGETS = {"fast": 1500.0, "exact": 250.0, "files": 0.8, "epoch_min": 30.0}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def run_suite(out, device: str = "cuda", small: bool = False, log=print) -> Record:
    """Run the six steps on ``device`` ('cuda' or 'cpu'), write the reports under ``out``;
    returns the :class:`~matnet.gpu_suite.record.Record`."""
    import torch

    from . import steps
    from .record import Record
    from .workspace import FULL, SMALL, Workspace
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", torch.cuda.current_device())
        name = torch.cuda.get_device_name(dev)
    else:
        name = cpu_name()
    sizes = SMALL if small else FULL
    rec = Record(dev.type, name, sizes.name)
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="matnet_gpu_suite_") as tmp:
        ws = Workspace(rec, dev, sizes, Path(tmp), max(1, os.cpu_count() or 1))
        for name_ in STEPS:
            with rec.step(name_) as entry:
                getattr(steps, name_)(ws)
            torch.set_num_threads(threads)  # serialAllFeats and trainWeakly set their own
            log(f"{name_:<12} {entry['seconds']:7.1f} s  {'ok' if entry['ok'] else 'FAILED: ' + entry['error']}")
        with rec.step("targets") as entry:
            _targets(ws)
            _profiles(ws, log)
        log(f"{'targets':<12} {entry['seconds']:7.1f} s  {'ok' if entry['ok'] else 'FAILED: ' + entry['error']}")
    rec.environment["suite seconds"] = round(time.perf_counter() - t0, 1)
    js, md = rec.write(Path(out))
    log(f"total        {rec.environment['suite seconds']:7.1f} s; checks: "
        f"{sum(c['status'] == 'pass' for c in rec.checks)} pass, {sum(c['status'] == 'FAIL' for c in rec.checks)} "
        f"fail, {sum(c['status'] == 'n/a' for c in rec.checks)} n/a; {js} and {md}")
    return rec


def _best(rec, prefix: str):
    """(value, batch size) of the largest figure whose id starts with ``prefix``."""
    best = None
    for f in rec.figures:
        if f["id"].startswith(prefix) and isinstance(f["value"], float):
            if best is None or f["value"] > best[0]:
                best = (f["value"], f["batch_size"])
    return best


def _targets(ws) -> None:
    rec = ws.record
    where = "" if (ws.cuda and rec.peak["model"].startswith("H100") and ws.sizes.name == "full") else \
        f"set for one H100 at full size; this run: {rec.device_name}, {ws.sizes.name} size"
    for p in ("fast", "exact"):
        b = _best(rec, f"extract.memory.{p}.")
        rec.target(f"target.{p}", f"{p} extraction >= {TARGETS[p]:g} images/s (device tensors, best batch size)",
                   b and b[0], "images/s", None if b is None else b[0] >= TARGETS[p],
                   (f"batch size {b[1]}; " if b else "") + where)
    ratios = []
    for p in ("fast", "exact"):
        b = _best(rec, f"extract.memory.{p}.")
        if b is not None:
            r = rec.get(f"extract.files_ratio.{p}.bs{b[1]}")
            if r is not None:
                ratios.append((r, p, b[1]))
    worst = min(ratios) if ratios else None
    rec.target("target.files", f"file pipeline >= {TARGETS['files']:g}x device tensors (each precision's best "
               "batch size; the worse of the two)", worst and worst[0], "x",
               None if worst is None else worst[0] >= TARGETS["files"],
               (f"{worst[1]}, batch size {worst[2]}; " if worst else "") + where)
    e = rec.get("train.pitts30k_epoch.fast")
    rec.target("target.epoch", f"Pitts30k epoch in fast mode < {TARGETS['epoch_min']:g} min (estimated)", e, "min",
               None if e is None else e < TARGETS["epoch_min"], where)


def _profiles(ws, log) -> None:
    """A torch.profiler summary (top 10 ops by self time on the device, else the CPU) of
    the workload of each missed target."""
    from .profile import profile_workload
    for t in ws.record.targets:
        if t["status"] == "missed":
            try:
                ws.record.profiles.append(profile_workload(ws, t["id"]))
            except Exception as e:  # a profile is a help, not a result
                ws.record.profiles.append({"what": t["id"], "table": f"profiling failed: {type(e).__name__}: {e}",
                                           "top": []})
