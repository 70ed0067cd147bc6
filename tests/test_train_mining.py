import numpy as np
import pytest
import torch

from matnet.train.mining import mine_query


def _cache():
    """1-D features: the query at 0, database images at chosen distances."""
    pos = {0: 3.0, 1: 1.0, 2: 2.0}                       # potential positives: nearest is id 1 (d2=1)
    neg = {10: 0.5, 11: 1.2, 12: 0.9, 13: 1.05, 14: 4.0, 15: 5.0, 16: 6.0, 17: 1.1, 18: 0.7, 19: 8.0}
    db = np.full((20, 1), 100.0, np.float32)
    for i, d in {**pos, **neg}.items():
        db[i, 0] = d
    return torch.zeros(1), torch.from_numpy(db), list(pos), neg


def _reference(neg_d, cands, dPos, margin, nNegCap, nNegCache, exclude):
    """Straightforward reference: sort candidates by d2, keep 10*nNegCap, filter, cap."""
    c = sorted(set(cands), key=lambda i: (neg_d[i] ** 2, i))[: 10 * nNegCap]
    cache = c[:nNegCache]
    viol = [i for i in c if neg_d[i] ** 2 < dPos + margin and not (exclude and neg_d[i] ** 2 < dPos)]
    return cache, viol[:nNegCap], len(viol)


@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("nNegCap,nNegCache", [(10, 10), (2, 3), (1, 1)])
def test_mining_against_reference(exclude, nNegCap, nNegCache):
    q, db, pos, neg = _cache()
    cache, sampled = [12, 19], [10, 11, 13, 14, 15, 16, 17, 18, 19]
    m = mine_query(q, db, pos, cache, sampled, nNegCap, nNegCache, margin=0.25, excludeVeryHard=exclude)
    assert m.posID == 1 and abs(m.dPos - 1.0) < 1e-6
    rcache, rneg, rn = _reference(neg, cache + sampled, 1.0, 0.25, nNegCap, nNegCache, exclude)
    assert m.negCache.tolist() == rcache
    assert m.negIDs.tolist() == rneg
    assert m.nViolating == rn
    # very hard: d2 < 1 -> ids 10 (0.25), 18 (0.49), 12 (0.81), among the 10*nNegCap nearest
    kept = sorted(set(cache + sampled), key=lambda i: neg[i] ** 2)[: 10 * nNegCap]
    assert m.nVeryHard == sum(neg[i] ** 2 < 1 for i in kept)
    assert abs(m.loss - sum(max(1.25 - neg[i] ** 2, 0) for i in kept)) < 1e-5


def test_cache_is_kept_before_filtering_and_no_violation():
    q, db, pos, neg = _cache()
    # huge margin excluded: only far negatives -> none violates, cache still filled with nearest ones
    m = mine_query(q, db, pos, [], [14, 15, 16, 19], nNegCap=10, nNegCache=2, margin=0.1)
    assert m.nViolating == 0 and m.negIDs.size == 0
    assert m.negCache.tolist() == [14, 15]


def test_no_positives_is_an_error():
    q, db, _, _ = _cache()
    with pytest.raises(ValueError, match="no potential positives"):
        mine_query(q, db, [], [], [10], 1, 1, 0.1)
