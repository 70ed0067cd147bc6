"""getBestEpoch / pickBestNet: choose the epoch with the best validation recall."""
from __future__ import annotations

import numpy as np


def getBestEpoch(recalls, recallNs, N: int = 5) -> int:
    """getBestEpoch.m: the 1-based epoch (column of ``recalls``, nRecallNs x nEpochs)
    with the best recall@N; ties are broken by recall@(smaller N) going down to
    recallNs[0], then by the larger Ns in increasing order, then the earliest epoch.
    Values within 1e-6 of the maximum count as equal."""
    recalls = np.asarray(recalls, dtype=np.float64)
    recallNs = [int(n) for n in np.asarray(recallNs).reshape(-1)]
    if recalls.ndim == 1:
        recalls = recalls[:, None]
    if recalls.shape[0] != len(recallNs):
        raise ValueError(f"getBestEpoch: recalls has {recalls.shape[0]} rows but there are "
                         f"{len(recallNs)} recallNs")
    if recalls.shape[1] == 0:
        raise ValueError("getBestEpoch: no epochs (recalls has no columns)")
    if N not in recallNs:
        raise ValueError(f"getBestEpoch: N={N} is not one of recallNs {recallNs}")
    posN = recallNs.index(N)
    order = list(range(posN, -1, -1)) + list(range(posN + 1, len(recallNs)))
    potential = np.ones(recalls.shape[1], dtype=bool)
    for p in order:
        best = recalls[p, potential].max()
        potential &= np.abs(recalls[p] - best) < 1e-6
        if potential.sum() <= 1:
            break
    return int(np.flatnonzero(potential)[0]) + 1
