"""Recall@N on a Pitts30k-test-sized problem (random features): matnet.recall_at_n.testCore
(batched exact search) against the original's structure, one search call per query
(timed on a subset of queries and extrapolated linearly), in the same run.

    python benchmarks/bench_recall.py [--nDb 10000] [--nQ 6816] [--D 4096] [--baselineQueries 300] [--noFaiss]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import time

import numpy as np
import torch

from matnet.datasets.db_base import dbBase
from matnet.recall_at_n import RECALL_NS, testCore


class RandomDb(dbBase):
    def __init__(self, nDb, nQ, rng):
        self.name = "random"
        self.utmDb = rng.uniform(0, 3000, (2, nDb))
        self.utmQ = self.utmDb[:, rng.integers(0, nDb, nQ)] + rng.normal(0, 10, (2, nQ))
        self.numImages, self.numQueries = nDb, nQ
        self.posDistThr, self.nonTrivPosDistSqThr = 25, 100
        self._finish()


def per_query_recall(db, qFeat, dbFeat, qIds, ns):
    """The original's loop: for each query, search (distances to all + partial sort),
    then cumulative positives."""
    dbn = (dbFeat * dbFeat).sum(1)
    nTop = max(ns)
    out = np.zeros((len(qIds), len(ns)))
    for r, iq in enumerate(qIds):
        q = qFeat[iq]
        d = dbn - 2 * dbFeat @ q + q @ q
        top = np.argpartition(d, nTop)[:nTop]
        ids = top[np.argsort(d[top], kind="stable")]
        hit = np.cumsum(db.isPosQ(iq, ids)) > 0
        out[r] = hit[np.minimum(ns, len(ids)) - 1]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nDb", type=int, default=10000)
    ap.add_argument("--nQ", type=int, default=6816)
    ap.add_argument("--D", type=int, default=4096)
    ap.add_argument("--baselineQueries", type=int, default=300)
    ap.add_argument("--noFaiss", action="store_true", help="skip timing faiss IndexFlatL2")
    a = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    db = RandomDb(a.nDb, a.nQ, rng)
    dbFeat = rng.standard_normal((a.nDb, a.D), dtype=np.float32)
    dbFeat /= np.linalg.norm(dbFeat, axis=1, keepdims=True)
    qFeat = rng.standard_normal((a.nQ, a.D), dtype=np.float32)
    qFeat /= np.linalg.norm(qFeat, axis=1, keepdims=True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"problem: {a.nDb} x {a.D} database, {a.nQ} queries, device {dev}, "
          f"{torch.get_num_threads()} torch threads")

    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        _, allRecalls = testCore(db, qFeat, dbFeat)
    t_fast = time.perf_counter() - t

    t_faiss = None
    if not a.noFaiss:
        import faiss
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        t = time.perf_counter()
        index = faiss.IndexFlatL2(a.D)
        index.add(dbFeat)
        index.search(qFeat, max(RECALL_NS))
        t_faiss = time.perf_counter() - t

    sub = np.sort(rng.choice(a.nQ, min(a.baselineQueries, a.nQ), replace=False))
    t = time.perf_counter()
    base = per_query_recall(db, qFeat, dbFeat, sub, np.asarray(RECALL_NS))
    t_sub = time.perf_counter() - t
    t_base = t_sub * a.nQ / len(sub)
    same = np.array_equal(base, allRecalls[sub])
    print(f"per-query loop (original's structure): {t_sub:.2f} s on {len(sub)} queries "
          f"-> {t_base:.1f} s extrapolated linearly to {a.nQ}")
    print(f"matnet testCore (batched, all {a.nQ} queries): {t_fast:.2f} s")
    if t_faiss is not None:
        print(f"for the search backend choice: faiss IndexFlatL2 search alone took {t_faiss:.2f} s")
    print(f"speed-up: {t_base / t_fast:.1f}x; recalls identical on the timed subset: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
