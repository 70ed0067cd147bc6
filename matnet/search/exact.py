"""Exact k-nearest-neighbour search in squared L2 (yael_nn / rawNnSearch semantics) with a
running top-k over database chunks; a database in memory is one chunk (a streamed one:
:mod:`matnet.search.streamed`).

Both paths run the same code: distance blocks ``||q||^2 + ||x||^2 - 2 q.x`` (one matmul
per block, on the GPU when one is used), the k smallest of each block in (distance, id)
order -- among equal distances the lower id, also for the ties straddling the k-th
place, as MATLAB's stable sort -- merged into the running result.  A streamed database
gives the same ids and distances as the in-memory one.
"""
from __future__ import annotations

import numpy as np
import torch

from .memory import SEARCH_BLOCK


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


NORM_BLOCK = 1 << 20  # elements of squared_norms' reused temporary (4 MiB of float32)


def squared_norms(x: torch.Tensor) -> torch.Tensor:
    """``(x * x).sum(1)``, the same numbers, through one reused temporary of at most
    NORM_BLOCK elements: x * x of a whole in-memory database is a second copy of it
    (16 GB for 1M x 4096 on a GPU), and of a streamed chunk a third chunk buffer (a new
    temporary per block grew the heap as much, as the allocator kept the freed ones)."""
    rows = NORM_BLOCK // max(1, x.shape[1])
    if x.shape[0] <= rows or rows < 1:  # (rows of more than NORM_BLOCK values: one temporary)
        return (x * x).sum(1)
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    tmp = torch.empty((rows, x.shape[1]), dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], rows):
        c = x[s:s + rows]
        t = torch.mul(c, c, out=tmp[:c.shape[0]])
        torch.sum(t, 1, out=out[s:s + c.shape[0]])
    return out


class KnnAccumulator:
    """Running exact top-k of queries ``q`` (nQ x D tensor on the compute device) over
    database chunks given in increasing id order (:meth:`add`); :meth:`result`."""

    def __init__(self, q: torch.Tensor, k: int, block: int = SEARCH_BLOCK):
        self.q, self.k, self.block = q, k, block
        self.qn = (q * q).sum(1, keepdim=True)
        self.vals = self.ids = None

    def add(self, start: int, x: torch.Tensor) -> None:
        """Database rows ``start .. start + len(x) - 1`` (a tensor on the device of q)."""
        xn = squared_norms(x)
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


def relja_l2normalize_rows(x: np.ndarray) -> np.ndarray:
    """relja_l2normalize_col on rows: ``x / (||x|| + 1e-12)``."""
    return x / (np.sqrt((x.astype(np.float32) ** 2).sum(axis=1, keepdims=True)) + 1e-12)


def knn_in_memory(qt: torch.Tensor, db, k: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of queries ``qt`` (nQ x D tensor on ``device``) over ``db`` (an N x D
    array or tensor), as one chunk.  Returns (ids, ds) as numpy arrays."""
    dbt = torch.as_tensor(np.asarray(db, np.float32) if not torch.is_tensor(db) else db).to(device)
    acc = KnnAccumulator(qt, k)
    acc.add(0, dbt)
    return acc.result()


class MemorySearcher:
    """recallAtN's searcher over features in memory: the database moved to the device once,
    each call an exact search of the queries asked for."""

    def __init__(self, qFeat, dbFeat, device: torch.device):
        self.dev = device
        self.dbt = torch.as_tensor(np.ascontiguousarray(dbFeat, np.float32)).to(device)
        self.qt = torch.as_tensor(np.ascontiguousarray(qFeat, np.float32))

    def __call__(self, qIds, nTop):
        q = self.qt[torch.as_tensor(np.asarray(qIds, np.int64))].to(self.dev, torch.float32)
        with torch.no_grad():
            return knn_in_memory(q, self.dbt, min(int(nTop), self.dbt.shape[0]), self.dev)
