import torch

from matnet.train.loss import triplet_loss


def _feats(nNeg, D=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2 + nNeg, D, generator=g, dtype=torch.float64)


def test_dzdy_equals_autograd_of_hinge_loss():
    f = _feats(9)
    f[1] = f[0] + 0.3 * (f[1] - f[0])  # positive fairly close, so some negatives violate and some do not
    d2 = ((f[2:] - f[0]) ** 2).sum(1)
    margin = float(d2.median() - ((f[1] - f[0]) ** 2).sum()) + 1e-3  # about half the negatives violate
    loss, dzdy, nViol, nVH = triplet_loss(f, margin)
    x = f.clone().requires_grad_(True)
    dpos = ((x[1] - x[0]) ** 2).sum()
    dneg = ((x[2:] - x[0]) ** 2).sum(1)
    ref = torch.clamp(dpos + margin - dneg, min=0).sum()
    ref.backward()
    assert 0 < nViol < 9
    assert abs(loss - ref.item()) < 1e-12
    torch.testing.assert_close(dzdy, x.grad, rtol=1e-12, atol=1e-12)


def test_counts_and_hand_values():
    # 1-D features: q=0, p=1 (d2pos=1); negatives at d2 = 0.25, 1.0 (not <), 1.21, 4
    f = torch.tensor([[0.0], [1.0], [0.5], [-1.0], [1.1], [2.0]], dtype=torch.float64)
    loss, dzdy, nViol, nVH = triplet_loss(f, margin=0.5)
    # violating: d2 < 1.5 -> 0.25, 1.0, 1.21 ; very hard: d2 < 1 -> 0.25
    assert (nViol, nVH) == (3, 1)
    assert abs(loss - ((1.5 - 0.25) + (1.5 - 1.0) + (1.5 - 1.21))) < 1e-12
    # query: 2*(sum viol negs - 3*p) = 2*(0.5 - 1 + 1.1 - 3) ; pos: 2*3*(1-0); negs: 2*(0 - n)
    expected = torch.tensor([[2 * (0.5 - 1 + 1.1 - 3)], [6.0], [-1.0], [2.0], [-2.2], [0.0]], dtype=torch.float64)
    torch.testing.assert_close(dzdy, expected)
    # excludeVeryHard: the 0.25 negative no longer violates (but still counts in the reported loss)
    loss2, dzdy2, nViol2, _ = triplet_loss(f, margin=0.5, excludeVeryHard=True)
    assert nViol2 == 2 and abs(loss2 - loss) < 1e-12
    assert dzdy2[2, 0] == 0 and abs(dzdy2[1, 0] - 4.0) < 1e-12
    assert abs(dzdy2[0, 0] - 2 * (-1 + 1.1 - 2)) < 1e-12


def test_no_violation_gives_zero_gradient():
    f = torch.tensor([[0.0], [0.1], [5.0], [-6.0]])
    loss, dzdy, nViol, _ = triplet_loss(f, margin=0.1)
    assert loss == 0 and nViol == 0 and torch.all(dzdy == 0)
