"""recallAtN / testCore / testFromFn / testCoreRank / rawNnSearch against hand-derived
values and plain numpy references."""
import math

import numpy as np
import pytest

from converters.atomic_file import GLOB as TEMPORARIES
from converters.bin_features import BinFeatureError, read_bin, write_bin
from matnet.recall_at_n import (RECALL_NS, rawNnSearch, recallAtN, testCore, testCoreRank,
                             testFromFn)
from helpers.dataset_makers import make_db, street_positions


def ref_recalls(qFeat, dbFeat, utmQ, utmDb, ns, thr=25.0):
    """Per query: sort all database images by exact squared L2 (stable), recall@N = any
    of the first N within thr metres.  Plain loops."""
    out = np.zeros((qFeat.shape[0], len(ns)))
    for i in range(qFeat.shape[0]):
        d = ((dbFeat.astype(np.float64) - qFeat[i].astype(np.float64)) ** 2).sum(1)
        order = np.argsort(d, kind="stable")
        geo = ((utmDb[:, order] - utmQ[:, i:i + 1]) ** 2).sum(0) <= thr ** 2
        for j, n in enumerate(ns):
            out[i, j] = float(geo[:min(n, len(order))].any())
    return out


# ---------------------------------------------------------------- rawNnSearch

def test_rawNnSearch_matches_bruteforce():
    rng = np.random.default_rng(0)
    db, q = rng.standard_normal((300, 16)).astype(np.float32), rng.standard_normal((40, 16)).astype(np.float32)
    ids, ds = rawNnSearch(q, db, 7)
    for i in range(q.shape[0]):
        d = ((db.astype(np.float64) - q[i]) ** 2).sum(1)
        np.testing.assert_array_equal(ids[i], np.argsort(d, kind="stable")[:7])
        np.testing.assert_allclose(ds[i], np.sort(d)[:7], rtol=1e-4, atol=1e-4)
    one_ids, _ = rawNnSearch(q[3], db, 7)
    np.testing.assert_array_equal(one_ids, ids[3])
    assert rawNnSearch(q, db, 1000)[0].shape == (40, 300)  # k = min(k, N)


def test_rawNnSearch_ties_lower_id_first():
    db = np.array([[1, 0], [0, 0], [1, 0], [5, 5], [1, 0]], np.float32)
    ids, ds = rawNnSearch(np.array([[1, 0]], np.float32), db, 4)
    np.testing.assert_array_equal(ids[0], [0, 2, 4, 1])
    np.testing.assert_allclose(ds[0], [0, 0, 0, 1])


# ---------------------------------------------------------------- recallAtN

def test_recallAtN_hand_rankings():
    rankings = np.array([[5, 2, 7, 9],      # first positive at rank 2
                         [3, -1, -1, -1],   # one result, positive
                         [8, 6, -1, -1],    # two results, none positive
                         [-1, -1, -1, -1],  # nothing returned
                         [1, 4, 0, 2]])     # positive at rank 4 (id 2)
    positives = {0: {2}, 1: {3}, 2: {1}, 3: {0}, 4: {2}}

    def searcher(qs, nTop):
        return rankings[qs, :nTop]

    def isPos(q, d):
        return np.array([int(b) in positives[int(a)] for a, b in zip(q, d)])

    res, rec = recallAtN(searcher, 5, isPos, [1, 2, 3, 4], printN=2)
    expected = np.array([[0, 1, 1, 1],
                         [1, 1, 1, 1],   # fewer results than N: recall at the last one
                         [0, 0, 0, 0],
                         [0, 0, 0, 0],
                         [0, 0, 0, 1]], float)
    np.testing.assert_array_equal(rec, expected)
    assert res == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="sorted"):
        recallAtN(searcher, 5, isPos, [3, 1])


def test_recallAtN_sampling_is_fixed_and_sorted():
    def searcher(qs, nTop):
        return np.tile(np.arange(nTop), (len(qs), 1))
    rec_a = recallAtN(searcher, 50, lambda q, d: (q % 2 == 0) & (d == 0), [1], nSample=10)[1]
    rec_b = recallAtN(searcher, 50, lambda q, d: (q % 2 == 0) & (d == 0), [1], nSample=10)[1]
    assert rec_a.shape == (10, 1)
    np.testing.assert_array_equal(rec_a, rec_b)


# ---------------------------------------------------------------- geometry boundary

def test_posDistThr_boundary_inclusive(tmp_path):
    # database at 25 m exactly (3-4-5 triangle), just over 25 m, and far away
    utmDb = np.array([[100 + 15, 100 + 25.001, 900], [100 + 20, 100, 900]])
    db = make_db(tmp_path, utmDb, [[100], [100]])
    np.testing.assert_array_equal(db.isPosQ(0, [0, 1, 2]), [True, False, False])
    assert db.posDistSqThr == 625.0  # uint8 25 squared without saturation
    feats_db = np.array([[0, 1], [1, 0], [0.9, 0.1]], np.float32)
    # query closest to the 25.001 m image, then the far one, then the 25 m one
    recall, all_rec = testCore(db, np.array([[1, 0]], np.float32), feats_db, recallNs=[1, 2, 3])
    np.testing.assert_array_equal(all_rec, [[0, 0, 1]])


# ---------------------------------------------------------------- testFromFn

@pytest.fixture
def toy(tmp_path):
    nDb, nQ, D = 400, 60, 32
    rng, utmDb, utmQ = street_positions(1, nDb, nQ, 400)
    centres = rng.standard_normal((D, 1)).T
    dbFeat = (rng.standard_normal((nDb, D)) + utmDb[0][:, None] / 50 * centres).astype(np.float32)
    qFeat = (rng.standard_normal((nQ, D)) + utmQ[0][:, None] / 50 * centres).astype(np.float32)
    db = make_db(tmp_path, utmDb, utmQ)
    write_bin(tmp_path / "db.bin", dbFeat)
    write_bin(tmp_path / "q.bin", qFeat)
    return db, dbFeat, qFeat, tmp_path


def test_testFromFn_matches_reference(toy):
    db, dbFeat, qFeat, d = toy
    recall, rankloss, allRecalls, opts = testFromFn(db, d / "db.bin", d / "q.bin")
    assert opts["recallNs"] == RECALL_NS and opts["nTestSample"] == math.inf
    assert opts["margin"] == 0.1 and opts["nNegChoice"] == 1000 and opts["cropToDim"] == 0
    assert rankloss is None
    ref = ref_recalls(qFeat, dbFeat, db.utmQ, db.utmDb, RECALL_NS)
    np.testing.assert_array_equal(allRecalls, ref)
    np.testing.assert_allclose(recall, ref.mean(0))
    assert 0 < recall[0] < recall[-1]  # the toy problem is neither trivial nor hopeless


def test_testFromFn_cropToDim_and_overrides(toy):
    db, dbFeat, qFeat, d = toy
    recall, _, allRecalls, opts = testFromFn(db, d / "db.bin", d / "q.bin", cropToDim=8, recallNs=[1, 5, 10])
    crop = lambda x: x[:, :8] / (np.sqrt((x[:, :8] ** 2).sum(1, keepdims=True)) + 1e-12)
    ref = ref_recalls(crop(qFeat), crop(dbFeat), db.utmQ, db.utmDb, [1, 5, 10])
    np.testing.assert_array_equal(allRecalls, ref)
    with pytest.warns(UserWarning, match="cropToDim"):
        testFromFn(db, d / "db.bin", d / "q.bin", cropToDim=999, recallNs=[1])
    with pytest.raises(TypeError, match="unknown option"):
        testFromFn(db, d / "db.bin", d / "q.bin", recalNs=[1])
    _, _, sub, _ = testFromFn(db, d / "db.bin", d / "q.bin", nTestSample=13, recallNs=[1, 5, 10])
    assert sub.shape == (13, 3)
    assert set(map(tuple, sub)) <= set(map(tuple, ref))


def test_testFromFn_bad_files(toy):
    db, dbFeat, qFeat, d = toy
    write_bin(d / "short.bin", dbFeat[:-1])
    with pytest.raises(BinFeatureError, match=r"short\.bin.*expected 400"):
        testFromFn(db, d / "short.bin", d / "q.bin")
    (d / "ragged.bin").write_bytes(qFeat.tobytes()[:-4])
    with pytest.raises(BinFeatureError, match=r"ragged\.bin"):
        testFromFn(db, d / "db.bin", d / "ragged.bin")
    bad = dbFeat.copy()
    bad[7, 3] = np.nan
    write_bin(d / "nan.bin", bad)
    with pytest.raises(BinFeatureError, match=r"nan\.bin.*NaN.*index 7"):
        testFromFn(db, d / "nan.bin", d / "q.bin")
    empty = make_db(d, db.utmDb, np.zeros((2, 0)), name="noq")
    with pytest.raises(ValueError, match=r"noq\.mat.*no queries"):
        testFromFn(empty, d / "db.bin", d / "q.bin")


def test_bin_round_trip_matlab_order(tmp_path):
    feats = np.arange(12, dtype=np.float32).reshape(3, 4)  # image i = row i
    write_bin(tmp_path / "f.bin", feats)
    raw = (tmp_path / "f.bin").read_bytes()
    import struct
    assert raw == struct.pack("<12f", *range(12))
    np.testing.assert_array_equal(read_bin(tmp_path / "f.bin", n=3), feats)
    np.testing.assert_array_equal(read_bin(tmp_path / "f.bin", D=4), feats)
    with pytest.raises(BinFeatureError, match="not a multiple of D=5"):
        read_bin(tmp_path / "f.bin", D=5)
    assert not list(tmp_path.glob(TEMPORARIES))


# ---------------------------------------------------------------- testCoreRank

def test_testCoreRank_against_loop(tmp_path):
    # clusters 1 km apart: a query with db images at 3 m and 5 m (non-trivial positives)
    nC, D = 6, 8
    rng = np.random.default_rng(3)
    centres = np.stack([np.arange(nC) * 1000.0, np.zeros(nC)])
    utmDb = np.concatenate([centres + [[3], [0]], centres + [[0], [5]]], axis=1)
    db = make_db(tmp_path, utmDb, centres)
    qFeat = rng.standard_normal((nC, D)).astype(np.float32)
    dbFeat = rng.standard_normal((2 * nC, D)).astype(np.float32)
    margin = 2.0
    # nNegChoice = every non-positive image: the negatives are then fully determined
    loss, losses = testCoreRank(db, qFeat, dbFeat, margin, 2 * nC - 2, nTestSample=100)
    ref = []
    for i in range(nC):
        pos = [i, nC + i]
        dpos = min(((qFeat[i] - dbFeat[p]) ** 2).sum() for p in pos)
        negs = [j for j in range(2 * nC) if j not in pos]
        ref.append(np.mean([max(dpos + margin - ((qFeat[i] - dbFeat[j]) ** 2).sum(), 0) for j in negs]))
    np.testing.assert_allclose(losses, ref, rtol=1e-5)
    assert loss == pytest.approx(np.mean(ref), rel=1e-5)


def test_testFromFn_dataclass_opts(toy):
    import dataclasses

    @dataclasses.dataclass
    class TrainOpts:  # training passes its own options, with many other fields
        recallNs: list = dataclasses.field(default_factory=lambda: [1, 5])
        nTestSample: float = math.inf
        learningRate: float = 1e-4

    db, dbFeat, qFeat, d = toy
    recall, _, allRecalls, opts = testFromFn(db, d / "db.bin", d / "q.bin", TrainOpts())
    assert allRecalls.shape == (60, 2) and opts["learningRate"] == 1e-4 and opts["margin"] == 0.1
    np.testing.assert_array_equal(allRecalls, ref_recalls(qFeat, dbFeat, db.utmQ, db.utmDb, [1, 5]))
