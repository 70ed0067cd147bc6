"""Exact search beyond memory: a generated N x D float32 database ``.bin`` (default
2M x 512, 3.8 GiB on disk) and nQ queries, top-k by rawNnSearch streamed through the
file's memory map under a memory cap, against the in-memory search on a subset of the
database, in the same run.

Each search runs in its own process: queries/s, the peak resident memory the search adds
(VmHWM after resetting it through /proc/self/clear_refs, minus VmRSS before; anonymous
and file-backed pages alike) printed next to the memory cap, and whether the streamed and
in-memory results (ids and distances) are identical on the subset.  --caps runs the
streamed search of the whole database once per cap (e.g. --caps 64MB 512MB 2GB).  The files go to --dir (default a
temporary folder) and are deleted afterwards.

    python benchmarks/bench_search.py [--n 2000000 --d 512 --nq 1000 --k 100 --cap 1GB --subset 250000]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def rss_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def generate(folder: Path, n: int, d: int, nq: int, subset: int, seed: int = 0):
    """db.bin (n x d), sub.bin (its first ``subset`` rows), q.npy: half the queries are
    noisy copies of database rows, half random; written in chunks (never all in memory)."""
    rng = np.random.default_rng(seed)
    rows = max(1, (64 << 20) // (4 * d))
    with open(folder / "db.bin", "wb") as f, open(folder / "sub.bin", "wb") as g:
        for s in range(0, n, rows):
            x = rng.standard_normal((min(rows, n - s), d), dtype=np.float32)
            f.write(x.data)
            if s < subset:
                g.write(x[:subset - s].data)
    src = rng.integers(0, min(n, subset), nq // 2)
    db = np.memmap(folder / "db.bin", np.float32, "r", shape=(n, d))
    q = np.concatenate([db[np.sort(src)] + 0.1 * rng.standard_normal((src.size, d), dtype=np.float32),
                        rng.standard_normal((nq - src.size, d), dtype=np.float32)])
    np.save(folder / "q.npy", q.astype(np.float32))


def child(a):
    """One search in this fresh process; prints a JSON record."""
    import torch
    from converters.bin_features import MappedBin, read_bin
    from matnet.recall_at_n import rawNnSearch
    torch.set_num_threads(a.threads)
    folder = Path(a.dir)
    q = np.load(folder / "q.npy")
    rawNnSearch(q[:2], np.zeros((4, a.d), np.float32), 2)  # torch's kernels and threads, before measuring
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS: the peak from here on
    base = rss_mib("VmRSS")
    t = time.perf_counter()
    if a.child == "memory":
        db = read_bin(folder / "sub.bin", D=a.d)
        ids, ds = rawNnSearch(q, db, a.k)
    else:
        fn = folder / ("db.bin" if a.child == "streamed_full" else "sub.bin")
        ids, ds = rawNnSearch(q, MappedBin(fn, D=a.d), a.k, memoryCap=a.cap)
    sec = time.perf_counter() - t
    np.save(folder / f"{a.child}_ids.npy", ids)
    np.save(folder / f"{a.child}_ds.npy", ds)
    print(json.dumps({"sec": sec, "peak_mib": rss_mib("VmHWM"), "base_mib": base}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2_000_000, help="database size (rows)")
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--cap", default="1GB", help="memoryCap of the streamed searches")
    p.add_argument("--caps", nargs="+", metavar="CAP",
                   help="only the streamed search of the whole database, once per cap (growth next to each cap)")
    p.add_argument("--subset", type=int, default=250_000, help="rows searched in memory and streamed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dir", help="folder for the generated files (default: a temporary one)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a)
    a.subset = min(a.subset, a.n)
    folder = Path(tempfile.mkdtemp(prefix="bench_search_", dir=a.dir))
    try:
        free = shutil.disk_usage(folder).free
        need = 4 * a.d * (a.n + a.subset)
        if need > 0.9 * free:
            raise SystemExit(f"{folder}: {need / 2**30:.1f} GiB needed, {free / 2**30:.1f} GiB free; use --n or --dir")
        t = time.perf_counter()
        generate(folder, a.n, a.d, a.nq, a.subset)
        print(f"database {a.n} x {a.d} float32 ({4 * a.n * a.d / 2**30:.2f} GiB on disk), {a.nq} queries, "
              f"k={a.k}, {a.threads} threads; generated in {time.perf_counter() - t:.0f} s")
        from matnet.search.memory import parse_bytes
        if a.caps:
            print(f"whole database ({a.n} rows, {4 * a.n * a.d / 2**20:.0f} MiB), streamed; growth = peak "
                  f"resident memory the search adds")
            for cap in a.caps:
                argv = [x for x in sys.argv[1:] if x not in a.caps and x != "--caps"]
                out = subprocess.run([sys.executable, __file__] + argv + ["--child", "streamed_full", "--dir", str(folder),
                                     "--cap", cap], check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                capm = parse_bytes(cap) / 2**20
                growth = r["peak_mib"] - r["base_mib"]
                print(f"  memoryCap {cap:>6s} = {capm:7.0f} MiB: growth {growth:7.0f} MiB "
                      f"({100 * growth / capm:5.1f} % of the cap), {a.nq / r['sec']:8.1f} queries/s")
            return
        runs = {}
        for v in ("memory", "streamed_sub", "streamed_full"):
            out = subprocess.run([sys.executable, __file__] + sys.argv[1:] + ["--child", v, "--dir", str(folder)],
                                 check=True, capture_output=True, text=True).stdout
            runs[v] = json.loads(out.strip().splitlines()[-1])
        same_ids = np.array_equal(np.load(folder / "memory_ids.npy"), np.load(folder / "streamed_sub_ids.npy"))
        same_ds = np.array_equal(np.load(folder / "memory_ds.npy"), np.load(folder / "streamed_sub_ds.npy"))
        full_ids = np.load(folder / "streamed_full_ids.npy")
        # the first rows' neighbours within the subset: the full search may only find closer ones
        sub_first = np.load(folder / "memory_ds.npy")[:, 0] >= np.load(folder / "streamed_full_ds.npy")[:, 0]

        def line(label, r, n):
            return (f"  {label:34s} {a.nq / r['sec']:9.1f} queries/s ({r['sec']:7.2f} s, "
                    f"{n * a.nq / r['sec'] / 1e6:7.1f} M distances/s)  growth {r['peak_mib'] - r['base_mib']:6.0f} MiB"
                    + (f" (cap {parse_bytes(a.cap) / 2**20:.0f} MiB)" if "streamed" in label else ""))
        print(f"subset: the first {a.subset} rows ({4 * a.subset * a.d / 2**20:.0f} MiB)")
        print(line("in memory", runs["memory"], a.subset))
        print(line(f"streamed, memoryCap {a.cap}", runs["streamed_sub"], a.subset))
        print(f"  streamed / in memory: {runs['streamed_sub']['sec'] / runs['memory']['sec']:.2f}x the time; "
              f"identical ids: {'yes' if same_ids else 'NO'}, identical distances: {'yes' if same_ds else 'NO'}")
        print(f"whole database ({a.n} rows, {4 * a.n * a.d / 2**30:.2f} GiB)")
        print(line(f"streamed, memoryCap {a.cap}", runs["streamed_full"], a.n))
        print(f"  results consistent with the subset's (nearest at most as far): "
              f"{'yes' if sub_first.all() else 'NO'}; ids in range: {'yes' if full_ids.max() < a.n else 'NO'}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
