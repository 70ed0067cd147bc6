"""Search beyond memory: a database streamed from its ``.bin`` through a memory map in
chunks (running top-k) gives the in-memory search's ids, distances and recall, ties
included; memory sizes; bad files."""
import numpy as np
import pytest
import torch

from converters.bin_features import BinFeatureError, MappedBin, write_bin
from matnet.recall_at_n import rawNnSearch, testFromFn
from matnet.search.exact import smallest_k
from matnet.search.memory import chunk_rows, row_bytes, search_overhead
from matnet.search.memory import parse_bytes
from helpers.dataset_makers import make_db, street_positions


@pytest.fixture(autouse=True)
def no_working_set(monkeypatch):
    """These tests check chunking on small files with tiny caps: the working-set reserve of
    a real search (tens of MiB, see test_search_memory.py) is left out of the sizing."""
    import matnet.search.memory as memory
    monkeypatch.setattr(memory, "WORKING_SET", 0)


def brute_force(q, db, k):
    """Stable sort of exact float64 distances: ties by lower id (MATLAB's sort)."""
    d = ((q[:, None, :].astype(np.float64) - db[None].astype(np.float64)) ** 2).sum(2)
    ids = np.argsort(d, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(d, ids, 1)


def test_smallest_k_ties_straddling_the_kth_place():
    d = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0, 1.0],
                      [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]])
    vals, ids = smallest_k(d, 3)
    assert ids.tolist() == [[1, 3, 0], [0, 1, 2]]
    assert vals.tolist() == [[0, 0, 1], [2, 2, 2]]


@pytest.fixture
def tied(tmp_path):
    """Integer features (exact distances whatever the summation order) with duplicated
    database rows, so that many queries have ties at every rank."""
    rng = np.random.default_rng(0)
    base = rng.integers(-3, 4, (90, 8)).astype(np.float32)
    db = base[rng.integers(0, 90, 1003)]            # 1003 rows: no chunk size below divides it
    q = np.concatenate([db[rng.integers(0, 1003, 30)], rng.integers(-3, 4, (20, 8))]).astype(np.float32)
    write_bin(tmp_path / "db.bin", db)
    return q, db, tmp_path / "db.bin"


@pytest.mark.parametrize("chunk", [30, 100, 400])
def test_streamed_equals_in_memory_with_ties(tied, chunk):
    q, db, fn = tied
    cap = search_overhead(8, q.shape[0], 25) + chunk * row_bytes(8, q.shape[0])
    rows = chunk_rows(8, q.shape[0], cap, 25)
    assert rows == chunk and db.shape[0] % rows  # several chunks, the last one partial
    want_ids, want_ds = brute_force(q, db, 25)
    mem_ids, mem_ds = rawNnSearch(q, db, 25)
    got_ids, got_ds = rawNnSearch(q, MappedBin(fn, D=8), 25, memoryCap=cap)
    np.testing.assert_array_equal(mem_ids, want_ids)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_ds, mem_ds)
    np.testing.assert_array_equal(got_ds, want_ds.astype(np.float32))


def test_streamed_equals_in_memory_random_floats(tmp_path):
    rng = np.random.default_rng(1)
    db = rng.standard_normal((2500, 48)).astype(np.float32)
    q = rng.standard_normal((70, 48)).astype(np.float32)
    write_bin(tmp_path / "db.bin", db)
    mem = rawNnSearch(q, db, 100)
    got = rawNnSearch(q, MappedBin(tmp_path / "db.bin", n=2500), 100, memoryCap="600kB")  # 355-row chunks
    np.testing.assert_array_equal(got[0], mem[0])
    np.testing.assert_array_equal(got[1], mem[1])
    np.testing.assert_array_equal(mem[0], brute_force(q, db, 100)[0])


@pytest.fixture
def toy_files(tmp_path):
    nDb, nQ, D = 700, 40, 16
    rng, utmDb, utmQ = street_positions(2, nDb, nQ, 300)
    dbFeat = (rng.standard_normal((nDb, D)) + utmDb[0][:, None] / 40).astype(np.float32)
    dbFeat[350:360] = dbFeat[340:350]  # exact duplicates: tied database entries
    qFeat = (rng.standard_normal((nQ, D)) + utmQ[0][:, None] / 40).astype(np.float32)
    write_bin(tmp_path / "db.bin", dbFeat)
    write_bin(tmp_path / "q.bin", qFeat)
    return make_db(tmp_path, utmDb, utmQ), tmp_path


@pytest.mark.parametrize("crop", [0, 8])
def test_testFromFn_streamed_equals_in_memory(toy_files, crop, capsys):
    db, d = toy_files
    kw = dict(cropToDim=crop, nTestRankSample=20, nNegChoice=50, recallNs=[1, 2, 5, 10, 50])
    rec, rl, allRec, _ = testFromFn(db, d / "db.bin", d / "q.bin", **kw)
    srec, srl, sallRec, opts = testFromFn(db, d / "db.bin", d / "q.bin", memoryCap=150_000, **kw)
    assert "streaming" in capsys.readouterr().out
    assert opts["memoryCap"] == 150_000
    np.testing.assert_array_equal(sallRec, allRec)
    np.testing.assert_array_equal(srec, rec)
    assert srl == rl
    assert 0 < rec[0] < 1  # neither trivial nor empty


def test_streamed_file_with_nan_names_file_and_image(toy_files):
    db, d = toy_files
    feats = np.fromfile(d / "db.bin", np.float32).reshape(700, 16)
    feats[523, 3] = np.nan
    write_bin(d / "nan.bin", feats)
    with pytest.raises(BinFeatureError, match=r"nan\.bin: .*NaN/Inf features \(first 0-based index 523\)"):
        testFromFn(db, d / "nan.bin", d / "q.bin", memoryCap=250_000)


def test_memory_sizes_and_a_cap_too_small():
    assert parse_bytes("1GB") == 10 ** 9 and parse_bytes("512MiB") == 512 * 2 ** 20
    assert parse_bytes("2g") == 2 * 2 ** 30 and parse_bytes(1000) == 1000
    for bad in ("lots", "-1GB", 0, "1 parsec"):
        with pytest.raises(ValueError):
            parse_bytes(bad)
    with pytest.raises(MemoryError, match="too small for 1000 queries of D=4096"):
        chunk_rows(4096, 1000, 10 * 2 ** 20)
