"""The triplet ranking loss of trainWeakly.m and its hand-written dz/dy."""
from __future__ import annotations

import torch


def triplet_loss(feats: torch.Tensor, margin: float, excludeVeryHard: bool = False):
    """Loss and gradient for one training tuple, as trainWeakly.m computes them.

    ``feats`` is n x D: row 0 the query, row 1 the best positive, rows 2.. the
    negatives.  With squared distances d2 to the query,
    loss = sum_neg max(d2pos + margin - d2neg, 0).  A negative *violates* when
    d2neg < d2pos + margin (and, with ``excludeVeryHard``, not d2neg < d2pos).
    dz/dy (n x D) is MATLAB's: query 2*(sum_viol neg - nViol*pos),
    positive 2*nViol*(pos - query), each violating negative 2*(query - neg), else 0.
    Returns (loss, dzdy, nViolating, nVeryHard); loss includes every negative's hinge
    (also very hard ones), as MATLAB reports it.
    """
    if feats.dim() != 2 or feats.shape[0] < 3:
        raise ValueError(f"triplet_loss: feats must be n x D with n >= 3 (query, positive, negatives), "
                         f"got shape {tuple(feats.shape)}")
    q, p, negs = feats[0], feats[1], feats[2:]
    dsSq = ((negs - q) ** 2).sum(1)
    dPos = ((p - q) ** 2).sum()
    veryHard = dsSq < dPos
    violating = dsSq < dPos + margin
    if excludeVeryHard:
        violating &= ~veryHard
    nViol = int(violating.sum())
    loss = float(torch.clamp(dPos + margin - dsSq, min=0).sum())
    dzdy = torch.zeros_like(feats)
    if nViol:
        vneg = negs[violating]
        dzdy[0] = 2 * (vneg.sum(0) - nViol * p)
        dzdy[1] = 2 * nViol * (p - q)
        dzdy[2:][violating] = 2 * (q - vneg)
    return loss, dzdy, nViol, int(veryHard.sum())
