"""Exact search over a database streamed in chunks within a memory cap (a ``.bin`` file
larger than memory, through its memory map): the same running top-k as in memory
(:mod:`matnet.search.exact`), so the same ids and distances."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from converters.bin_features import MappedBin, check_features_finite

from .exact import KnnAccumulator, relja_l2normalize_rows
from .memory import QUERY_BLOCK, chunk_rows


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


class StreamedDb:
    """A database ``.bin`` searched without loading it: rows streamed through its memory
    map (:class:`~converters.bin_features.MappedBin`) in chunks within ``memoryCap``
    bytes, checked for NaN/Inf as they pass, optionally cropped to ``crop`` dimensions and
    L2-normalised again (testFromFn's cropToDim, the same numpy arithmetic as in memory)."""

    def __init__(self, path, D: int, n: int, memoryCap: int, crop: int = 0):
        self.mapped = MappedBin(path, D=D, n=n)
        self.memoryCap, self.crop = int(memoryCap), int(crop)
        self.shape = (n, crop or D)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return relja_l2normalize_rows(x[:, :self.crop]) if self.crop else x

    def check(self, start: int, x: np.ndarray) -> None:
        check_features_finite(self.mapped.path, x, first=start)

    def rows(self, ids) -> np.ndarray:
        """The (cropped) rows ``ids``, read from the map."""
        return self.transform(np.asarray(self.mapped.array[np.asarray(ids)], np.float32))

    def chunks(self):
        """(start, rows) on the host, the file read once in chunks within memoryCap."""
        n, D = self.mapped.shape
        step = max(1, self.memoryCap // (8 * D))
        for s in range(0, n, step):
            x = np.array(self.mapped.array[s:s + step])
            self.mapped.release(s, s + len(x))
            self.check(s, x)
            yield s, self.transform(x)

    def search(self, qt: torch.Tensor, k: int, device) -> tuple[np.ndarray, np.ndarray]:
        return knn_streamed(qt, self.mapped, k, device, self.memoryCap, self.transform, self.check)


class StreamedSearcher:
    """recallAtN's searcher over a :class:`StreamedDb`: the first call searches all
    ``queries`` (those recallAtN will ask for) in one pass over the file, with that
    call's nTop; later calls read the result (a pass again only for more or other queries)."""

    def __init__(self, qFeat, db: StreamedDb, queries, device):
        self.qFeat, self.db, self.dev = qFeat, db, device
        self.queries = np.asarray(queries, np.int64)
        self.row = np.full(qFeat.shape[0], -1, np.int64)
        self.k = 0

    def __call__(self, qIds, nTop):
        qIds = np.asarray(qIds, np.int64)
        if nTop > self.k or (self.row[qIds] < 0).any():
            self.queries = np.union1d(self.queries, qIds)
            qt = torch.as_tensor(np.ascontiguousarray(self.qFeat[self.queries], np.float32)).to(self.dev)
            with torch.no_grad():
                self.ids, self.ds = self.db.search(qt, nTop, self.dev)
            self.row[:] = -1
            self.row[self.queries] = np.arange(self.queries.size)
            self.k = nTop
        r = self.row[qIds]
        return self.ids[r, :nTop], self.ds[r, :nTop]
