"""dbTokyo247: the Tokyo 24/7 test set (datasets/dbTokyo247.m)."""
from __future__ import annotations

import numpy as np

from .db_base import dbBase, left_pack
from .local_paths import folder, localPaths

CUTOUTS_PER_PANORAMA = 12
TIME_OF_DAY = ("night", "day", "sunset")  # indexed by (1-based query index) mod 3


def panorama_of(ids, legacyNMS: bool = False):
    """Panorama of 0-based database ids: ``id // 12``.  ``legacyNMS``: the pre-2017-01-06
    MATLAB code, ``floor(int32(id1 - 1) / 12)`` whose int32 division rounds to nearest
    (half away from zero), i.e. ``floor(id/12 + 0.5)`` here."""
    ids = np.asarray(ids, np.int64)
    if legacyNMS:
        return (2 * ids + CUTOUTS_PER_PANORAMA) // (2 * CUTOUTS_PER_PANORAMA)
    return ids // CUTOUTS_PER_PANORAMA


def first_per_panorama(searcher, iQuery, nTop, cutouts, panorama):
    """Search ``cutouts * nTop`` results (``searcher(qIds, n)`` -> (ids, ds)), keep the
    best of each panorama (``panorama(ids)`` -> ints), then the first ``nTop``; rows
    padded with -1 / inf.  One query id gives 1-D outputs."""
    q = np.atleast_1d(np.asarray(iQuery, np.int64))
    ids, ds = searcher(q, nTop * cutouts)
    ids = np.asarray(ids, np.int64).reshape(q.size, -1)
    ds = np.asarray(ds, np.float32).reshape(q.size, -1)
    valid = ids >= 0
    pano = np.where(valid, panorama(np.maximum(ids, 0)), -1)
    order = np.argsort(pano, axis=1, kind="stable")
    srt = np.take_along_axis(pano, order, axis=1)
    first_sorted = np.ones_like(srt, bool)
    first_sorted[:, 1:] = srt[:, 1:] != srt[:, :-1]
    first = np.zeros_like(first_sorted)
    np.put_along_axis(first, order, first_sorted, axis=1)
    out = left_pack(ids, ds, first & valid, nTop)
    return (out[0][0], out[1][0]) if np.ndim(iQuery) == 0 else out


class dbTokyo247(dbBase):
    """Tokyo 24/7: 6332 panoramas x 12 consecutive cutouts; images at ``<dbRoot>/images/``,
    queries at ``<dbRoot>/query/`` (dbRoot defaults to localPaths' dsetRootTokyo247).
    The distributed database images are PNG while the spec lists .jpg (the image
    reader falls back to the other extension).  ``legacyNMS=True`` reproduces the
    pre-2017 panorama rounding of the non-max suppression."""

    def __init__(self, specDir=None, dbRoot=None, legacyNMS: bool = False):
        self.name = "tokyo247"
        root = localPaths()["dsetRootTokyo247"] if dbRoot is None else dbRoot
        self.dbPath = folder(root, "images")
        self.qPath = folder(root, "query")
        self.legacyNMS = legacyNMS
        self.dbLoad(specDir)

    def nnSearchPostprocess(self, searcher, iQuery, nTop):
        """Non-max suppression as Torii et al. CVPR 2015: retrieve 12*nTop, keep the first
        result of each panorama, the first nTop of those.  ``searcher(qIds, n)`` -> (ids, ds);
        returns (ids, ds) rows padded with -1 / inf."""
        return first_per_panorama(searcher, iQuery, nTop, CUTOUTS_PER_PANORAMA,
                                  lambda ids: panorama_of(ids, self.legacyNMS))

    def query_time_of_day(self, iQuery=None):
        """'day' / 'sunset' / 'night' of 0-based queries (all by default): the 1-based
        index mod 3 is 1, 2, 0."""
        q = np.arange(self.numQueries) if iQuery is None else np.asarray(iQuery, np.int64)
        return np.asarray(TIME_OF_DAY)[(q + 1) % 3]

    def recall_by_time_of_day(self, allRecalls):
        """Mean recall per N for each of day / sunset / night from testFromFn's
        ``allRecalls`` over all queries (rows in query order)."""
        allRecalls = np.asarray(allRecalls)
        if allRecalls.shape[0] != self.numQueries:
            raise ValueError(f"need one row per query ({self.numQueries}), got {allRecalls.shape[0]}")
        tod = self.query_time_of_day()
        return {t: allRecalls[tod == t].mean(0) for t in ("day", "sunset", "night")}
