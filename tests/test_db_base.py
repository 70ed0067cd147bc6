"""dbBase's negative sampling: every query gets its nNegChoice negatives or the call
refuses, naming the query, its negatives and the option (never a silent endless loop)."""
import signal

import numpy as np
import pytest

from matnet.datasets.db_base import dbBase


def _db(utmDb, utmQ, name="toy"):
    db = dbBase()
    db.name, db.whichSet = name, "train"
    db.dbImageFns = [f"db{i:03d}.jpg" for i in range(utmDb.shape[1])]
    db.qImageFns = [f"q{i:03d}.jpg" for i in range(utmQ.shape[1])]
    db.utmDb, db.utmQ = np.asarray(utmDb, float), np.asarray(utmQ, float)
    db.numImages, db.numQueries = utmDb.shape[1], utmQ.shape[1]
    db.posDistThr, db.nonTrivPosDistSqThr = 25.0, 100.0
    db._finish()
    return db


def _crowded():
    """20 database images: 8 around (0, 0), 12 far apart; query 0 at (0, 0) has 12
    negatives, query 1 far from all has 20."""
    utmDb = np.hstack([np.vstack([np.arange(8.0), np.zeros(8)]),
                       np.vstack([1000.0 + 100 * np.arange(12), np.zeros(12)])])
    return _db(utmDb, np.array([[0.0, -5000.0], [0.0, 0.0]]))


class _Alarm:
    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        def hang(*_):
            raise TimeoutError("sampleNegs did not return: an endless loop")
        self.old = signal.signal(signal.SIGALRM, hang)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


def test_negative_counts():
    db = _crowded()
    np.testing.assert_array_equal(db.negativesQ(np.array([0, 1])), [12, 20])
    assert db.negativesQ(0) == 12


def test_nNegChoice_above_one_querys_negatives_refuses_without_hanging():
    """Issue 24 case 20: the guard took the minimum positives over the queries, so a
    query with fewer negatives than nNegChoice looped forever (probe: an hour)."""
    db = _crowded()
    with _Alarm(10), pytest.raises(ValueError) as e:
        db.sampleNegsQ(np.array([0, 1]), 15, rng=np.random.default_rng(0))
    msg = str(e.value)
    assert "nNegChoice" in msg and "query 0" in msg and "q000.jpg" in msg and "12 negatives" in msg
    assert "at most 12" in msg
    with _Alarm(10), pytest.raises(ValueError, match=r"nNegChoice.*at most 12"):
        db.sampleNegsQ(0, 13)
    # exactly the negatives there are: every one of them, for both queries
    negs = db.sampleNegsQ(np.array([0, 1]), 12, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(np.sort(negs[0]), np.arange(8, 20))


def test_check_negatives_names_the_query_and_the_option():
    db = _crowded()
    db.check_negatives(12, "nNegChoice")
    with pytest.raises(ValueError, match=r"toy: query 0 \(q000\.jpg\) has 12 negatives.*nNegChoice=13"):
        db.check_negatives(13, "nNegChoice")
    db.check_negatives(13, "nNegChoice", queries=[1])  # only the queries that are sampled
