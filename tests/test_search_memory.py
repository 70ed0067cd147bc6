"""Memory caps that hold: a streamed search (testFromFn, rawNnSearch on a MappedBin or a
user's np.memmap) keeps the peak resident memory it adds within the cap, file-backed
pages included (rows are read with preadv into reused buffers, never through a map);
a cap too small is refused naming the smallest that works; the results stay those of
the in-memory search."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converters.bin_features import MappedBin, write_bin
from matnet.recall_at_n import rawNnSearch, testFromFn
from matnet.search.memory import chunk_rows, row_bytes, search_overhead, smallest_cap
from matnet.search.streamed import RowReader

from helpers import peak_growth
from helpers.dataset_makers import make_db

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc/self/clear_refs")
def test_peak_growth_within_the_cap_on_a_600MB_file(tmp_path):
    """600 MB of 4096-D features, 20 queries, a 64 MB cap: each search adds at most the cap
    (+10 %) to the process's peak resident memory (before: 112 MiB for a MappedBin, the
    whole file for a np.memmap) and returns the in-memory search's ids, distances, recall."""
    peak_growth.make_files(tmp_path, 36622, 4096, 20)
    assert (tmp_path / "db.bin").stat().st_size == 36622 * 4096 * 4  # 600 MB
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, peak_growth.__file__, str(tmp_path), "64MB", "mapped", "memmap",
                           "testFromFn"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    for mode in ("mapped", "memmap", "testFromFn"):
        assert r[mode]["growth"] <= 1.1 * 64e6, (mode, r)
        assert r[mode]["identical"], (mode, r)


def test_a_cap_too_small_is_refused_with_the_smallest_that_works(tmp_path):
    rng = np.random.default_rng(0)
    db = rng.standard_normal((300, 64)).astype(np.float32)
    q = rng.standard_normal((10, 64)).astype(np.float32)
    write_bin(tmp_path / "db.bin", db)
    least = smallest_cap(64, 10, 5)
    with pytest.raises(MemoryError, match=rf"needs at least {least // 2**20} MiB \(the smallest cap that works\)"):
        rawNnSearch(q, MappedBin(tmp_path / "db.bin", D=64), 5, memoryCap=least - 2**20)
    ids, ds = rawNnSearch(q, MappedBin(tmp_path / "db.bin", D=64), 5, memoryCap=least)
    np.testing.assert_array_equal(ids, rawNnSearch(q, db, 5)[0])
    assert chunk_rows(64, 10, least, 5) >= 1
    assert search_overhead(64, 10, 5) + row_bytes(64, 10) <= least < search_overhead(64, 10, 5) + row_bytes(64, 10) + 2**20


def test_testFromFn_refuses_a_cap_too_small_before_searching(tmp_path):
    rng = np.random.default_rng(1)
    utmDb = rng.uniform(0, 300, (2, 400))
    utmQ = utmDb[:, :20] + 3
    write_bin(tmp_path / "db.bin", rng.standard_normal((400, 32)).astype(np.float32))
    write_bin(tmp_path / "q.bin", rng.standard_normal((20, 32)).astype(np.float32))
    db = make_db(tmp_path, utmDb, utmQ)
    with pytest.raises(MemoryError, match=r"needs at least \d+ MiB \(the smallest cap that works\)"):
        testFromFn(db, tmp_path / "db.bin", tmp_path / "q.bin", memoryCap=20_000, verbose=False)


@pytest.mark.parametrize("kind", ["plain", "offset", "float64", "columns", "rows", "copy-on-write"])
def test_a_users_memmap_is_streamed_and_equals_in_memory(tmp_path, kind, monkeypatch):
    """np.memmap in any layout: a file region read with preadv (header offset, another
    dtype, a row slice) or, not C-ordered, sliced with its pages released; the in-memory
    search's ids and distances either way."""
    import matnet.search.memory as memory
    monkeypatch.setattr(memory, "WORKING_SET", 0)  # tiny chunks of a tiny file
    rng = np.random.default_rng(2)
    full = rng.standard_normal((1100, 24)).astype(np.float32)
    q = rng.standard_normal((15, 24)).astype(np.float32)
    fn = tmp_path / "m.dat"
    if kind == "offset":
        with open(fn, "wb") as f:
            f.write(b"x" * 4100)  # a header, not a multiple of the page size
            f.write(full.data)
        mm = np.memmap(fn, np.float32, "r", offset=4100, shape=full.shape)
        want = full
    elif kind == "float64":
        full.astype(np.float64).tofile(fn)
        mm = np.memmap(fn, np.float64, "r", shape=full.shape)
        want = full
    else:
        full.tofile(fn)
        mm = np.memmap(fn, np.float32, "r", shape=full.shape)
        want = full
        if kind == "columns":
            mm, want = mm[:, 4:20], full[:, 4:20]
            q = q[:, 4:20]
        elif kind == "rows":
            mm, want = mm[137:901], full[137:901]
        elif kind == "copy-on-write":  # the user's changes are in the map only: searched as they are
            mm = np.memmap(fn, np.float32, "c", shape=full.shape)
            mm[5] = 100.0
            want = full.copy()
            want[5] = 100.0
    reader = RowReader(mm)
    assert (reader.fd is not None) == (kind not in ("columns", "copy-on-write"))  # preadv where the file has it
    cap = search_overhead(want.shape[1], 15, 30) + 97 * row_bytes(want.shape[1], 15)
    got = rawNnSearch(q, mm, 30, memoryCap=cap)
    mem = rawNnSearch(q, np.ascontiguousarray(want), 30)
    np.testing.assert_array_equal(got[0], mem[0])
    np.testing.assert_array_equal(got[1], mem[1])
    ids = np.array([5, 3, 3, 700, 701, 702, 0])
    np.testing.assert_array_equal(reader.take(ids), want[ids])
