"""Exact k-nearest-neighbour search in squared L2 (yael_nn / rawNnSearch semantics) over a
database held in memory or streamed from a ``.bin`` file in chunks, with a running top-k.

Both paths run the same code: distance blocks ``||q||^2 + ||x||^2 - 2 q.x`` (one matmul
per block, on the GPU when one is used), the k smallest of each block in (distance, id)
order -- among equal distances the lower id, also for the ties straddling the k-th
place, as MATLAB's stable sort -- merged into the running result.  A streamed database
gives the same ids and distances as the in-memory one.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

SEARCH_BLOCK = 1 << 26  # distance-matrix entries computed at once (256 MiB of float32)


def smallest_k(d: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest entries of each row of ``d`` in (value, column) order: ties go
    to the lower column, also where they straddle the k-th place (torch.topk keeps an
    arbitrary subset there: a (k+1)-th value equal to the k-th shows it, and such rows,
    rare outside exact duplicates, are redone exactly).  Returns (values, columns),
    nRows x k.  One host synchronisation per call, no temporary the size of ``d``."""
    extra = int(0 < k < d.shape[1])  # one more: a (k+1)-th value equal to the k-th means a cut tie
    vals, idx = torch.topk(d, k + extra, dim=1, largest=False, sorted=True)
    if extra:
        cut = (vals[:, k] == vals[:, k - 1]).nonzero().flatten().tolist()
        vals, idx = vals[:, :k].contiguous(), idx[:, :k].contiguous()
        for r in cut:  # the k-th value also sits at columns topk did not keep
            cand = (d[r] <= vals[r, -1]).nonzero().flatten()     # ascending columns
            order = torch.sort(d[r, cand], stable=True).indices[:k]
            idx[r], vals[r] = cand[order], d[r, cand[order]]
    o = torch.argsort(idx, dim=1)  # (value, column) order: by column, then stable by value
    vals, idx = vals.gather(1, o), idx.gather(1, o)
    o = torch.sort(vals, dim=1, stable=True).indices
    return vals.gather(1, o), idx.gather(1, o)


class KnnAccumulator:
    """Running exact top-k of queries ``q`` (nQ x D tensor on the compute device) over
    database chunks given in increasing id order (:meth:`add`); :meth:`result`."""

    def __init__(self, q: torch.Tensor, k: int, block: int = SEARCH_BLOCK):
        self.q, self.k, self.block = q, k, block
        self.qn = (q * q).sum(1, keepdim=True)
        self.vals = self.ids = None

    def add(self, start: int, x: torch.Tensor) -> None:
        """Database rows ``start .. start + len(x) - 1`` (a tensor on the device of q)."""
        xn = (x * x).sum(1)
        rows = max(1, self.block // max(1, x.shape[0]))  # queries per distance block
        k = min(self.k, x.shape[0])
        vals, ids = [], []
        for s in range(0, self.q.shape[0], rows):
            qc = self.q[s:s + rows]
            d = torch.add(xn[None, :], self.qn[s:s + rows])   # ||x||^2 + ||q||^2, then in place
            d.addmm_(qc, x.T, alpha=-2).clamp_(min=0)          # - 2 q.x: no second block in memory
            v, i = smallest_k(d, k)
            vals.append(v)
            ids.append(i + start)
        vals, ids = torch.cat(vals), torch.cat(ids)
        if self.vals is not None:  # earlier chunks hold lower ids: a stable sort keeps (value, id) order
            vals, ids = torch.cat([self.vals, vals], 1), torch.cat([self.ids, ids], 1)
            o = torch.sort(vals, dim=1, stable=True).indices[:, :self.k]
            vals, ids = vals.gather(1, o), ids.gather(1, o)
        self.vals, self.ids = vals, ids

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64, squared distances float32), nQ x min(k, rows seen), best first."""
        if self.ids is None:
            return np.zeros((self.q.shape[0], 0), np.int64), np.zeros((self.q.shape[0], 0), np.float32)
        return self.ids.cpu().numpy().astype(np.int64), self.vals.cpu().numpy()


QUERY_BLOCK = 1024  # queries per distance block in a streamed search


def chunk_rows(D: int, nQ: int, memoryCap: int) -> int:
    """Database rows per chunk so that two chunk buffers (one read ahead while the other
    is searched), a block of distances (QUERY_BLOCK queries; with top-k's temporaries) and
    the queries fit in ``memoryCap`` bytes."""
    free = 0.9 * memoryCap - 4 * nQ * D  # a tenth left for the allocator and top-k's own buffers
    per_row = 4 * 2 * D + 4 * min(nQ, QUERY_BLOCK)  # two rows of the buffers, float32 distances
    if free < per_row:
        raise MemoryError(f"memoryCap {memoryCap / 2**20:.0f} MiB is too small for {nQ} queries of "
                          f"D={D} (needs at least {(4 * nQ * D + per_row) / 2**20:.1f} MiB)")
    return int(free // per_row)


def stream_chunks(db, rows: int, device: torch.device, transform=None, check=None):
    """Yield ``(start, chunk tensor on device)`` over ``db`` (an N x D float32 array, or a
    :class:`~converters.bin_features.MappedBin` streamed through its memory map), ``rows``
    at a time.  A thread copies the next chunk into the other of two host buffers (pinned
    for a GPU, whose copies are asynchronous) while this one is searched; a mapped file's
    copied rows are released from the process (the page cache keeps them), so it holds
    two buffers, not the file.  In that thread ``check(start, rows)`` may raise on bad
    rows and ``transform(rows)`` (e.g. cropToDim) maps the host rows, numpy to numpy."""
    arr = getattr(db, "array", db)
    n = arr.shape[0]
    D = arr.shape[1] if transform is None else transform(np.asarray(arr[:1])).shape[1]
    cuda = device.type == "cuda"
    bufs = [torch.empty((min(rows, n), D), dtype=torch.float32, pin_memory=cuda) for _ in range(2)]
    copied = [None, None]  # CUDA events: the buffer's host-to-device copy has run

    def fill(b: int, start: int) -> int:
        if copied[b] is not None:
            copied[b].synchronize()
        stop = min(start + rows, n)
        x = arr[start:stop]
        if check is not None:
            check(start, x)
        bufs[b][:stop - start].numpy()[...] = x if transform is None else transform(x)
        if hasattr(db, "release"):
            db.release(start, stop)
        return stop - start

    starts = list(range(0, n, rows))
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(fill, 0, 0) if starts else None
        for i, start in enumerate(starts):
            b = i % 2
            x = bufs[b][:pending.result()]
            if cuda:
                x = x.to(device, non_blocking=True)
                copied[b] = torch.cuda.Event()
                copied[b].record()
            if i + 1 < len(starts):
                pending = pool.submit(fill, 1 - b, starts[i + 1])
            yield start, x


def knn_streamed(qt: torch.Tensor, db, k: int, device: torch.device, memoryCap: int, transform=None,
                 check=None):
    """Exact top-k of queries ``qt`` (nQ x D tensor on ``device``) over ``db`` streamed in
    chunks that keep the search within ``memoryCap`` bytes (see :func:`chunk_rows`).
    Returns (ids, ds) as numpy arrays."""
    arr = getattr(db, "array", db)
    rows = chunk_rows(arr.shape[1], qt.shape[0], memoryCap)
    acc = KnnAccumulator(qt, k, block=rows * min(qt.shape[0], QUERY_BLOCK))
    for start, x in stream_chunks(db, rows, device, transform, check):
        acc.add(start, x)
    return acc.result()
