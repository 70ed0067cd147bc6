"""Hard-negative mining on cached features, as in trainWeakly.m's inner loop."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def sq_dists(feats: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Squared L2 distances from every row of ``feats`` (n x D) to ``q`` (D), computed
    as |x|^2 - 2 x.q + |q|^2 (yael_nn's way)."""
    return torch.einsum("ij,ij->i", feats, feats) - 2 * (feats @ q) + q @ q


@dataclass
class MinedTuple:
    """One query's training tuple mined on the cache (0-based database ids)."""
    posID: int
    dPos: float
    negIDs: np.ndarray        # violating negatives to load (at most nNegCap), nearest first
    negCache: np.ndarray      # the query's new negative cache (nearest nNegCache before filtering)
    nViolating: int
    nVeryHard: int
    loss: float               # sum of hinges over the nNegCap*10 nearest negatives (printLoss)


def mine_query(qFeat: torch.Tensor, dbFeat: torch.Tensor, potPosIDs, negCache, sampledNegs,
              nNegCap: int, nNegCache: int, margin: float, excludeVeryHard: bool = False) -> MinedTuple:
    """trainWeakly.m's mining for one query on the cached features.

    ``qFeat`` (D) is the query's cached feature, ``dbFeat`` N x D the database cache.
    The best positive is the nearest of ``potPosIDs``; candidate negatives are
    unique(negCache U sampledNegs) (sorted ids), of which the min(10*nNegCap, n)
    nearest are kept; the first nNegCache of those become the new cache; negatives
    with d2 < d2pos + margin violate (minus d2 < d2pos with ``excludeVeryHard``) and
    the nNegCap nearest violating ones are returned.  Ties go to the smaller id.
    """
    potPosIDs = np.asarray(potPosIDs, dtype=np.int64).reshape(-1)
    if potPosIDs.size == 0:
        raise ValueError("mine_query: the query has no potential positives")
    dev = dbFeat.device
    dp = sq_dists(dbFeat[torch.as_tensor(potPosIDs, device=dev)], qFeat)
    ip = int(torch.argmin(dp))
    posID, dPos = int(potPosIDs[ip]), float(dp[ip])
    cands = np.unique(np.concatenate([np.asarray(negCache, np.int64).reshape(-1),
                                      np.asarray(sampledNegs, np.int64).reshape(-1)]))
    ds = sq_dists(dbFeat[torch.as_tensor(cands, device=dev)], qFeat).cpu().numpy()
    k = min(nNegCap * 10, cands.size)
    order = np.argsort(ds, kind="stable")[:k]
    cands, ds = cands[order], ds[order]
    newCache = cands[:nNegCache].copy()
    veryHard = ds < dPos
    violating = ds < dPos + margin
    if excludeVeryHard:
        violating &= ~veryHard
    loss = float(np.maximum(dPos + margin - ds, 0).sum())
    negIDs = cands[violating][:nNegCap]
    return MinedTuple(posID, dPos, negIDs, newCache, int(violating.sum()), int(veryHard.sum()), loss)
