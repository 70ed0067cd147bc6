"""Exact search over a database streamed in chunks within a memory cap (a ``.bin`` file
larger than memory, a :class:`~converters.bin_features.MappedBin`, a user's
``np.memmap``): the same running top-k as in memory (:mod:`matnet.search.exact`), so the
same ids and distances.

The rows are read with ``os.preadv`` into reused buffers (:class:`RowReader`), never
through a memory map: the file's pages then stay in the OS page cache and are not
resident in the process, so the peak resident memory (VmHWM, which counts mapped file
pages too) grows by the buffers only.  A map read row by row and released afterwards
(``madvise(MADV_DONTNEED)``) still held a third chunk, the chunk being copied, and a
``np.memmap`` given by the user was never released at all (the whole file resident).
"""
from __future__ import annotations

import mmap
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from converters.bin_features import MappedBin, check_features_finite

from .exact import KnnAccumulator, relja_l2normalize_rows
from .memory import QUERY_BLOCK, STAGE_BYTES, chunk_rows


def _root_mmap(a):
    """The mmap.mmap object under a numpy memmap (or None)."""
    b = getattr(a, "base", None)
    while b is not None and not isinstance(b, mmap.mmap):
        b = getattr(b, "base", None)
    return b


class RowReader:
    """Rows ``start:stop`` of a database as float32, copied into the caller's buffer.

    ``db``: a :class:`~converters.bin_features.MappedBin` or a ``np.memmap`` (C-ordered
    rows of a file: read with ``os.preadv`` from the file, the map never touched), or
    any N x D array or tensor in memory (sliced).  A ``np.memmap`` whose rows are not
    contiguous in its file is sliced and its map's pages released (``MADV_DONTNEED``)
    after each block; one opened copy-on-write (mode 'c') is sliced as an array.  Conversions (another dtype, ``transform``) and the NaN check go
    through blocks of :data:`~matnet.search.memory.STAGE_BYTES`, so no chunk-sized
    temporary is made."""

    def __init__(self, db):
        self.db = db
        arr = db.array if isinstance(db, MappedBin) else db
        self.shape = tuple(int(v) for v in arr.shape)
        self.fd = None
        self.map = None
        self.path = getattr(db, "path", None) or getattr(db, "filename", None)
        if isinstance(db, MappedBin):
            self.dtype, self.offset = np.dtype(arr.dtype), 0
            self.fd = os.open(db.path, os.O_RDONLY)
        elif isinstance(db, np.memmap) and db.ndim == 2 and getattr(db, "mode", "r") != "c":
            # (mode 'c' maps copy-on-write: the user's changes live only in the map's pages,
            # which neither the file nor a released page would give back: read as an array)
            root = _root_mmap(db)
            if root is not None and db.filename and db.flags.c_contiguous and db.dtype.isnative:
                base = np.frombuffer(root, np.uint8)  # the map's address; no page is touched
                start = db.offset - db.offset % mmap.ALLOCATIONGRANULARITY
                self.offset = start + (db.ctypes.data - base.ctypes.data)
                self.dtype = db.dtype
                self.fd = os.open(db.filename, os.O_RDONLY)
                del base
            else:
                self.map = root
        self.array = arr

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self):
        self.close()

    def _pread(self, start: int, stop: int, out: np.ndarray) -> None:
        """Raw rows start:stop (the file's dtype) into ``out`` (C-contiguous)."""
        view = memoryview(out.reshape(-1).view(np.uint8))
        pos = self.offset + start * self.shape[1] * self.dtype.itemsize
        done = 0
        while done < len(view):
            got = os.preadv(self.fd, [view[done:]], pos + done)
            if got <= 0:
                raise OSError(f"{self.path}: unexpected end of file reading rows {start}..{stop - 1}")
            done += got

    def _raw(self, start: int, stop: int, stage: np.ndarray | None) -> np.ndarray:
        """Rows start:stop in the source dtype: read into ``stage`` (a file) or a slice."""
        if self.fd is not None:
            out = stage[:stop - start]
            self._pread(start, stop, out)
            return out
        x = self.array[start:stop]
        if torch.is_tensor(x):
            x = x.detach().cpu().numpy()
        return np.asarray(x)

    def read_into(self, start: int, stop: int, out: np.ndarray, transform=None, check=None) -> None:
        """Rows start:stop, checked (``check(first, rows)``) and transformed (numpy rows ->
        numpy rows, e.g. cropToDim), into ``out`` (float32, stop - start rows)."""
        D = self.shape[1]
        direct = (self.fd is not None and transform is None and self.dtype == np.float32
                  and out.flags.c_contiguous and out.shape[1] == D)
        block = max(1, STAGE_BYTES // (4 * D))
        stage = None
        if self.fd is not None and not direct:
            stage = np.empty((min(block, stop - start), D), self.dtype)
        for s in range(start, stop, block):
            e = min(s + block, stop)
            dst = out[s - start:e - start]
            if direct:
                self._pread(s, e, dst)
                x = dst
            else:
                x = self._raw(s, e, stage)
            if check is not None:
                check(s, x)
            if transform is not None:
                dst[...] = transform(np.asarray(x, np.float32))
            elif x is not dst:
                dst[...] = x
            if self.map is not None and hasattr(self.map, "madvise"):
                self.map.madvise(mmap.MADV_DONTNEED)  # the block's pages: out of the process

    def take(self, ids, transform=None) -> np.ndarray:
        """The rows ``ids`` (any order, repeats allowed) as float32, transformed; from a
        file, read a staging block of distinct rows at a time (runs of consecutive ids
        in one read each)."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        if self.fd is None:
            rows = np.asarray(self.array[ids] if not torch.is_tensor(self.array)
                              else self.array[torch.as_tensor(ids)].cpu().numpy(), np.float32)
            if self.map is not None and hasattr(self.map, "madvise"):
                self.map.madvise(mmap.MADV_DONTNEED)
            return rows if transform is None else transform(rows)
        uniq, inv = np.unique(ids, return_inverse=True)
        D = self.shape[1]
        Dout = D if transform is None else transform(np.zeros((1, D), np.float32)).shape[1]
        out = np.empty((uniq.size, Dout), np.float32)
        block = max(1, STAGE_BYTES // (4 * D))
        stage = np.empty((min(block, uniq.size), D), self.dtype)
        for b in range(0, uniq.size, block):
            u = uniq[b:b + block]
            breaks = np.flatnonzero(np.diff(u) != 1) + 1
            for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, u.size]):
                self._pread(int(u[lo]), int(u[hi - 1]) + 1, stage[lo:hi])
            x = np.asarray(stage[:u.size], np.float32)
            out[b:b + u.size] = x if transform is None else transform(x)
        return out[inv.reshape(-1)]


def stream_chunks(db, rows: int, device: torch.device, transform=None, check=None):
    """Yield ``(start, chunk tensor on device)`` over ``db`` (see :class:`RowReader`),
    ``rows`` at a time.  A thread reads the next chunk into the other of two host
    buffers (pinned for a GPU, whose copies are asynchronous) while this one is searched,
    so the process holds two buffers, never the file.  In that thread ``check(start,
    rows)`` may raise on bad rows and ``transform(rows)`` (e.g. cropToDim) maps the host
    rows, numpy to numpy, a staging block at a time."""
    reader = db if isinstance(db, RowReader) else RowReader(db)
    n = reader.shape[0]
    D = reader.shape[1] if transform is None else transform(np.zeros((1, reader.shape[1]), np.float32)).shape[1]
    cuda = device.type == "cuda"
    bufs = [torch.empty((min(rows, n), D), dtype=torch.float32, pin_memory=cuda) for _ in range(2)]
    copied = [None, None]  # CUDA events: the buffer's host-to-device copy has run

    def fill(b: int, start: int) -> int:
        if copied[b] is not None:
            copied[b].synchronize()
        stop = min(start + rows, n)
        reader.read_into(start, stop, bufs[b][:stop - start].numpy(), transform, check)
        return stop - start

    starts = list(range(0, n, rows))
    try:
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
    finally:
        if reader is not db:
            reader.close()


def knn_streamed(qt: torch.Tensor, db, k: int, device: torch.device, memoryCap: int, transform=None,
                 check=None):
    """Exact top-k of queries ``qt`` (nQ x D tensor on ``device``) over ``db`` (see
    :class:`RowReader`) streamed in chunks that keep the search's peak resident memory
    within ``memoryCap`` bytes (see :func:`~matnet.search.memory.chunk_rows`).  Returns
    (ids, ds) as numpy arrays."""
    rows = chunk_rows(qt.shape[1], qt.shape[0], memoryCap, k)
    acc = KnnAccumulator(qt, k, block=rows * min(qt.shape[0], QUERY_BLOCK))
    for start, x in stream_chunks(db, rows, device, transform, check):
        acc.add(start, x)
    return acc.result()


class StreamedDb:
    """A database ``.bin`` searched without loading it: rows read (:class:`RowReader`) in
    chunks within ``memoryCap`` bytes, checked for NaN/Inf as they pass, optionally
    cropped to ``crop`` dimensions and L2-normalised again (testFromFn's cropToDim, the
    same numpy arithmetic as in memory)."""

    def __init__(self, path, D: int, n: int, memoryCap: int, crop: int = 0):
        self.mapped = MappedBin(path, D=D, n=n)
        self.reader = RowReader(self.mapped)
        self.memoryCap, self.crop = int(memoryCap), int(crop)
        self.shape = (n, crop or D)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return relja_l2normalize_rows(x[:, :self.crop]) if self.crop else x

    def check(self, start: int, x: np.ndarray) -> None:
        check_features_finite(self.mapped.path, x, first=start)

    def rows(self, ids) -> np.ndarray:
        """The (cropped) rows ``ids``, read from the file."""
        return self.reader.take(ids, self.transform)

    def chunks(self):
        """(start, rows) on the host, the file read once in chunks of about a quarter of
        memoryCap into one reused buffer (valid until the next chunk)."""
        n = self.shape[0]
        step = max(1, self.memoryCap // (4 * 4 * self.mapped.shape[1]))
        buf = np.empty((min(step, n), self.shape[1]), np.float32)
        for s in range(0, n, step):
            e = min(s + step, n)
            self.reader.read_into(s, e, buf[:e - s], self.transform if self.crop else None, self.check)
            yield s, buf[:e - s]

    def search(self, qt: torch.Tensor, k: int, device) -> tuple[np.ndarray, np.ndarray]:
        return knn_streamed(qt, self.reader, k, device, self.memoryCap,
                            self.transform if self.crop else None, self.check)


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
