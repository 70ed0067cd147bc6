"""The peak resident memory a streamed search adds, measured in a fresh process (so that
the test process's own memory does not count): ``python peak_growth.py DIR CAP MODE...``
prints one JSON object.

For each MODE (``mapped``: rawNnSearch on a MappedBin; ``memmap``: rawNnSearch on a
user's ``np.memmap``; ``testFromFn``: testFromFn with cropToDim and a rank-loss sample)
the peak is reset (``5`` written to ``/proc/self/clear_refs``), the search run under the
cap, and ``VmHWM - VmRSS before`` reported in bytes (anonymous and file-backed pages
alike).  Then the same searches in memory, and whether ids, distances and recalls are
identical.  :func:`make_files` writes DIR (db.bin, q.bin, big.mat) in blocks."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

K = 20


def make_files(folder, n: int, D: int, nq: int, seed: int = 0) -> Path:
    """``db.bin`` (n x D float32, written a block at a time), ``q.bin`` (nq queries near
    database rows) and the spec ``big.mat`` (positions on a line, 25 m threshold)."""
    from converters.bin_features import write_bin
    from converters.matfile import savemat
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    block = rng.standard_normal((1024, D), dtype=np.float32)
    with open(folder / "db.bin", "wb") as f:
        for s in range(0, n, 1024):
            m = min(1024, n - s)
            f.write((block[:m] + np.float32(0.01 * (s // 1024))).data)
    src = np.sort(rng.choice(n, nq, replace=False))
    q = np.stack([block[i % 1024] + np.float32(0.01 * (i // 1024)) for i in src])
    write_bin(folder / "q.bin", q + 0.3 * rng.standard_normal(q.shape, dtype=np.float32))
    utmDb = np.stack([np.arange(n) * 10.0, np.zeros(n)])
    utmQ = utmDb[:, src] + 5.0
    s = {"whichSet": "test", "dbImageFns": [f"d{i}.jpg" for i in range(n)], "utmDb": utmDb,
         "qImageFns": [f"q{i}.jpg" for i in range(nq)], "utmQ": utmQ, "numImages": float(n),
         "numQueries": float(nq), "posDistThr": 25.0, "posDistSqThr": 625.0, "nonTrivPosDistSqThr": 100.0}
    savemat(folder / "big.mat", {"dbStruct": s}, format="5")
    return folder


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) * 1024


def main(argv) -> None:
    folder, cap, modes = Path(argv[0]), argv[1], argv[2:]
    import torch

    from converters.bin_features import MappedBin, read_bin
    from matnet.datasets import dbBase
    from matnet.recall_at_n import rawNnSearch, testFromFn

    class Big(dbBase):
        def __init__(self):
            self.name = "big"
            self.dbLoad(folder)

    torch.set_num_threads(2)
    db = Big()
    q = read_bin(folder / "q.bin", n=db.numQueries)
    D = q.shape[1]
    n = db.numImages
    tf = dict(recallNs=[1, 5, K], cropToDim=D // 2, nTestRankSample=8, nNegChoice=50, verbose=False)
    rawNnSearch(q[:2], np.zeros((4, D), np.float32), 2)  # torch's kernels and thread pool, before measuring
    out, got = {}, {}
    for mode in modes:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status("VmRSS")
        t = time.perf_counter()
        if mode == "mapped":
            got[mode] = rawNnSearch(q, MappedBin(folder / "db.bin", D=D), K, memoryCap=cap)
        elif mode == "memmap":
            mm = np.memmap(folder / "db.bin", np.float32, "r", shape=(n, D))
            got[mode] = rawNnSearch(q, mm, K, memoryCap=cap)
            del mm
        elif mode == "testFromFn":
            r = testFromFn(db, folder / "db.bin", folder / "q.bin", memoryCap=cap, **tf)
            got[mode] = (r[0], r[1], r[2])
        else:
            raise SystemExit(f"unknown mode {mode}")
        out[mode] = {"growth": _status("VmHWM") - base, "seconds": time.perf_counter() - t}
    # the in-memory searches (memory no longer measured)
    whole = read_bin(folder / "db.bin", D=D)
    ids, ds = rawNnSearch(q, whole, K)
    for mode in ("mapped", "memmap"):
        if mode in got:
            out[mode]["identical"] = bool(np.array_equal(got[mode][0], ids) and np.array_equal(got[mode][1], ds))
    if "testFromFn" in got:
        del whole
        r = testFromFn(db, folder / "db.bin", folder / "q.bin", **tf)
        out["testFromFn"]["identical"] = bool(np.array_equal(got["testFromFn"][0], r[0])
                                              and got["testFromFn"][1] == r[1]
                                              and np.array_equal(got["testFromFn"][2], r[2]))
        out["testFromFn"]["recall"] = [float(v) for v in r[0]]
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
