"""MATLAB's raw feature files (``serialAllFeats`` output, read by ``testFromFn``).

Layout: little-endian float32, no header; the D values of image 1, then image 2, ...
(MATLAB's column-major D x N matrix, i.e. row-major N x D here).
"""
from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np

from .atomic_file import atomic_write

DTYPE = np.dtype("<f4")


class BinFeatureError(ValueError):
    """A ``.bin`` feature file that does not match what the caller expects."""


def write_bin(path, feats) -> None:
    """Write N x D ``feats`` as float32 in MATLAB order, to a temporary name then renamed."""
    feats = np.ascontiguousarray(np.asarray(feats, dtype=DTYPE))
    if feats.ndim != 2:
        raise BinFeatureError(f"{path}: features must be N x D, got shape {feats.shape}")
    path = Path(path)
    try:
        with atomic_write(path) as f:
            f.write(feats.data)  # not ndarray.tofile, which can lose a disk-full error
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from e


def bin_shape(path, D: int | None = None, n: int | None = None) -> tuple[int, int]:
    """(images, D) of a ``.bin`` file, checked as :func:`read_bin` checks it (without reading)."""
    path = Path(path)
    if not path.is_file():
        raise BinFeatureError(f"{path}: feature file not found")
    nbytes = path.stat().st_size
    if nbytes % DTYPE.itemsize:
        raise BinFeatureError(f"{path}: size {nbytes} bytes is not a whole number of float32 values")
    nvals = nbytes // DTYPE.itemsize
    if nvals == 0:
        raise BinFeatureError(f"{path}: the feature file is empty (0 bytes)")
    if D is None:
        if n is None:
            raise BinFeatureError(f"{path}: give the dimensionality D or the number of images n")
        if n <= 0 or nvals % n:
            raise BinFeatureError(f"{path}: {nvals} values cannot be {n} images of one dimensionality "
                                  f"(truncated, or written for another image list?)")
        D = nvals // n
    if D <= 0:
        raise BinFeatureError(f"{path}: dimensionality D={D} must be positive")
    if n is not None and nvals == n * (nvals // n) and nvals // n != D:
        raise BinFeatureError(f"{path}: holds {n} images of D={nvals // n}, expected D={D}")
    if nvals % D:
        raise BinFeatureError(f"{path}: {nvals} values is not a multiple of D={D} "
                              f"({nvals / D:.3f} images: truncated?)")
    if n is not None and nvals // D != n:
        raise BinFeatureError(f"{path}: holds {nvals // D} images of D={D}, expected {n}")
    return nvals // D, D


def check_features_finite(path, feats: np.ndarray, first: int = 0) -> None:
    """Raise naming ``path`` and the first 0-based image with NaN/Inf; ``feats`` are the
    images from index ``first`` on (a streamed chunk)."""
    ok = np.isfinite(feats).all(axis=1)
    if not ok.all():
        bad = np.flatnonzero(~ok)
        where = f" (of images {first}..{first + len(feats) - 1})" if first else ""
        raise BinFeatureError(f"{path}: {bad.size} images{where} have NaN/Inf features "
                              f"(first 0-based index {first + bad[0]})")


def read_bin(path, D: int | None = None, n: int | None = None, check_finite: bool = True) -> np.ndarray:
    """Read a ``.bin`` as an N x D float32 array.

    Give ``D`` (values per image) and/or ``n`` (number of images); with only ``n`` the
    dimensionality is inferred as MATLAB's ``reshape(x, [], n)`` does.  Raises
    :class:`BinFeatureError` naming the file when its size is not a whole number of
    D-vectors, when it holds a different number of images than ``n``, or (with
    ``check_finite``) when it contains NaN/Inf.
    """
    _, D = bin_shape(path, D, n)
    feats = np.fromfile(path, dtype=DTYPE).reshape(-1, D)
    if check_finite:
        check_features_finite(path, feats)
    return feats.astype(np.float32, copy=False)


class MappedBin:
    """A ``.bin`` file as a read-only N x D float32 ``array`` through a memory map (nothing
    read until used), for files larger than memory.  ``release(start, stop)`` drops rows
    already used from the process's resident memory (the OS page cache keeps them)."""

    def __init__(self, path, D: int | None = None, n: int | None = None):
        self.path = Path(path)
        n, D = bin_shape(path, D, n)
        with open(self.path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.array = np.frombuffer(self._map, dtype=DTYPE).reshape(n, D)
        self.shape = self.array.shape

    def release(self, start: int, stop: int) -> None:
        row = self.array.strides[0]
        lo = start * row - (start * row) % mmap.PAGESIZE
        hi = min(stop * row, len(self._map))
        if hi > lo and hasattr(self._map, "madvise"):
            self._map.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
