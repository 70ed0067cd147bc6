"""Nearest-neighbour search behind recall@N (the MATLAB functions rawNnSearch, testCore and
testFromFn in :mod:`matnet.recall_at_n` call it).

- :mod:`.exact`: exact top-k in squared L2 with MATLAB's tie order, a database in memory;
- :mod:`.streamed`: the same search over a ``.bin`` file streamed within a memory cap;
- :mod:`.approximate`: faiss indexes (not in MATLAB);
- :mod:`.memory`: memory sizing (the distance block, caps, chunk rows).

One :class:`SearchOptions` carries the choices that are not MATLAB's (method, its
parameters, the exact check's sample, the memory cap).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from converters.bin_features import MappedBin

from .exact import MemorySearcher, knn_in_memory
from .memory import default_memory_cap, parse_bytes
from .streamed import StreamedDb, StreamedSearcher, knn_streamed

__all__ = ["SearchOptions", "knn", "exact_searcher", "make_searcher"]


@dataclass(frozen=True)
class SearchOptions:
    """How recall@N searches (none of it in MATLAB).

    ``method``: 'exact' (matnet's exact search, in memory or streamed), 'flat', 'ivfpq' or
    a faiss index_factory string (:mod:`matnet.search.approximate`); ``params``: the faiss
    parameters (dict); ``checkSample``: with a faiss method, the queries on which its
    recall is compared with the exact search (0: no comparison); ``memoryCap``: bytes or a
    string such as '1GB' -- a database file larger is streamed within it (None: files
    larger than half the available memory, within a quarter of it)."""
    method: str = "exact"
    params: dict | None = None
    checkSample: int = 1000
    memoryCap: int | str | None = None

    @property
    def exact(self) -> bool:
        return self.method == "exact"

    def replace(self, **kw) -> "SearchOptions":
        return dataclasses.replace(self, **kw)


def knn(qt: torch.Tensor, db, k: int, device: torch.device, memoryCap=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (ids, squared distances; numpy) of queries ``qt`` (nQ x D on ``device``)
    over ``db``: in memory, or streamed within ``memoryCap`` when one is given or ``db`` is a
    file (a :class:`~converters.bin_features.MappedBin` or a ``np.memmap``, read in chunks,
    never whole; then the default cap when none is given)."""
    with torch.no_grad():
        if memoryCap is not None or isinstance(db, (MappedBin, np.memmap)):
            cap = parse_bytes(memoryCap) if memoryCap is not None else default_memory_cap()
            return knn_streamed(qt, db, k, device, cap)
        return knn_in_memory(qt, db, k, device)


def exact_searcher(qFeat, dbFeat, queries, device: torch.device):
    """recallAtN's exact searcher over ``dbFeat`` (an array, or a :class:`StreamedDb` that
    is read once for all ``queries``)."""
    if isinstance(dbFeat, StreamedDb):
        return StreamedSearcher(qFeat, dbFeat, queries, device)
    return MemorySearcher(qFeat, dbFeat, device)


def make_searcher(qFeat, dbFeat, options: SearchOptions, queries, device: torch.device):
    """recallAtN's searcher for ``options.method``."""
    if options.exact:
        return exact_searcher(qFeat, dbFeat, queries, device)
    from .approximate import FaissSearcher
    return FaissSearcher(qFeat, dbFeat, options.method, options.params, useGPU=device.type == "cuda")
