"""Recall@N evaluation (testFromFn.m, testCore.m, recallAtN.m, testCoreRank.m, rawNnSearch.m).

Features are row-major N x D here (MATLAB's D x N columns); query and database ids
are 0-based (1-based in MATLAB).  Search is exact L2 on all queries at once (torch
matmul + top-k, on the GPU when there is one), never one call per query; the search
itself (and what is not MATLAB's: streaming, faiss) lives in :mod:`matnet.search`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from converters.bin_features import BinFeatureError, bin_shape, read_bin

from .device import compute_device
from .predictions import PredictionRecorder
from .search import SearchOptions, exact_searcher, knn, make_searcher
from .search.exact import relja_l2normalize_rows
from .search.memory import SEARCH_BLOCK, chunk_rows, in_memory_bytes, rank_block, streaming_cap
from .search.streamed import StreamedDb

RECALL_NS = [1, 2, 3, 4, 5] + list(range(10, 101, 5))


def rawNnSearch(q, db, k: int = 1, device=None, memoryCap=None):
    """yael_nn: the ``k`` nearest rows of ``db`` (N x D) for each row of ``q`` (nQ x D,
    or one D-vector) in squared L2.

    Returns ``(ids, ds)``: nQ x min(k, N) int64 0-based ids and float32 squared
    distances, ascending, ties by lower id (MATLAB's stable sort, also for the ties
    straddling the k-th place).  A 1-D ``q`` gives 1-D outputs.  ``db`` may be a
    :class:`~converters.bin_features.MappedBin` (a ``.bin`` through a memory map) or any
    array; with ``memoryCap`` (bytes, or a string such as '1GB'; not in MATLAB) it is
    streamed in chunks that keep the search within that much memory, with the same result.
    """
    single = np.ndim(q) == 1
    dev = compute_device(device)
    qt = torch.as_tensor(np.atleast_2d(np.asarray(q, np.float32)) if not torch.is_tensor(q) else q)
    qt = torch.atleast_2d(qt).to(dev, torch.float32)
    shape = getattr(db, "shape", None) or np.shape(db)
    if qt.shape[1] != shape[1]:
        raise ValueError(f"query dimensionality {qt.shape[1]} != database dimensionality {shape[1]}")
    ids, ds = knn(qt, db, min(int(k), shape[0]), dev, memoryCap)
    return (ids[0], ds[0]) if single else (ids, ds)


def sample_queries(nQueries: int, nSample) -> np.ndarray:
    """Queries to test: all, or ``nSample`` of them drawn without replacement with a
    fixed seed (43, as MATLAB's rng(43) + randsample; numpy's generator, so not the same
    draw), sorted so result rows follow query order."""
    if nSample < nQueries:
        return np.sort(np.random.default_rng(43).choice(nQueries, int(nSample), replace=False))
    return np.arange(nQueries)


def recallAtN(searcher, nQueries: int, isPos, ns, printN: int = 10, nSample=math.inf,
              batchSize: int = 4096, verbose: bool = True):
    """recallAtN.m, batched.  Returns ``(res, recalls)``: ``res`` = mean recall@printN,
    ``recalls`` = nTested x len(ns) 0/1 array, rows in ascending query order.

    ``searcher(qIds, nTop)`` gets an array of 0-based query ids and returns a
    len(qIds) x <=nTop int array of 0-based database ids (or a ``(ids, ds)`` pair),
    best first; a query with fewer results pads its row with -1.  ``isPos(qIds, dbIds)``
    is elementwise on equal-shaped arrays.  As in MATLAB, a query with m < N results
    uses its recall at m for N (no results: not recalled).  ``verbose`` False: no
    printed recall table.
    """
    ns = np.asarray(ns, dtype=np.int64).ravel()
    if ns.size == 0 or np.any(np.diff(ns) < 0) or ns[0] < 1:
        raise ValueError(f"recall Ns must be a sorted list of positive integers, got {ns.tolist()}")
    toTest = sample_queries(nQueries, nSample)
    nTop = int(ns[-1])
    recalls = np.zeros((toTest.size, ns.size))
    printRecalls = np.zeros(toTest.size)
    bar = tqdm(total=toTest.size, desc="recallAtN", unit="q", leave=False)
    for s in range(0, toTest.size, batchSize):
        qs = toTest[s:s + batchSize]
        out = searcher(qs, nTop)
        ids = np.asarray(out[0] if isinstance(out, tuple) else out, dtype=np.int64)
        ids = ids.reshape(qs.size, -1)
        if ids.shape[1] > nTop:
            raise ValueError(f"searcher returned {ids.shape[1]} results, more than nTop={nTop}")
        valid = ids >= 0
        numReturned = valid.sum(1)
        pos = np.zeros(ids.shape, dtype=bool)
        pos[valid] = np.asarray(isPos(np.broadcast_to(qs[:, None], ids.shape)[valid], ids[valid]), bool)
        hit = np.cumsum(pos, axis=1) > 0
        hit = np.concatenate([np.zeros((qs.size, 1), bool), hit], axis=1)  # column 0: no results
        cols = np.minimum(ns[None, :], numReturned[:, None])
        recalls[s:s + qs.size] = np.take_along_axis(hit, cols, axis=1)
        printRecalls[s:s + qs.size] = hit[np.arange(qs.size), np.minimum(printN, numReturned)]
        bar.update(qs.size)
    bar.close()
    res = float(printRecalls.mean()) if toTest.size else float("nan")
    if verbose:
        print(f"\trec@{printN}= {res:.4f} ({toTest.size} queries)")
        for n, r in zip(ns, recalls.mean(0) if toTest.size else np.full(ns.size, np.nan)):
            print(f"{n:03d} {r:.4f}")
    return res, recalls


def testCore(db, qFeat, dbFeat, nTestSample=math.inf, recallNs=RECALL_NS, printN: int = 10,
             device=None, verbose: bool = True, search: SearchOptions | None = None,
             searchCheck: dict | None = None, savePredictions: int = 0, predictions: dict | None = None):
    """testCore.m: recall@N of nQ x D queries against N x D database features.

    Uses ``db.nnSearchPostprocess`` when the dataset has one (Tokyo 24/7 NMS, TokyoTM
    time filter).  Returns ``(recalls, allRecalls)``: mean per N (len(recallNs)) and
    nTested x len(recallNs).  ``dbFeat`` may be a :class:`StreamedDb` (a file larger than
    memory; the same result as in memory).

    Not in MATLAB: ``search`` (:class:`~matnet.search.SearchOptions`) with a method other
    than 'exact' searches with faiss ('flat', 'ivfpq' or an index_factory string, its
    params; see :mod:`matnet.search.approximate`); then recall@N of that search and of the
    exact one on ``search.checkSample`` sampled queries are printed side by side and stored
    in the dict ``searchCheck`` when given (keys queries, recallNs, approximate, exact, index).

    Not in MATLAB: ``savePredictions`` N > 0 keeps each tested query's first N results of
    the very search recallAtN scores (after the dataset's post-processing; N at most
    max(recallNs)) in the dict ``predictions`` (keys queries, ids, ds; see
    :class:`~matnet.predictions.PredictionRecorder`).
    """
    dev = compute_device(device)
    search = SearchOptions() if search is None else search

    def wrap(raw):
        post = getattr(db, "nnSearchPostprocess", None)
        return (lambda q, n: post(raw, q, n)) if post is not None else raw

    if savePredictions and int(savePredictions) > int(np.max(recallNs)):
        raise ValueError(f"savePredictions {savePredictions} exceeds the largest recall N ({int(np.max(recallNs))}): "
                         f"the predictions come from the recall's own search")
    raw = make_searcher(qFeat, dbFeat, search, sample_queries(db.numQueries, nTestSample), dev)
    searcher = wrap(raw)
    if savePredictions:
        searcher = PredictionRecorder(searcher, int(savePredictions), db.numQueries)
    _, allRecalls = recallAtN(searcher, db.numQueries, db.isPosQ, recallNs, printN, nTestSample,
                              verbose=verbose)
    if savePredictions and predictions is not None:
        predictions.update(searcher.result())
    if not search.exact and search.checkSample:
        nS = min(int(search.checkSample), db.numQueries)
        check = {"index": raw.spec, "queries": nS, "recallNs": list(np.asarray(recallNs).tolist())}
        exact = exact_searcher(qFeat, dbFeat, sample_queries(db.numQueries, nS), dev)
        for name, searcher in (("approximate", raw), ("exact", exact)):
            _, r = recallAtN(wrap(searcher), db.numQueries, db.isPosQ, recallNs, printN, nS, verbose=False)
            check[name] = r.mean(0).tolist()
        if verbose:
            print(f"\tsearch {raw.spec} vs exact on {nS} sampled queries:")
            for n, a, e in zip(check["recallNs"], check["approximate"], check["exact"]):
                print(f"{n:03d} {a:.4f} exact {e:.4f} ({(a - e) * nS:+.0f} queries)")
        if searchCheck is not None:
            searchCheck.update(check)
    return allRecalls.mean(0), allRecalls


def testCoreRank(db, qFeat, dbFeat, margin, nNegChoice, nTestSample=1000, rng=None, device=None,
                 verbose: bool = True, block: int = SEARCH_BLOCK):
    """testCoreRank.m: mean over sampled queries (with non-trivial positives) of
    ``mean_neg max(d_pos + margin - d_neg, 0)``, d = squared L2, d_pos the closest
    non-trivial positive, ``nNegChoice`` random negatives per query.  Returns
    ``(rankloss, losses)``.  Negatives come from numpy (seeded 43 by default), not
    MATLAB's randsample stream.  ``block``: the query x negative x D entries compared at
    once (testFromFn sizes it from a streamed search's memory cap).
    """
    if not math.isfinite(nTestSample):
        raise ValueError("testCoreRank needs a finite nTestSample")
    rng = np.random.default_rng(43) if rng is None else rng
    toTest = sample_queries(qFeat.shape[0], nTestSample)
    pos = db.nontrivialPosQ(toTest)
    has = np.array([p.size > 0 for p in pos], bool)
    toTest = toTest[has]
    if toTest.size == 0:
        raise ValueError(f"{getattr(db, 'name', 'db')}: no positives in the test")
    pos = [p for p, h in zip(pos, has) if h]
    negs = db.sampleNegsQ(toTest, nNegChoice, rng=rng)
    dev = compute_device(device)
    if isinstance(dbFeat, StreamedDb):  # only the rows needed, read from the map
        def db_rows(ids):
            ids = ids.cpu().numpy()
            return torch.as_tensor(dbFeat.rows(ids.reshape(-1)).reshape(ids.shape + (-1,))).to(dev)
    else:
        dbt = torch.as_tensor(np.ascontiguousarray(dbFeat, np.float32)).to(dev)

        def db_rows(ids):
            return dbt[ids]
    qt = torch.as_tensor(np.ascontiguousarray(qFeat[toTest], np.float32)).to(dev)
    owner = np.repeat(np.arange(toTest.size), [p.size for p in pos])
    pid = torch.as_tensor(np.concatenate(pos)).to(dev)
    owner_t = torch.as_tensor(owner).to(dev)
    step = max(1, int(block) // qt.shape[1])  # positives compared at once
    dpos_all = torch.cat([((qt[owner_t[s:s + step]] - db_rows(pid[s:s + step])) ** 2).sum(1)
                          for s in range(0, pid.numel(), step)]) if pid.numel() else pid.new_zeros(0, dtype=qt.dtype)
    dPos = torch.full((toTest.size,), math.inf, device=dev).scatter_reduce(0, owner_t, dpos_all, "amin")
    negs_t = torch.as_tensor(negs).to(dev)
    losses = torch.empty(toTest.size, device=dev)
    chunk = max(1, int(block) // (negs.shape[1] * qt.shape[1]))
    with torch.no_grad():
        for s in range(0, toTest.size, chunk):
            x = db_rows(negs_t[s:s + chunk])  # c x nNeg x D
            dneg = ((x - qt[s:s + chunk, None, :]) ** 2).sum(2)
            losses[s:s + chunk] = (dPos[s:s + chunk, None] + margin - dneg).clamp(min=0).mean(1)
    losses = losses.cpu().numpy().astype(np.float64)
    rankloss = float(losses.mean())
    if verbose:
        print(f"\tloss= {rankloss:.4f}, margin= {margin:.4f} ({toTest.size} queries)")
    return rankloss, losses


TEST_OPTS = {"nTestRankSample": 0, "nTestSample": math.inf, "recallNs": RECALL_NS,
             "margin": 0.1, "nNegChoice": 1000, "cropToDim": 0, "memoryCap": None,
             "searchMethod": "exact", "searchParams": None, "searchCheckSample": 1000,
             "savePredictions": 0}


def _opts_dict(opts) -> dict:
    if opts is None:
        return dict(TEST_OPTS)
    if dataclasses.is_dataclass(opts):
        d = dataclasses.asdict(opts)
    elif isinstance(opts, Mapping):
        d = dict(opts)
    else:
        d = dict(vars(opts))
    return {**TEST_OPTS, **d}


def _read_features(dbFeatFn, qFeatFn, nQ: int, nDb: int, crop: int, memoryCap, nTop: int):
    """testFromFn's features: the queries read, the database read or (larger than the
    cap) a :class:`~matnet.search.streamed.StreamedDb`, both checked against each other and
    cropped to ``crop`` dimensions (L2-normalised again) when 0 < crop < D; and the
    streaming cap (None: in memory)."""
    qFeat = read_bin(qFeatFn, n=nQ)
    nDims = qFeat.shape[1]
    nvals = os.path.getsize(dbFeatFn) // 4 if os.path.isfile(dbFeatFn) else 0
    if nvals and nDb and nvals % nDb == 0 and nvals // nDb != nDims:
        raise BinFeatureError(f"query features {qFeatFn} have D={nDims} ({nQ} queries), database features "
                              f"{dbFeatFn} have D={nvals // nDb} ({nDb} images): not from the same network")
    if crop > nDims:
        warnings.warn(f"cropToDim ({crop}) larger than the dimensionality ({nDims}) -- ignoring")
        crop = 0
    bin_shape(dbFeatFn, D=nDims, n=nDb)  # a wrong file fails here, before any search
    dbBytes = os.path.getsize(dbFeatFn)
    cap = streaming_cap(dbBytes, memoryCap,
                        need=in_memory_bytes(dbBytes, nDims, nQ, nTop, crop))
    if cap is not None:
        chunk_rows(crop or nDims, nQ, cap, nTop)  # a cap too small is refused here, before any search
        print(f"testFromFn: streaming {dbFeatFn} ({dbBytes / 2**20:.1f} MiB) within {cap / 2**20:.1f} MiB")
        dbFeat = StreamedDb(dbFeatFn, nDims, nDb, cap, crop)
    else:
        dbFeat = read_bin(dbFeatFn, D=nDims, n=nDb)
        if crop:
            dbFeat = relja_l2normalize_rows(dbFeat[:, :crop])
    if crop:
        qFeat = relja_l2normalize_rows(qFeat[:, :crop])
    return qFeat, dbFeat, cap


def testFromFn(db, dbFeatFn, qFeatFn, opts=None, verbose: bool = True, **overrides):
    """testFromFn.m: recall@N from ``.bin`` feature files (serialAllFeats output).

    ``opts`` (dict, dataclass or None) defaults to recallNs [1:5, 10:5:100],
    nTestSample inf, nTestRankSample 0, margin 0.1, nNegChoice 1000, cropToDim 0;
    keyword overrides must name existing options.  ``cropToDim`` > 0 keeps the first
    cropToDim dimensions and L2-normalises again.  ``memoryCap`` (not in MATLAB; bytes or
    a string such as '1GB'): a database file larger than it is not loaded but streamed
    through a memory map in chunks within that memory, with the same ids and recall; the
    default (None) streams files larger than half the available memory, within a quarter
    of it.  ``searchMethod`` / ``searchParams`` / ``searchCheckSample`` (not in MATLAB):
    approximate search with faiss, its recall next to the exact one on a query sample
    (see :func:`testCore`; the comparison is returned in ``opts['searchCheck']``).
    ``savePredictions`` N (not in MATLAB): the first N results of each tested query from
    the same search, returned in ``opts['predictions']`` ({queries, ids, ds}; see
    :mod:`matnet.predictions`).  Returns ``(recall, rankloss,
    allRecalls, opts)``: mean recall per N, the rank loss (None unless
    nTestRankSample > 0), per-query recalls, the options used.  Feature files must
    hold exactly numQueries / numImages vectors (MATLAB silently reads the first
    numImages of a longer database file; here that is an error naming the file).
    ``verbose`` False: the file names and recall tables are not printed.
    """
    opts = _opts_dict(opts)
    for k, v in overrides.items():
        if k not in opts:
            raise TypeError(f"testFromFn: unknown option '{k}' (known: {sorted(opts)})")
        opts[k] = v
    nQ, nDb = int(db.numQueries), int(db.numImages)
    if nQ == 0:
        raise ValueError(f"{getattr(db, 'specFn', getattr(db, 'name', 'db'))}: the dataset has no queries")
    if verbose:
        print(f"testFromFn:\n{dbFeatFn}\n{qFeatFn}")
    nTop = max(list(opts["recallNs"]) + [int(opts.get("savePredictions") or 0)])
    qFeat, dbFeat, cap = _read_features(dbFeatFn, qFeatFn, nQ, nDb, int(opts.get("cropToDim") or 0),
                                        opts.get("memoryCap"), nTop)
    rankloss = None
    if opts["nTestRankSample"] > 0:
        rankloss, _ = testCoreRank(db, qFeat, dbFeat, opts["margin"], opts["nNegChoice"],
                                   nTestSample=opts["nTestRankSample"], verbose=verbose,
                                   block=SEARCH_BLOCK if cap is None else rank_block(cap))
    check, preds = {}, {}
    search = SearchOptions(opts["searchMethod"], opts["searchParams"], opts["searchCheckSample"], opts["memoryCap"])
    recall, allRecalls = testCore(db, qFeat, dbFeat, nTestSample=opts["nTestSample"], recallNs=opts["recallNs"],
                                  search=search, searchCheck=check, verbose=verbose,
                                  savePredictions=int(opts["savePredictions"] or 0), predictions=preds)
    if check:
        opts["searchCheck"] = check
    if preds:
        opts["predictions"] = preds
    return recall, rankloss, allRecalls, opts


# MATLAB names starting with "test": keep pytest from collecting them where imported
for _f in (testCore, testCoreRank, testFromFn):
    _f.__test__ = False
