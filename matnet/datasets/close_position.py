"""closePosition: which database positions lie within ``posDistThr`` of a point.

Squared distance <= posDistThr^2 (inclusive), computed in float64 as in MATLAB.  A
KD-tree (scipy cKDTree) replaces MATLAB's hash grid; lookups take many points at once.
Ids are 0-based and returned in ascending order (MATLAB returns grid-cell order).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distance between 2 x ... coordinate arrays (broadcast over the rest)."""
    return (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2


class closePosition:
    """``utm`` 2 x N (x, y) positions; ``posDistSqThr = posDistThr^2``."""

    def __init__(self, utm, posDistThr):
        self.utm = np.asarray(utm, dtype=np.float64).reshape(2, -1)
        self.posDistThr = float(posDistThr)
        self.posDistSqThr = self.posDistThr ** 2
        self.tree = cKDTree(self.utm.T)
        # slightly larger radius for the tree, then the exact squared test
        self._radius = self.posDistThr * (1 + 1e-9) + 1e-9

    def getPosIDs(self, utm):
        """(ids, squared distances) of positions within the threshold of ``utm``; a
        2-vector gives two arrays, a 2 x M array gives two lists of M arrays."""
        u = np.asarray(utm, dtype=np.float64)
        ids, ds, owner = self.pairs(u.reshape(2, -1))
        splits = np.cumsum(np.bincount(owner, minlength=u.reshape(2, -1).shape[1]))[:-1]
        ids, ds = np.split(ids, splits), np.split(ds, splits)
        return (ids[0], ds[0]) if u.ndim == 1 else (ids, ds)

    def pairs(self, u: np.ndarray):
        """All (id, squared distance, column of ``u``) within the threshold of the 2 x M
        points ``u``, flat, grouped by column, ids ascending within a column."""
        cand = self.tree.query_ball_point(u.T, self._radius, return_sorted=True)
        lens = np.fromiter((len(c) for c in cand), np.int64, count=len(cand))
        flat = np.concatenate([np.asarray(c, np.int64) for c in cand]) if lens.sum() else np.zeros(0, np.int64)
        owner = np.repeat(np.arange(u.shape[1]), lens)
        d = sqdist(u[:, owner], self.utm[:, flat])
        keep = d <= self.posDistSqThr
        return flat[keep], d[keep], owner[keep]

    def getPosDbIDs(self, dbID):
        """getPosIDs around database position(s) ``dbID`` (0-based)."""
        return self.getPosIDs(self.utm[:, np.asarray(dbID)])

    def isPos(self, utm, IDs):
        """Elementwise: is position ``IDs`` within the threshold of ``utm`` (2-vector, or
        2 x ... broadcasting against ``IDs``)."""
        ids = np.asarray(IDs, dtype=np.int64)
        u = np.asarray(utm, dtype=np.float64)
        if u.ndim == 1:
            u = u.reshape(2, *([1] * ids.ndim))
        return sqdist(u, self.utm[:, ids]) <= self.posDistSqThr
