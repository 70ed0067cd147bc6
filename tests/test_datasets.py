"""Dataset specs: closePosition, positives/negatives, Tokyo 24/7 NMS, TokyoTM filtering,
localPaths, and the real spec files in ../shared/datasets."""
import json
import re

import numpy as np
import pytest

from converters.matfile import savemat
from matnet.datasets import (closePosition, dbPitts, dbTiny, dbTokyo247,
                             dbTokyoTimeMachine, localPaths)
from matnet.datasets.tokyo247 import panorama_of


def write_spec(specDir, name, utmDb, utmQ, dbTs=None, qTs=None):
    utmDb, utmQ = np.asarray(utmDb, float), np.asarray(utmQ, float)
    s = {"whichSet": "test",
         "dbImageFns": [f"{i:05d}.jpg" for i in range(utmDb.shape[1])], "utmDb": utmDb}
    if dbTs is not None:
        s["dbTimeStamp"] = np.asarray(dbTs, np.int32).reshape(1, -1)
    s.update({"qImageFns": [f"q{i:05d}.jpg" for i in range(utmQ.shape[1])], "utmQ": utmQ})
    if qTs is not None:
        s["qTimeStamp"] = np.asarray(qTs, np.int32).reshape(1, -1)
    s.update({"numImages": np.uint16(utmDb.shape[1]), "numQueries": np.uint16(utmQ.shape[1]),
              "posDistThr": np.uint8(25), "posDistSqThr": np.uint16(625),
              "nonTrivPosDistSqThr": np.uint8(100)})
    savemat(specDir / f"{name}.mat", {"dbStruct": s}, format="5")


# ---------------------------------------------------------------- closePosition

def test_closePosition_matches_bruteforce():
    rng = np.random.default_rng(0)
    utm = np.round(rng.uniform(0, 300, (2, 500)))  # integer grid: many exact 25 m pairs
    cp = closePosition(utm, 25)
    queries = np.round(rng.uniform(0, 300, (2, 80)))
    ids, ds = cp.getPosIDs(queries)
    n_boundary = 0
    for j in range(queries.shape[1]):
        d = ((utm - queries[:, j:j + 1]) ** 2).sum(0)
        np.testing.assert_array_equal(ids[j], np.flatnonzero(d <= 625))
        np.testing.assert_allclose(ds[j], d[d <= 625])
        n_boundary += int((d == 625).sum())
    assert n_boundary > 0  # the inclusive boundary was exercised
    one, _ = cp.getPosIDs(queries[:, 5])
    np.testing.assert_array_equal(one, ids[5])
    np.testing.assert_array_equal(cp.isPos(queries[:, 5], np.arange(500)), np.isin(np.arange(500), ids[5]))


# ---------------------------------------------------------------- dbBase methods

@pytest.fixture
def toy(tmp_path):
    #            0      1        2       3       4       5
    utmDb = [[0, 0.5, 6, 0, 30, 500], [0, 0, 8, 25, 0, 500]]
    write_spec(tmp_path, "tokyo247", utmDb, [[0, 500], [0, 500]])
    return tmp_path


def test_positives_and_nontrivial(toy):
    db = dbTokyo247(specDir=toy, dbRoot="/data/t247")
    assert (db.dbPath, db.qPath) == ("/data/t247/images/", "/data/t247/query/")
    assert db.specFn.endswith("tokyo247.mat")
    np.testing.assert_array_equal(db.isPosQ(0, np.arange(6)), [1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(db.isPosQ([0, 1], [3, 5]), [True, True])
    # squared distances 0, 0.25, 100, 625: non-trivial needs 1 < dSq <= 100
    np.testing.assert_array_equal(db.nontrivialPosQ(0), [2])
    assert [x.tolist() for x in db.nontrivialPosQ(np.array([0, 1]))] == [[2], []]
    np.testing.assert_array_equal(db.posDb(0), [0, 1, 2, 3])
    np.testing.assert_array_equal(db.nontrivialPosDb(1), [2])  # from (0.5, 0): 0.25, 0, 5.5^2+8^2
    assert db.isPosDb(4, 3) == False  # noqa: E712  (30^2 + 25^2 > 625)


def test_sampleNegs_distinct_and_negative(tmp_path):
    rng = np.random.default_rng(5)
    utmDb = rng.uniform(0, 200, (2, 300))
    write_spec(tmp_path, "pitts30k_test", utmDb, utmDb[:, :20] + 1)
    db = dbPitts(False, "test", specDir=tmp_path, dbRoot=tmp_path)
    negs = db.sampleNegsQ(np.arange(20), 50, rng=np.random.default_rng(1))
    assert negs.shape == (20, 50)
    for q in range(20):
        assert len(set(negs[q])) == 50
        assert not db.isPosQ(q, negs[q]).any()
    npos = int(db.isPosQ(0, np.arange(300)).sum())
    all_negs = db.sampleNegsQ(0, 300 - npos, rng=np.random.default_rng(2))  # every negative
    np.testing.assert_array_equal(np.sort(all_negs), np.flatnonzero(~db.isPosQ(0, np.arange(300))))
    with pytest.raises(ValueError, match="cannot sample"):
        db.sampleNegsQ(0, 300 - npos + 1)
    assert db.sampleNegsDb(3, 10, rng=np.random.default_rng(0)).shape == (10,)


# ---------------------------------------------------------------- Tokyo 24/7 NMS

def fixed_searcher(rows):
    rows = np.asarray(rows)

    def searcher(q, n):
        ids = rows[q, :n]
        return ids, np.where(ids >= 0, np.arange(ids.shape[1], dtype=np.float32), np.inf)
    return searcher


def test_tokyo247_nms(toy):
    db = dbTokyo247(specDir=toy)
    rows = [[0, 5, 13, 12, 30, 1, 29, 40] + [-1] * 28,
            [6, 0, 13, 24] + [-1] * 32]
    ids, ds = db.nnSearchPostprocess(fixed_searcher(rows), np.array([0, 1]), 3)
    # panoramas (id // 12): row 0 -> 0 0 1 1 2 0 2 3, row 1 -> 0 0 1 2
    np.testing.assert_array_equal(ids, [[0, 13, 30], [6, 13, 24]])
    np.testing.assert_array_equal(ds, [[0, 2, 4], [0, 2, 3]])
    # a query with fewer panoramas than nTop is padded
    few, _ = db.nnSearchPostprocess(fixed_searcher([[0, 1, 2] + [-1] * 45]), 0, 4)
    np.testing.assert_array_equal(few, [0, -1, -1, -1])
    # the pre-2017 code: int32 division rounds, panorama of 0-based id = round(id / 12)
    legacy = dbTokyo247(specDir=toy, legacyNMS=True)
    np.testing.assert_array_equal(panorama_of([0, 5, 6, 17, 18, 30], True), [0, 0, 1, 1, 2, 3])
    ids, _ = legacy.nnSearchPostprocess(fixed_searcher(rows), np.array([0, 1]), 3)
    np.testing.assert_array_equal(ids, [[0, 13, 30], [6, 0, 24]])


def test_tokyo247_time_of_day(toy):
    db = dbTokyo247(specDir=toy)
    assert db.query_time_of_day([0, 1, 2, 3]).tolist() == ["day", "sunset", "night", "day"]
    with pytest.raises(ValueError):
        db.recall_by_time_of_day(np.zeros((5, 2)))


# ---------------------------------------------------------------- TokyoTM

def test_tokyoTM_time_filter_and_nontrivial(tmp_path):
    utmDb = [[0, 3, 4, 0, 0], [0, 0, 0, 6, 500]]
    dbTs = [200801, 200801, 201003, 201003, 200801]
    write_spec(tmp_path, "tokyoTM_val", utmDb, [[0, 0], [0, 1]], dbTs=dbTs, qTs=[200801, 201003])
    db = dbTokyoTimeMachine("val", specDir=tmp_path, dbRoot="/tm")
    assert db.qPath == db.dbPath == "/tm/images/"
    np.testing.assert_array_equal(db.dbTimeStamp, dbTs)
    # query 0 at (0,0), 200801: non-trivial candidates 1 (9), 2 (16), 3 (36); 1 has its time stamp
    np.testing.assert_array_equal(db.nontrivialPosQ(0), [2, 3])
    np.testing.assert_array_equal(db.nontrivialPosQ(1), [1])  # (0,1) 201003: 1 -> 10, 2 -> 17 same time
    # from id 2 (4,0) 201003: 0 -> 16 other time; 1 -> 1 (not > 1); 3 -> 52 same time
    np.testing.assert_array_equal(db.nontrivialPosDb(2), [0])
    rows = [[0, 1, 2, 4, 3] + [-1] * 25, [2, 3, 0, 4, 1] + [-1] * 25]
    ids, _ = db.nnSearchPostprocess(fixed_searcher(rows), np.array([0, 1]), 3)
    np.testing.assert_array_equal(ids, [[2, 3, -1], [0, 4, 1]])


# ---------------------------------------------------------------- constructors and paths

def test_dbPitts_fullSize_strings(tmp_path):
    write_spec(tmp_path, "pitts30k_val", [[0], [0]], [[0], [0]])
    write_spec(tmp_path, "pitts250k_val", [[0, 1], [0, 0]], [[0], [0]])
    assert dbPitts("30k", "val", specDir=tmp_path).numImages == 1
    assert dbPitts("250k", "val", specDir=tmp_path).numImages == 2
    assert dbPitts(True, "val", specDir=tmp_path).name == "pitts250k_val"
    with pytest.raises(ValueError, match="fullSize"):
        dbPitts("yes", "val", specDir=tmp_path)
    with pytest.raises(ValueError, match="whichSet"):
        dbPitts(False, "trian", specDir=tmp_path)
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "pitts30k_test.mat"))):
        dbPitts(False, "test", specDir=tmp_path)


def test_localPaths_env_and_config(tmp_path, monkeypatch):
    write_spec(tmp_path, "pitts30k_val", [[0], [0]], [[0], [0]])
    cfg = tmp_path / "lp.json"
    cfg.write_text(json.dumps({"dsetSpecDir": str(tmp_path), "dsetRootPitts": "/from/config"}))
    monkeypatch.setenv("MATNET_LOCAL_PATHS", str(cfg))
    monkeypatch.delenv("MATNET_DSET_ROOT_PITTS", raising=False)
    monkeypatch.delenv("MATNET_DSET_SPEC_DIR", raising=False)
    db = dbPitts(False, "val")
    assert db.dbPath == "/from/config/images/" and db.qPath == "/from/config/queries/"
    monkeypatch.setenv("MATNET_DSET_ROOT_PITTS", "/from/env")
    assert dbPitts(False, "val").dbPath == "/from/env/images/"
    monkeypatch.setenv("MATNET_DSET_ROOT_TOKYO_TM", "/tm")
    assert localPaths()["dsetRootTokyoTM"] == "/tm"


# ---------------------------------------------------------------- the real specs

EXPECTED = {  # ../shared/reference-numbers.md, section 4
    "pitts30k_train": (10000, 7416), "pitts30k_val": (10000, 7608), "pitts30k_test": (10000, 6816),
    "pitts250k_train": (91464, 7824), "pitts250k_val": (78648, 7608), "pitts250k_test": (83952, 8280),
    "tokyo247": (75984, 315), "tokyoTM_train": (49104, 7277), "tokyoTM_val": (49056, 7186),
}


def make_real(name, specDir):
    if name.startswith("pitts"):
        size, which = name[5:].split("_")
        return dbPitts(size, which, specDir=specDir, dbRoot="/r")
    if name == "tokyo247":
        return dbTokyo247(specDir=specDir, dbRoot="/r")
    return dbTokyoTimeMachine(name.split("_")[1], specDir=specDir, dbRoot="/r")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_spec(name, shared_dir):
    db = make_real(name, shared_dir / "datasets")
    assert (db.numImages, db.numQueries) == EXPECTED[name]
    assert (db.posDistThr, db.posDistSqThr, db.nonTrivPosDistSqThr) == (25, 625, 100)
    assert db.utmDb.shape == (2, db.numImages) and db.utmQ.shape == (2, db.numQueries)
    ids, _ = db.cp.getPosIDs(db.utmQ)
    assert min(len(i) for i in ids) >= 1  # every query has a positive within 25 m
    if name.startswith("tokyoTM"):
        assert db.dbTimeStamp.shape == (db.numImages,) and db.qTimeStamp.shape == (db.numQueries,)
        assert 200001 <= db.dbTimeStamp.min() and db.dbTimeStamp.max() <= 201912
    if name == "tokyo247":
        assert db.dbImageFns[0].endswith(".jpg")
        assert np.bincount((np.arange(315) + 1) % 3).tolist() == [105, 105, 105]
        # 12 consecutive cutouts per panorama share the folder
        folders = np.array([f.rsplit("/", 1)[0] for f in db.dbImageFns])
        assert (folders.reshape(-1, 12) == folders.reshape(-1, 12)[:, :1]).all()


def test_dbTiny(shared_dir):
    db = dbTiny("val", specDir=shared_dir / "datasets", dbRoot="/r")
    assert db.name == "tokyoTinyTM_val" and db.numImages >= 120 and db.numQueries == db.numImages // 2
    assert len(db.dbImageFns) == db.utmDb.shape[1] == db.numImages
    assert not hasattr(db, "nnSearchPostprocess")
    ids, _ = db.cp.getPosIDs(db.utmQ)
    assert min(len(i) for i in ids) >= 12  # each query's group contributed 12 images within ~2 m


def test_tokyo247_nms_in_testCore(tmp_path):
    from matnet.recall_at_n import testCore
    # 3 panoramas x 12 cutouts; only panorama 2 is near the query
    utmDb = np.repeat([[0, 0, 1000], [1000, 500, 0]], 12, axis=1).astype(float)
    write_spec(tmp_path, "tokyo247", utmDb, [[1000], [0]])
    db = dbTokyo247(specDir=tmp_path)
    dbFeat = np.repeat(np.array([[1.0], [2.0], [3.0]], np.float32), 12, axis=0)
    dbFeat += np.arange(36, dtype=np.float32)[:, None] * 1e-3  # strict order 0..35
    recall, allRecalls = testCore(db, np.zeros((1, 1), np.float32), dbFeat, recallNs=[1, 2, 3, 12])
    # without NMS the top 12 would all be panorama 0; with it the ranking is 0, 12, 24
    np.testing.assert_array_equal(allRecalls, [[0, 0, 1, 1]])


def test_tokyo247_recall_by_time_of_day(tmp_path):
    write_spec(tmp_path, "tokyo247", [[0], [0]], np.zeros((2, 6)))
    db = dbTokyo247(specDir=tmp_path)
    allRecalls = np.array([[1, 1], [0, 1], [0, 0], [1, 1], [1, 1], [0, 1]], float)
    split = db.recall_by_time_of_day(allRecalls)
    # 0-based queries 0,3 day; 1,4 sunset; 2,5 night
    np.testing.assert_array_equal(split["day"], [1, 1])
    np.testing.assert_array_equal(split["sunset"], [0.5, 1])
    np.testing.assert_array_equal(split["night"], [0, 0.5])


def test_local_paths_environment_names(monkeypatch, tmp_path):
    from matnet.datasets.local_paths import env_name, localPaths
    assert env_name("pretrainedCNNs") == "MATNET_PRETRAINED_CNNS"
    assert env_name("dsetRootTokyoTM") == "MATNET_DSET_ROOT_TOKYO_TM"
    monkeypatch.setenv("MATNET_LOCAL_PATHS", str(tmp_path / "none.json"))
    monkeypatch.setenv("MATNET_OUR_CNNS", str(tmp_path / "models"))
    assert localPaths()["ourCNNs"] == str(tmp_path / "models")
