"""matnet.search.exact: a database larger than the distance block has its squared norms
computed in blocks of rows (no second copy of it, which on a GPU is 16 GB for 1M x 4096)
with the same result as in one piece."""
import numpy as np
import torch

from matnet.search.exact import KnnAccumulator


def test_blocked_norms_give_the_same_search(monkeypatch):
    import matnet.search.exact as exact
    g = np.random.default_rng(0)
    db = torch.from_numpy(g.standard_normal((1000, 24)).astype(np.float32))
    q = torch.from_numpy(g.standard_normal((7, 24)).astype(np.float32))
    one = KnnAccumulator(q, 10)  # norms in one piece
    one.add(0, db)
    monkeypatch.setattr(exact, "NORM_BLOCK", 96)  # 4 rows per norm block, through one reused temporary
    seen = []
    real = torch.mul

    def mul(*a, **k):
        seen.append(tuple(k["out"].shape) if "out" in k else None)
        return real(*a, **k)
    monkeypatch.setattr(torch, "mul", mul)
    assert torch.equal(exact.squared_norms(db), (db * db).sum(1))  # the same numbers
    blocked = KnnAccumulator(q, 10, block=100)  # 1 query per distance block
    blocked.add(0, db)
    assert set(seen) == {(4, 24)} and len(seen) == 2 * 250
    ids1, ds1 = one.result()
    ids2, ds2 = blocked.result()
    np.testing.assert_array_equal(ids1, ids2)
    np.testing.assert_allclose(ds1, ds2, rtol=1e-6)
