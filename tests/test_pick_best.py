import numpy as np
import pytest

from matnet.pick_best import getBestEpoch

NS = [1, 2, 5, 10]


def test_plain_maximum_at_N():
    r = np.array([[.1, .2, .3], [.2, .3, .4], [.5, .7, .6], [.8, .9, .9]])
    assert getBestEpoch(r, NS, 5) == 2  # 1-based
    assert getBestEpoch(r, NS, 1) == 3
    assert getBestEpoch(r, NS, 10) == 2  # tie .9/.9 at N=10 -> recall@5 decides: epoch 2


def test_ties_broken_by_smaller_then_larger_N():
    # recall@5 tied between epochs 1 and 3; recall@2 tied too; recall@1 decides -> epoch 3
    r = np.array([[.1, .0, .2], [.3, .1, .3], [.6, .5, .6], [.7, .9, .8]])
    assert getBestEpoch(r, NS, 5) == 3
    # all smaller Ns tied: the larger Ns decide (recall@10)
    r = np.array([[.1, .0, .1], [.3, .1, .3], [.6, .5, .6], [.7, .9, .8]])
    assert getBestEpoch(r, NS, 5) == 3
    # complete tie: the earliest epoch
    r = np.array([[.1, .1], [.3, .3], [.6, .6], [.7, .7]])
    assert getBestEpoch(r, NS, 5) == 1
    # within 1e-6 counts as a tie
    r = np.array([[.1, .2], [.3, .3], [.6, .6 + 5e-7], [.7, .7]])
    assert getBestEpoch(r, NS, 5) == 2


def test_bad_inputs():
    with pytest.raises(ValueError, match="N=3"):
        getBestEpoch(np.zeros((4, 2)), NS, 3)
    with pytest.raises(ValueError, match="rows"):
        getBestEpoch(np.zeros((3, 2)), NS, 5)
