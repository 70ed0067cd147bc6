"""Approximate nearest-neighbour search with faiss (an option of matnet, not in MATLAB).

``searchMethod``:
- ``"exact"``: matnet's exact search (rawNnSearch; in memory or streamed), the default;
- ``"flat"``: faiss ``IndexFlatL2`` (exact, faiss's own kernels);
- ``"ivfpq"``: faiss ``IVF<nlist>,PQ<m>x<nbits>``: an inverted file of ``nlist`` k-means
  cells (default 4 sqrt(N), at most 65536), each vector compressed to ``m`` codes
  (default D/16, rounded down to a divisor of D) of ``nbits`` bits (default 8: m bytes);
  ``nprobe`` cells searched per query (default 32);
- any other string: a faiss ``index_factory`` description (e.g. ``"IVF4096,PQ64"``,
  ``"HNSW32"``, ``"OPQ64,IVF4096,PQ64"``).
``searchParams`` (dict): ``nlist``, ``m``, ``nbits`` (ivfpq), ``nprobe`` and ``efSearch``
(set on any index that has them), ``trainSize`` (training vectors sampled from the
database, default min(N, max(100000, 64 nlist))), ``seed`` (of that sample, default 43);
on the command line ``--search-params nlist=1024,m=64,nprobe=16``.
The database is added in chunks (a file larger than memory streams through its map);
on a GPU with faiss-gpu installed the index moves to the GPU; an index faiss cannot move
there (HNSW; PQ codes whose lookup tables exceed the GPU's shared memory) stays on the CPU
with a warning, and a search for more than faiss-gpu's ``GPU_MAX_K`` neighbours runs on
the CPU copy.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

GPU_MAX_K = 2048  # faiss-gpu's largest k (1024 in older releases, whose refusal also falls back)
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


def parse_search_params(text: str | None) -> dict:
    """``searchParams`` from its command-line form ``"nlist=1024,m=64,nprobe=16"`` (integers,
    names in PARAMS); ValueError naming the bad item."""
    params = {}
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        key, sep, value = (t.strip() for t in item.partition("="))
        if not sep or not key:
            raise ValueError(f"--search-params {text!r}: {item!r} is not NAME=INTEGER")
        if key not in PARAMS:
            raise ValueError(f"--search-params {text!r}: unknown parameter {key!r} (known: {', '.join(PARAMS)})")
        try:
            params[key] = int(value)
        except ValueError:
            raise ValueError(f"--search-params {text!r}: {key} must be an integer, got {value!r}") from None
        if params[key] < (0 if key == "seed" else 1):
            raise ValueError(f"--search-params {text!r}: {key} must be {'>= 0' if key == 'seed' else 'positive'}")
    return params


def _ivf(index):
    """The inverted-file part of a faiss index, or None."""
    import faiss
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def build_index(method: str, params: dict | None, n: int, d: int):
    """``(spec, index, trainSize)``: the faiss index of ``method`` for an n x d database,
    empty and untrained, its search parameters set, and the number of database vectors
    its training samples (0 when it needs none).  Cheap: evaluate builds it to reject a bad
    method or parameters (ValueError naming them) before any feature is extracted."""
    import faiss
    params = dict(params or {})
    bad = sorted(set(params) - set(PARAMS))
    if bad:
        raise ValueError(f"searchParams: unknown {', '.join(bad)} (known: {', '.join(PARAMS)})")
    spec = factory_string(method, n, d, params)
    try:
        index = faiss.index_factory(d, spec, faiss.METRIC_L2)
    except RuntimeError as e:
        raise ValueError(f"searchMethod {method!r}: faiss cannot build index {spec!r} for {d}-D vectors: "
                         f"{str(e).strip().splitlines()[-1]}") from None
    ivf = _ivf(index)
    ps = faiss.ParameterSpace()
    for key, default in (("nprobe", 32 if ivf is not None else None), ("efSearch", None)):
        v = params.get(key, default)
        if v is not None:
            try:
                ps.set_index_parameter(index, key, int(v))
            except RuntimeError:
                if key in params:
                    raise ValueError(f"searchParams: {key} does not apply to index {spec!r}") from None
    size = 0
    if not index.is_trained:
        nlist = ivf.nlist if ivf is not None else 1
        size = min(n, int(params.get("trainSize") or max(100_000, 64 * nlist)))
        pq = getattr(faiss.downcast_index(ivf if ivf is not None else index), "pq", None)
        short = ([f"{nlist} IVF cells (nlist)"] if nlist > size else []) + \
                ([f"{pq.ksub} PQ centroids per code (2^nbits)"] if pq is not None and pq.ksub > size else [])
        if short:
            raise ValueError(f"searchMethod {method!r}: index {spec!r} trains k-means of {' and '.join(short)} "
                             f"on {size} database vectors (of {n}): lower nlist / nbits, or raise trainSize")
    return spec, index, size


class FaissSearcher:
    """recallAtN's searcher over a faiss index of ``db`` (an N x D array, or an object with
    ``shape``, ``rows(ids)`` and ``chunks()`` such as matnet.search.streamed.StreamedDb)."""

    def __init__(self, qFeat, db, method: str, params: dict | None = None, useGPU: bool = False):
        import faiss
        params = dict(params or {})
        n, d = db.shape
        self.spec, index, size = build_index(method, params, n, d)
        rows = getattr(db, "rows", lambda ids: np.asarray(db[ids], np.float32))
        if size:
            ids = np.sort(np.random.default_rng(params.get("seed", 43)).choice(n, size, replace=False))
            index.train(np.ascontiguousarray(rows(ids), np.float32))
        for start, x in (db.chunks() if hasattr(db, "chunks") else [(0, db)]):
            index.add(np.ascontiguousarray(x, np.float32))
        self.cpu_index, self.gpu_index, self.qFeat = index, None, qFeat
        if useGPU and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
            try:
                self._res = faiss.StandardGpuResources()
                self.gpu_index = faiss.index_cpu_to_gpu(self._res, 0, index)
            except RuntimeError as e:  # e.g. HNSW (no GPU version), PQ codes too large for shared memory
                warnings.warn(f"searchMethod {method!r}: faiss cannot move index {self.spec!r} to the GPU "
                              f"({str(e).strip().splitlines()[-1]}); searching on the CPU")
        self.index = self.gpu_index if self.gpu_index is not None else index

    def __call__(self, qIds, nTop):
        q = np.ascontiguousarray(self.qFeat[np.asarray(qIds, np.int64)], np.float32)
        k = int(nTop)
        if self.gpu_index is not None and k <= GPU_MAX_K:  # faiss-gpu searches at most GPU_MAX_K neighbours
            try:
                ds, ids = self.gpu_index.search(q, k)
                return ids.astype(np.int64), ds
            except RuntimeError:  # an older faiss-gpu's smaller k limit: the CPU copy answers
                pass
        ds, ids = self.cpu_index.search(q, k)
        return ids.astype(np.int64), ds
