"""torch.distributed for matnet's long jobs: rank and world, contiguous shards, gathers,
the gradient all-reduce, checks that every rank runs the same job, and timeouts.

Nothing here changes a single-process run: without an initialised process group of
more than one rank every helper is the identity (``world_size() == 1``).  Under
``torchrun`` the commands call :func:`init_from_env`; Python code that initialises
``torch.distributed`` itself gets the same behaviour.  Collectives go through
:func:`_collective`, so a rank that dies or stops answering makes the others fail with
a :class:`DistributedError` saying so (after at most ``MATNET_DIST_TIMEOUT`` seconds,
default 1800) instead of hanging.  Objects travel as JSON (never pickle).
"""
from __future__ import annotations

import datetime
import hashlib
import inspect
import json
import os
import time
from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as dist

from .device import uses_gpu

TIMEOUT_ENV = "MATNET_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0


class DistributedError(RuntimeError):
    """A collective failed: another rank died, stopped answering, or runs another job."""


def timeout_s() -> float:
    """Seconds a collective waits for the other ranks (``$MATNET_DIST_TIMEOUT``, default 1800)."""
    v = os.environ.get(TIMEOUT_ENV, "")
    try:
        return float(v) if v else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={v!r}: expected a number of seconds") from None


def world_size() -> int:
    """Number of ranks (1 without an initialised process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without an initialised process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_distributed() -> bool:
    """True with an initialised process group of more than one rank."""
    return world_size() > 1


def is_rank0() -> bool:
    return rank() == 0


def local_world_size() -> int:
    """Ranks on this machine (torchrun's ``LOCAL_WORLD_SIZE``; 1 outside torchrun)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))) if is_distributed() else 1


def cpu_share() -> int:
    """CPU cores for this rank: all of them in one process, an equal share when
    several ranks run on one machine."""
    return max(1, (os.cpu_count() or 1) // local_world_size())


def init_from_env(useGPU: bool | None = False) -> bool:
    """Join the job torchrun started (``WORLD_SIZE`` etc. in the environment): NCCL when
    ``useGPU`` (None: auto) and CUDA exist (device = ``LOCAL_RANK``), gloo otherwise; collectives
    time out after :func:`timeout_s`.  Without torchrun's variables, or when a process
    group already exists, nothing happens.  Returns :func:`is_distributed`."""
    if "WORLD_SIZE" not in os.environ or not dist.is_available() or dist.is_initialized():
        return is_distributed()
    gpu = uses_gpu(useGPU)  # None: auto, as the commands' --device auto
    kw = {}
    if gpu:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise DistributedError(f"rank {os.environ.get('RANK', '?')}: LOCAL_RANK {local} but this machine shows "
                                   f"{torch.cuda.device_count()} GPU(s) (CUDA_VISIBLE_DEVICES="
                                   f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): start at most one "
                                   f"process per GPU (torchrun --nproc_per_node)")
        torch.cuda.set_device(local)
        if "device_id" in inspect.signature(dist.init_process_group).parameters:
            kw["device_id"] = torch.device("cuda", local)  # NCCL bound to this rank's GPU (barriers too)
    dist.init_process_group("nccl" if gpu else "gloo", timeout=datetime.timedelta(seconds=timeout_s()), **kw)
    return is_distributed()


@contextmanager
def process_group(useGPU: bool = False):
    """For a command: join torchrun's job (:func:`init_from_env`) for the block and
    leave it afterwards (a process that exits inside a live group aborts)."""
    joined = not (dist.is_available() and dist.is_initialized()) and init_from_env(useGPU)
    try:
        yield
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()


def shard(n: int, unit: int = 1, rank_: int | None = None, world: int | None = None) -> range:
    """This rank's contiguous slice of ``range(n)``: the ceil(n/unit) blocks of ``unit``
    items are split as evenly as possible, the first ranks taking one more block; a
    rank may get nothing (more ranks than blocks).  The slices of ranks 0..W-1 tile
    ``range(n)`` in order."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    if not 0 <= r < w:
        raise ValueError(f"shard: rank {r} outside 0..{w - 1}")
    unit = max(1, int(unit))
    base, extra = divmod(-(-n // unit), w)
    start = r * base + min(r, extra)
    stop = start + base + (r < extra)
    return range(min(n, start * unit), min(n, stop * unit))


_COMM = {"seconds": 0.0, "calls": 0}


def comm_stats() -> dict:
    """Seconds spent in collectives by this process so far (communication plus waiting
    for slower ranks) and their number."""
    return dict(_COMM)


@contextmanager
def _collective(what: str):
    """Turn a failed or timed-out collective into a :class:`DistributedError` naming the
    step; count its time in :func:`comm_stats`."""
    t = time.perf_counter()
    try:
        yield
    except DistributedError:
        raise
    except (RuntimeError, OSError) as e:  # gloo/NCCL errors (DistBackendError is a RuntimeError)
        raise DistributedError(
            f"rank {rank()} of {world_size()}: '{what}' failed: another rank died, stopped answering "
            f"within {timeout_s():g} s ({TIMEOUT_ENV}), or runs a different job ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else e!r})") from e
    finally:
        _COMM["seconds"] += time.perf_counter() - t
        _COMM["calls"] += 1


def _comm_device() -> torch.device:
    """Where tensors must be for the backend (NCCL: this rank's GPU)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier(what: str) -> None:
    if is_distributed():
        with _collective(what):
            dist.barrier()


def all_reduce_sum(t: torch.Tensor, what: str) -> torch.Tensor:
    """Sum ``t`` over the ranks, in place (the same result on every rank)."""
    if is_distributed():
        dev = _comm_device()
        x = t if t.device == dev else t.to(dev)
        with _collective(what):
            dist.all_reduce(x, op=dist.ReduceOp.SUM)
        if x is not t:
            t.copy_(x)
    return t


def all_gather_rows(a: np.ndarray, what: str) -> np.ndarray:
    """The ranks' arrays stacked along axis 0 in rank order (rows may differ in number,
    zero included); every rank gets the whole, bit for bit."""
    if not is_distributed():
        return a
    a = np.ascontiguousarray(a)
    shapes = all_gather_json([list(a.shape), a.dtype.str], what)
    tails = {tuple(s[1:]) for s, _ in shapes if s[0] > 0}
    if len(tails) > 1 or len({d for _, d in shapes}) > 1:
        raise DistributedError(f"'{what}': ranks hold arrays of different shapes {shapes}")
    tail = tails.pop() if tails else tuple(a.shape[1:])
    rows = [s[0] for s, _ in shapes]
    dev = _comm_device()
    pad = torch.zeros((max(rows),) + tail, dtype=torch.from_numpy(a[:0]).dtype, device=dev)
    pad[:a.shape[0]] = torch.from_numpy(a.reshape((a.shape[0],) + tail)).to(dev)
    out = [torch.empty_like(pad) for _ in rows]
    with _collective(what):
        dist.all_gather(out, pad)
    return np.concatenate([o[:n].cpu().numpy() for o, n in zip(out, rows)], axis=0)


def _to_bytes_tensor(obj) -> torch.Tensor:
    return torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8)


def all_gather_json(obj, what: str) -> list:
    """Every rank's JSON-able ``obj``, in rank order."""
    if not is_distributed():
        return [obj]
    dev = _comm_device()
    data = _to_bytes_tensor(obj).to(dev)
    sizes = [torch.zeros(1, dtype=torch.int64, device=dev) for _ in range(world_size())]
    with _collective(what):
        dist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.int64, device=dev))
        n = int(max(s.item() for s in sizes))
        buf = torch.zeros(n, dtype=torch.uint8, device=dev)
        buf[:data.numel()] = data
        out = [torch.empty_like(buf) for _ in sizes]
        dist.all_gather(out, buf)
    return [json.loads(bytes(o[:int(s.item())].cpu().numpy()).decode()) for o, s in zip(out, sizes)]


def broadcast_json(obj, what: str):
    """Rank 0's JSON-able ``obj`` on every rank (others pass anything, e.g. None)."""
    if not is_distributed():
        return obj
    return all_gather_json(obj if is_rank0() else None, what)[0]


def on_rank0(fn, what: str):
    """Run ``fn()`` on rank 0 only and hand its JSON-able result to every rank.  When it
    raises, rank 0 re-raises and the other ranks raise a DistributedError with its
    message (instead of waiting for rank 0 at the next collective)."""
    if not is_distributed():
        return fn()
    out, err = None, None
    if is_rank0():
        try:
            out = {"result": fn()}
        except Exception as e:  # handed to the other ranks, then re-raised here
            err, out = e, {"error": f"{type(e).__name__}: {e}"}
    out = broadcast_json(out, what)
    if err is not None:
        raise err
    if "error" in out:
        raise DistributedError(f"rank {rank()}: '{what}' failed on rank 0: {out['error']}")
    return out["result"]


def check_same(value: str, what: str) -> None:
    """Refuse to go on unless every rank passes the same ``value`` (e.g. an options
    hash): a DistributedError listing the ranks that differ from rank 0."""
    if not is_distributed():
        return
    vals = all_gather_json(value, what)
    bad = [r for r, v in enumerate(vals) if v != vals[0]]
    if bad:
        raise DistributedError(f"rank {rank()}: ranks {bad} differ from rank 0 in {what} "
                               f"(rank 0: {vals[0]}; " + ", ".join(f"rank {r}: {vals[r]}" for r in bad) +
                               "); start every rank with the same command")


def options_hash(options: dict) -> str:
    """A short hash of JSON-able options (key order irrelevant)."""
    s = json.dumps(options, sort_keys=True, default=str)
    return hashlib.sha256(s.encode()).hexdigest()[:16]


def tensors_hash(tensors) -> str:
    """A hash of tensors' exact bits (to check that every rank holds the same network)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(repr((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@contextmanager
def rank0_first(what: str):
    """Rank 0 runs the block first (it may write caches, e.g. cluster centres), the
    other ranks after it succeeded (and read them); if it fails there, they raise."""
    if not is_distributed():
        yield
        return
    if is_rank0():
        try:
            yield
        except Exception as e:
            broadcast_json(f"{type(e).__name__}: {e}", what)
            raise
        broadcast_json(None, what)
    else:
        msg = broadcast_json(None, what)
        if msg is not None:
            raise DistributedError(f"rank {rank()}: '{what}' failed on rank 0: {msg}")
        yield


def sum_over_ranks(tested, losses, triplets, device):
    """trainWeakly's per-query arrays (tested flags, losses, triplet counts) summed over
    the ranks (each query filled by one rank)."""
    t = torch.from_numpy(np.stack([tested.astype(np.float64), losses, triplets])).to(device)
    t = all_reduce_sum(t, "batch losses").cpu().numpy()
    return t[0] > 0, t[1], t[2]


def all_reduce_grads(net) -> None:
    """Sum every trainable weight's ``.grad`` over the ranks in one all-reduce (a
    weight no rank has a gradient for keeps none)."""
    ws = [w for l in net.layers for w in l.weights if w.requires_grad]
    if not ws:
        return
    flat = torch.cat([(w.grad if w.grad is not None else torch.zeros_like(w)).reshape(-1) for w in ws] +
                     [torch.tensor([float(w.grad is not None) for w in ws], device=ws[0].device)])
    all_reduce_sum(flat, "gradients")
    off = 0
    for w, has in zip(ws, flat[-len(ws):].tolist()):
        g = flat[off:off + w.numel()].view_as(w)
        off += w.numel()
        w.grad = g.clone() if has > 0 else None
