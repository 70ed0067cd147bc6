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
    def negatives(self, utm) -> np.ndarray:
        """How many database images are not positives (squared distance > posDistSqThr)
        of each position of ``utm`` (2-vector: a number; 2 x M: M counts)."""
        u = np.asarray(utm, np.float64)
        _, _, owner = self.cp.pairs(u.reshape(2, -1))
        n = self.numImages - np.bincount(owner, minlength=u.reshape(2, -1).shape[1])
        return int(n[0]) if u.ndim == 1 else n

    def negativesQ(self, iQuery):
        """:meth:`negatives` of query (or queries) ``iQuery``."""
        return self.negatives(self.utmQ[:, np.asarray(iQuery)])

    def _query_label(self, i: int) -> str:
        fns = getattr(self, "qImageFns", None)
        return f"query {i} ({fns[i]})" if fns is not None and 0 <= i < len(fns) else f"query {i}"

    def check_negatives(self, n: int, option: str = "nNegChoice", queries=None) -> None:
        """Refuse (ValueError) when some query of ``queries`` (default: all; 0-based)
        has fewer than ``n`` negatives, naming the query with the fewest, its count, the
        option and the largest value that works.  trainWeakly calls it before any
        feature is computed: sampling more negatives than exist never ends, in
        MATLAB's dbBase.sampleNegs as before here (issue 24, case 20)."""
        q = np.arange(self.numQueries) if queries is None else np.asarray(queries, np.int64).reshape(-1)
        if q.size == 0:
            return
        counts = np.atleast_1d(self.negativesQ(q))
        i = int(np.argmin(counts))
        if counts[i] < n:
            nBad = int((counts < n).sum())
            raise ValueError(f"{self.name}: {self._query_label(int(q[i]))} has {int(counts[i])} negatives "
                             f"(database images farther than posDistThr={self.posDistThr:g} m, of "
                             f"{self.numImages}), fewer than {option}={n} asks ({nBad} of {q.size} queries "
                             f"have fewer); set {option} to at most {int(counts[i])}")

    def sampleNegsQ(self, iQuery, n, rng=None, option: str = "nNegChoice"):
        """``n`` distinct random database ids that are not positives of query ``iQuery``
        (one id: 1-D; an array: len x n).  numpy's generator, not MATLAB's randsample.
        Refuses naming the query (and ``option``) when one has fewer than ``n`` negatives."""
        q = np.asarray(iQuery)
        labels = [self._query_label(int(i)) for i in q.reshape(-1)]
        return self.sampleNegs(self.utmQ[:, q], n, rng, option=option, labels=labels)

    def sampleNegsDb(self, iDb, n, rng=None, option: str = "nNegChoice"):
        """sampleNegsQ around database image(s) ``iDb``."""
        d = np.asarray(iDb)
        return self.sampleNegs(self.utmDb[:, d], n, rng, option=option,
                               labels=[f"database image {int(i)}" for i in d.reshape(-1)])

    def sampleNegs(self, utm, n, rng=None, option: str = "nNegChoice", labels=None):
        """``n`` distinct non-positive database ids per position (rows in random order).

        Every position must have ``n`` negatives, else ValueError naming the position
        with the fewest (``labels[j]``, default "position j"), its count and ``option``.
        MATLAB's sampleNegs draws round(1.1 n) of numImages until it holds n
        negatives: it errors in randsample when round(1.1 n) > numImages and loops
        forever when fewer than n negatives exist; here each row is checked first
        (before: only the position with the fewest positives was, so another query
        with fewer negatives than ``n`` hung; issue 24, case 20)."""
        rng = np.random.default_rng() if rng is None else rng
        u = np.asarray(utm, np.float64)
        single = u.ndim == 1
        u = u.reshape(2, -1)
        m, N, n = u.shape[1], self.numImages, int(n)
        if m:
            counts = self.negatives(u)
            j = int(np.argmin(counts))
            if counts[j] < n:
                who = labels[j] if labels is not None else f"position {j}"
                nBad = int((counts < n).sum())
                raise ValueError(f"{self.name}: cannot sample {option}={n} negatives: {who} has "
                                 f"{int(counts[j])} negatives (database images farther than "
                                 f"posDistThr={self.posDistThr:g} m, of {N})"
                                 + (f"; {nBad} of {m} have fewer than {n}" if m > 1 else "")
                                 + f"; set {option} to at most {int(counts[j])}")
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
