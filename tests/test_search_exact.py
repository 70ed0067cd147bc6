"""matnet.search.exact: a database larger than the distance block has its squared norms
computed in blocks of rows (no second copy of it, which on a GPU is 16 GB for 1M x 4096)
with the same result as in one piece."""
import numpy as np
import torch

from matnet.search.exact import KnnAccumulator


def test_blocked_norms_give_the_same_search():
    g = np.random.default_rng(0)
    db = torch.from_numpy(g.standard_normal((1000, 24)).astype(np.float32))
    q = torch.from_numpy(g.standard_normal((7, 24)).astype(np.float32))
    one = KnnAccumulator(q, 10)  # 24000 entries < the default block: norms in one piece
    one.add(0, db)
    blocked = KnnAccumulator(q, 10, block=100)  # 4 rows per norm block, 1 query per distance block
    seen = []
    real = torch.Tensor.split

    def split(t, *a, **k):
        seen.append(a[0] if a else k)
        return real(t, *a, **k)
    torch.Tensor.split = split
    try:
        blocked.add(0, db)
    finally:
        torch.Tensor.split = real
    assert seen == [4]
    ids1, ds1 = one.result()
    ids2, ds2 = blocked.result()
    np.testing.assert_array_equal(ids1, ids2)
    np.testing.assert_allclose(ds1, ds2, rtol=1e-6)
