"""dbTokyoTimeMachine: Tokyo Time Machine train/val (datasets/dbTokyoTimeMachine.m)."""
from __future__ import annotations

import numpy as np

from .db_base import dbBase, left_pack
from .local_paths import folder, localPaths


class dbTokyoTimeMachine(dbBase):
    """``dbTokyoTimeMachine(whichSet)`` with whichSet train/val; database and queries
    under ``<dbRoot>/images/`` (dbRoot defaults to localPaths' dsetRootTokyoTM).
    Extra properties ``dbTimeStamp``, ``qTimeStamp`` (YYYYMM).  Queries are drawn from
    the database, so non-trivial positives need another time stamp and search
    results with the query's time stamp are dropped."""

    def __init__(self, whichSet="train", specDir=None, dbRoot=None):
        if whichSet not in ("train", "val"):
            raise ValueError(f"dbTokyoTimeMachine: whichSet must be train or val, got {whichSet!r}")
        self.name = f"tokyoTM_{whichSet}"
        root = localPaths()["dsetRootTokyoTM"] if dbRoot is None else dbRoot
        self.dbPath = folder(root, "images")
        self.qPath = folder(root, "images")
        self.dbLoad(specDir)

    def _nontrivial(self, ids, dSq, iQuery, query_from_db):
        t = (self.dbTimeStamp if query_from_db else self.qTimeStamp)[iQuery]
        return (dSq > 1) & (dSq <= self.nonTrivPosDistSqThr) & (self.dbTimeStamp[ids] != t)

    def nnSearchPostprocess(self, searcher, iQuery, nTop):
        """Retrieve 10*nTop, drop results taken at the query's time stamp, keep nTop."""
        q = np.atleast_1d(np.asarray(iQuery, np.int64))
        ids, ds = searcher(q, nTop * 10)
        ids = np.asarray(ids, np.int64).reshape(q.size, -1)
        ds = np.asarray(ds, np.float32).reshape(q.size, -1)
        valid = ids >= 0
        keep = valid & (self.dbTimeStamp[np.maximum(ids, 0)] != self.qTimeStamp[q][:, None])
        out = left_pack(ids, ds, keep, nTop)
        return (out[0][0], out[1][0]) if np.ndim(iQuery) == 0 else out
