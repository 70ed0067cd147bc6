"""dbBase: a place-recognition dataset specification (datasets/dbBase.m).

A subclass sets ``name`` (the spec is ``<specDir>/<name>.mat``), ``dbPath`` and
``qPath`` (``dbPath + dbImageFns[i]`` is an image file) and calls :meth:`dbLoad`.
All image and query ids are 0-based (MATLAB: 1-based).  Methods accept one id or an
array of ids; with arrays, per-id results are lists of arrays.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from converters.dbstruct import DbStructError, load_dbstruct

from .close_position import closePosition, sqdist
from .local_paths import localPaths


def left_pack(ids, ds, keep, nTop):
    """Keep the ``keep`` entries of each row in order, the first ``nTop`` of them, rows
    padded with id -1 (distance inf)."""
    order = np.argsort(~keep, axis=1, kind="stable")[:, :nTop]
    k = np.take_along_axis(keep, order, axis=1)
    out_ids = np.where(k, np.take_along_axis(ids, order, axis=1), -1)
    out_ds = np.where(k, np.take_along_axis(np.asarray(ds, np.float32), order, axis=1), np.inf)
    return out_ids, out_ds.astype(np.float32)


class dbBase:
    """Properties as MATLAB: ``name``, ``whichSet``, ``dbPath``, ``dbImageFns``, ``utmDb``
    (2 x numImages), ``qPath``, ``qImageFns``, ``utmQ`` (2 x numQueries), ``numImages``,
    ``numQueries``, ``posDistThr``, ``posDistSqThr``, ``nonTrivPosDistSqThr``, ``cp``
    (:class:`closePosition` over the database) and ``specFn``.  Image and query ids
    are 0-based (MATLAB's minus one)."""

    name: str = ""
    dbPath: str = ""
    qPath: str = ""

    def dbLoad(self, specDir=None) -> None:
        """Read ``<specDir>/<name>.mat`` (``specDir`` defaults to localPaths' dsetSpecDir)."""
        specDir = localPaths()["dsetSpecDir"] if specDir is None else specDir
        fn = Path(specDir).expanduser() / f"{self.name}.mat"
        if not fn.is_file():
            raise DbStructError(f"{fn}: dataset specification not found; download {self.name}.mat "
                                f"and pass specDir= or set dsetSpecDir (MATNET_DSET_SPEC_DIR)")
        for k, v in load_dbstruct(fn).items():
            if k != "cp":
                setattr(self, k, v)
        self.specFn = str(fn)
        self.numImages = len(self.dbImageFns)
        self.numQueries = len(self.qImageFns)
        self.utmDb = np.asarray(self.utmDb, np.float64).reshape(2, self.numImages)
        self.utmQ = np.asarray(self.utmQ, np.float64).reshape(2, self.numQueries)
        self._finish()

    def _finish(self) -> None:
        """Derived fields (after the positions or thresholds change)."""
        self.posDistThr = float(self.posDistThr)
        self.posDistSqThr = self.posDistThr ** 2
        self.nonTrivPosDistSqThr = float(self.nonTrivPosDistSqThr)
        self.cp = closePosition(self.utmDb, self.posDistThr)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, numImages={self.numImages}, "
                f"numQueries={self.numQueries})")

    # --- positives
    def isPosQ(self, iQuery, iDb):
        """Is database image ``iDb`` within posDistThr of query ``iQuery`` (elementwise,
        broadcasting; squared distance <= posDistSqThr)."""
        return sqdist(self.utmQ[:, np.asarray(iQuery)], self.utmDb[:, np.asarray(iDb)]) <= self.posDistSqThr

    def isPosDb(self, iDbQuery, iDb):
        """isPosQ with a database image as the query."""
        return sqdist(self.utmDb[:, np.asarray(iDbQuery)], self.utmDb[:, np.asarray(iDb)]) <= self.posDistSqThr

    def posDb(self, iDb):
        """Database images within posDistThr of database image(s) ``iDb`` (itself included)."""
        return self.cp.getPosDbIDs(iDb)[0]

    def _nontrivial(self, ids, dSq, iQuery, query_from_db):
        """Mask over flat (id, dSq, query) triples: which are non-trivial positives."""
        return (dSq > 1) & (dSq <= self.nonTrivPosDistSqThr)

    def _nontrivial_many(self, utm, iQuery, query_from_db):
        q = np.atleast_1d(np.asarray(iQuery, np.int64))
        ids, ds, owner = self.cp.pairs(utm.reshape(2, -1))
        keep = self._nontrivial(ids, ds, q[owner], query_from_db)
        splits = np.cumsum(np.bincount(owner[keep], minlength=q.size))[:-1]
        out = np.split(ids[keep], splits)
        return out[0] if np.ndim(iQuery) == 0 else out

    def nontrivialPosQ(self, iQuery):
        """Potential positives for training: 1 < squared distance <= nonTrivPosDistSqThr."""
        return self._nontrivial_many(self.utmQ[:, np.asarray(iQuery)], iQuery, False)

    def nontrivialPosDb(self, iDb):
        """nontrivialPosQ around database image(s) ``iDb``."""
        return self._nontrivial_many(self.utmDb[:, np.asarray(iDb)], iDb, True)

    # --- negatives
    def sampleNegsQ(self, iQuery, n, rng=None):
        """``n`` distinct random database ids that are not positives of query ``iQuery``
        (one id: 1-D; an array: len x n).  numpy's generator, not MATLAB's randsample."""
        return self.sampleNegs(self.utmQ[:, np.asarray(iQuery)], n, rng)

    def sampleNegsDb(self, iDb, n, rng=None):
        """sampleNegsQ around database image(s) ``iDb``."""
        return self.sampleNegs(self.utmDb[:, np.asarray(iDb)], n, rng)

    def sampleNegs(self, utm, n, rng=None):
        """``n`` distinct non-positive database ids per position (rows in random order)."""
        rng = np.random.default_rng() if rng is None else rng
        u = np.asarray(utm, np.float64)
        single = u.ndim == 1
        u = u.reshape(2, -1)
        m, N, n = u.shape[1], self.numImages, int(n)
        npos = self.cp.tree.query_ball_point(u.T, self.cp._radius, return_length=True)
        if m and N - np.min(npos) < n:
            raise ValueError(f"{self.name}: cannot sample {n} negatives from {N} images "
                             f"({int(np.max(npos))} positives)")
        out = np.empty((m, n), np.int64)
        todo = np.arange(m)
        draw = n + n // 4 + 16
        while todo.size:
            if draw >= 4 * N:  # close to all images: a full permutation per row
                cand = np.argsort(rng.random((todo.size, N)), axis=1)
            else:
                cand = rng.integers(0, N, size=(todo.size, draw))
            srt = np.sort(cand, axis=1)
            dup_sorted = np.zeros_like(srt, bool)
            dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
            # a value is a duplicate unless it is the first occurrence in its row
            first = np.argsort(cand, axis=1, kind="stable")
            dup = np.zeros_like(dup_sorted)
            np.put_along_axis(dup, first, dup_sorted, axis=1)
            ok = ~dup & ~self.cp.isPos(u[:, todo][:, :, None], cand)
            done = ok.sum(1) >= n
            packed, _ = left_pack(cand[done], np.zeros(cand[done].shape), ok[done], n)
            out[todo[done]] = packed
            todo = todo[~done]
            draw *= 2
        return out[0] if single else out
