"""Approximate nearest-neighbour search with faiss (an option of matnet, not in MATLAB).

``searchMethod``:
- ``"exact"``: matnet's exact search (rawNnSearch; in memory or streamed), the default;
- ``"flat"``: faiss ``IndexFlatL2`` (exact, faiss's own kernels);
- ``"ivfpq"``: faiss ``IVF<nlist>,PQ<m>x<nbits>``: an inverted file of ``nlist`` k-means
  cells (default 4 sqrt(N), at most 65536), vectors compressed to ``m`` bytes
  (default D/16, rounded to a divisor of D) of ``nbits`` = 8; ``nprobe`` cells searched
  per query (default 32);
- any other string: a faiss ``index_factory`` description (e.g. ``"IVF4096,PQ64"``,
  ``"HNSW32"``, ``"OPQ64,IVF4096,PQ64"``).
``searchParams`` (dict): ``nlist``, ``m``, ``nbits`` (ivfpq), ``nprobe`` and ``efSearch``
(set on any index that has them), ``trainSize`` (training vectors sampled from the
database, default min(N, max(100000, 64 nlist))), ``seed`` (of that sample, default 43).
The database is added in chunks (a file larger than memory streams through its map);
on a GPU with faiss-gpu installed the index moves to the GPU.
"""
from __future__ import annotations

import math

import numpy as np

PARAMS = ("nlist", "m", "nbits", "nprobe", "efSearch", "trainSize", "seed")


def factory_string(method: str, n: int, d: int, params: dict) -> str:
    """The faiss index_factory description of ``method`` for an n x d database."""
    if method == "flat":
        return "Flat"
    if method != "ivfpq":
        return method
    nlist = int(params.get("nlist") or max(1, min(65536, int(4 * math.sqrt(n)))))
    m = int(params.get("m") or max(1, d // 16))
    while d % m:
        m -= 1
    return f"IVF{nlist},PQ{m}x{int(params.get('nbits', 8))}"


class FaissSearcher:
    """recallAtN's searcher over a faiss index of ``db`` (an N x D array, or an object with
    ``shape``, ``rows(ids)`` and ``chunks()`` such as matnet.evaluate.StreamedDb)."""

    def __init__(self, qFeat, db, method: str, params: dict | None = None, useGPU: bool = False):
        import faiss
        params = dict(params or {})
        bad = sorted(set(params) - set(PARAMS))
        if bad:
            raise ValueError(f"searchParams: unknown {', '.join(bad)} (known: {', '.join(PARAMS)})")
        n, d = db.shape
        self.spec = factory_string(method, n, d, params)
        try:
            index = faiss.index_factory(d, self.spec, faiss.METRIC_L2)
        except RuntimeError as e:
            raise ValueError(f"searchMethod {method!r}: faiss cannot build index {self.spec!r}: "
                             f"{str(e).strip().splitlines()[-1]}") from None
        rows = getattr(db, "rows", lambda ids: np.asarray(db[ids], np.float32))
        if not index.is_trained:
            nlist = getattr(faiss.extract_index_ivf(index), "nlist", 1) if "IVF" in self.spec else 1
            size = int(params.get("trainSize") or min(n, max(100_000, 64 * nlist)))
            ids = np.sort(np.random.default_rng(params.get("seed", 43)).choice(n, min(size, n), replace=False))
            index.train(np.ascontiguousarray(rows(ids), np.float32))
        for start, x in (db.chunks() if hasattr(db, "chunks") else [(0, db)]):
            index.add(np.ascontiguousarray(x, np.float32))
        ps = faiss.ParameterSpace()
        for key, default in (("nprobe", 32 if "IVF" in self.spec else None), ("efSearch", None)):
            v = params.get(key, default)
            if v is not None:
                try:
                    ps.set_index_parameter(index, key, int(v))
                except RuntimeError:
                    if key in params:
                        raise ValueError(f"searchParams: {key} does not apply to index {self.spec!r}") from None
        if useGPU and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
            self._res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._res, 0, index)
        self.index, self.qFeat = index, qFeat

    def __call__(self, qIds, nTop):
        q = np.ascontiguousarray(self.qFeat[np.asarray(qIds, np.int64)], np.float32)
        ds, ids = self.index.search(q, int(nTop))
        return ids.astype(np.int64), ds
