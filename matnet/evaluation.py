"""A network on a dataset, end to end: check the images, extract (serialAllFeats,
resumable), recall@N (testFromFn) under a protocol, a printed table, a JSON record and
a recall plot.  What ``matnet evaluate`` and ``matnet reference`` run.

Protocols: ``matlab`` is testFromFn with the dataset's own rules (Tokyo 24/7's panorama
NMS, TokyoTM's time filter, cropToDim for fewer dimensions); ``vpr`` is what
gmberton/VPR-methods-evaluation computes: plain exact kNN over all queries, a
prediction correct when within 25 m (inclusive), queries without any positive counted
as failures.  Both report recall at MATLAB's recallNs (1:5, 10:5:100).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from converters.atomic_file import atomic_write, write_text

from .search.approximate import build_index
from .datasets.close_position import sqdist
from .recall_at_n import RECALL_NS, testFromFn
from .search import SearchOptions
from .search.memory import chunk_rows, in_memory_bytes, parse_bytes, streaming_cap
from .device import uses_gpu
from .extract import computeRepresentation, extract_features, seconds_per_image
from .feature_files import features_complete
from .images import resolve_image_path, vl_imreadjpeg
from .precision import check_precision
from .prediction_files import check_save_predictions, save_prediction_files
from .plots import plot_recall_at_n

PRINT_NS = (1, 5, 10, 20)
PROTOCOLS = ("matlab", "vpr")
VPR_POS_DIST = 25.0


class EvaluationError(ValueError):
    """Inputs of an evaluation that cannot work; the message names the file."""


class PlainKnn:
    """The ``vpr`` protocol's view of a dataset: its queries, database and positions,
    no search post-processing, positives within 25 m."""

    def __init__(self, db):
        self.db = db
        self.name, self.specFn = db.name, getattr(db, "specFn", db.name)
        self.numQueries, self.numImages = db.numQueries, db.numImages

    def isPosQ(self, iQuery, iDb):
        return sqdist(self.db.utmQ[:, np.asarray(iQuery)], self.db.utmDb[:, np.asarray(iDb)]) <= VPR_POS_DIST ** 2


@dataclass
class RootCheck:
    found: int = 0
    other_extension: int = 0
    missing: list[str] = field(default_factory=list)

    def line(self, what: str, total: int) -> str:
        s = f"{what}: {self.found + self.other_extension}/{total} images present"
        if self.other_extension:
            s += f" ({self.other_extension} under the other extension, e.g. .png for a listed .jpg)"
        if self.missing:
            s += f"; {len(self.missing)} missing, first: {self.missing[0]}"
        return s


def check_images(folder: str, fns) -> RootCheck:
    """Count the listed images under ``folder``: present, present as .png/.jpg instead, missing."""
    chk = RootCheck()
    with warnings.catch_warnings():  # the substitution is reported in the summary line instead
        warnings.simplefilter("ignore")
        for fn in fns:
            p = Path(folder) / fn
            try:
                found = resolve_image_path(p)
            except FileNotFoundError:
                chk.missing.append(str(p))
                continue
            if found == p:
                chk.found += 1
            else:
                chk.other_extension += 1
    return chk


def recall_table(recallNs, recall, nQ, reference=None) -> str:
    """Recall % and query counts at N = 1, 5, 10, 20 (and the reference's Ns); with
    ``reference`` ({N: (recall %, count or None)}) its numbers and the difference in queries."""
    ns = sorted(set(PRINT_NS) | set(reference or ())) if reference else list(PRINT_NS)
    rec = dict(zip(recallNs, recall))
    if not reference:
        lines = [f"{'N':>4} {'recall %':>9} {'queries':>8}"]
        lines += [f"{n:>4} {100 * rec[n]:9.2f} {int(round(rec[n] * nQ)):8d}" for n in ns if n in rec]
        return "\n".join(lines)
    lines = [f"{'N':>4} {'ours %':>8} {'ours #':>7} {'published %':>12} {'pub #':>6} {'diff (queries)':>15}"]
    for n in ns:
        if n not in rec:
            continue
        ours_n = int(round(rec[n] * nQ))
        if n not in reference:
            lines.append(f"{n:>4} {100 * rec[n]:8.3f} {ours_n:7d} {'-':>12} {'-':>6} {'-':>15}")
            continue
        pr, pc = reference[n]
        pub_n = pc if pc is not None else int(round(pr / 100 * nQ))
        lines.append(f"{n:>4} {100 * rec[n]:8.3f} {ours_n:7d} {pr:12.3f} {pub_n:6d} {ours_n - pub_n:+15d}")
    return "\n".join(lines)


def method_slug(searchMethod: str) -> str:
    """A search method as a file-name part: runs of other characters than letters and
    digits as ``-`` (``IVF4096,PQ64`` -> ``IVF4096-PQ64``)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", str(searchMethod)).strip("-")


def result_stem(network: str, dataset: str, protocol: str, searchMethod: str = "exact",
                precision: str = "exact") -> str:
    """The stem of an evaluation's result files: ``<net>_<dataset>[_fast]_<protocol>[_<method>]``
    (the method only when it is not ``exact``; ``_fast`` for the bf16 precision).  The
    record is ``<stem>_recall.json``, the plot ``<stem>_recall.png``, the predictions
    ``<stem>_predictions.csv``, ``<stem>_predictions/`` and ``<stem>_report.html``.
    ``network`` is the name :func:`network_name` gives in the output folder, so two
    different networks whose files have the same name never share a stem.  Before (issue
    24): ``<net>_<dataset>[_<method>]``, so a ``vpr`` run and a ``matlab`` run kept only the
    second's files."""
    tag = feature_stem(network, dataset, precision)
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"unknown protocol {protocol!r} (use {' or '.join(PROTOCOLS)})")
    return f"{tag}_{protocol}" + ("" if searchMethod == "exact" else f"_{method_slug(searchMethod)}")


def feature_stem(network: str, dataset: str, precision: str = "exact") -> str:
    """The stem of an evaluation's feature files ``<stem>_{db,q}.bin``: they do not depend
    on the protocol nor the search, so every protocol and search reuses them."""
    return f"{network}_{dataset}" + ("" if check_precision(precision) == "exact" else f"_{precision}")


def network_name(outDir, name: str, netFile=None) -> str:
    """The name of network file ``netFile`` (called ``name``, its file stem) in the
    result and feature files of ``outDir``: ``name`` itself unless another network file
    of that name already wrote there, then ``<name>-<8 hex of sha1(resolved path)>``.
    The first run claims a name by creating ``<outDir>/<name>.network`` (the resolved
    path; created atomically, so of two concurrent runs one wins), later runs of the same
    file find their name there.  Without ``netFile`` (a network given as an object)
    ``name`` is used as it is.  Two networks ``a/net.mat`` and ``b/net.mat`` evaluated
    into one folder overwrote each other's features and results (issue 24, case 11)."""
    if netFile is None:
        return name
    outDir = Path(outDir)
    resolved = str(Path(netFile).expanduser().resolve())
    hashed = f"{name}-{hashlib.sha1(resolved.encode()).hexdigest()[:8]}"
    for candidate in (name, hashed):
        claim = outDir / f"{candidate}.network"
        try:
            with atomic_write(claim, "w", replace=False) as f:  # fails when the name is taken
                f.write(resolved + "\n")
            return candidate
        except FileExistsError:
            try:
                holder = claim.read_text().strip()
            except OSError as e:
                raise EvaluationError(f"{claim}: cannot read which network owns the name {candidate!r}: {e}") from e
            if holder == resolved:
                return candidate
    raise EvaluationError(f"{outDir}: the names {name!r} and {hashed!r} are both taken by other network files "
                          f"({outDir / (name + '.network')}, {outDir / (hashed + '.network')})")


def check_dims(dims, fullD: int, netName: str) -> list[int]:
    """``--dims`` values as ints within 1..fullD (the descriptor's length), else
    EvaluationError naming the value and both bounds; none given = [fullD].  Before
    (issue 24): -5 dropped the last 5 values (a Python slice), 0 and values above the
    length ran the full descriptor but recorded and plotted the asked number ("4096-D
    (full)" for a 2048-D network)."""
    if not dims:
        return [int(fullD)]
    out = []
    for d in dims:
        if isinstance(d, bool) or not float(d).is_integer() or not 1 <= int(d) <= fullD:
            raise EvaluationError(f"--dims {d}: must be between 1 and {fullD}, the length of {netName}'s "
                                  f"descriptor ({fullD} values)")
        out.append(int(d))
    return out


def check_memory_cap(memoryCap, nImages: int, nQueries: int, D: int):
    """``--memory-cap`` checked before any extraction: a positive size (bytes or '8GB'),
    and, when the database file (nImages x D float32) would be streamed under it, large
    enough for the queries and one chunk; EvaluationError naming the option and the
    smallest cap that works otherwise.  Before (issue 24): refused, or a MemoryError
    traceback, only after the whole extraction."""
    if memoryCap is None:
        return None
    try:
        cap = parse_bytes(memoryCap)
    except ValueError as e:
        raise EvaluationError(f"--memory-cap {memoryCap}: {e}") from None
    if streaming_cap(4 * D * nImages, cap, need=in_memory_bytes(4 * D * nImages, D, nQueries)) is not None:
        try:
            chunk_rows(D, nQueries, cap)
        except MemoryError as e:
            raise EvaluationError(f"--memory-cap {memoryCap}: too small to search {nQueries} queries of "
                                  f"{D} values: {e}") from None
    return cap


def write_json(path: Path, record: dict) -> None:
    write_text(path, json.dumps(record, indent=1))


@dataclass(frozen=True)
class EvaluationOptions:
    """The choices of :func:`evaluate_dataset` (keywords of the same names work too)."""
    dims: list | None = None
    protocol: str = "matlab"
    useGPU: object = None
    batchSize: int = 16
    qBatchSize: int | None = None
    numThreads: int | None = None
    precision: str = "exact"
    search: SearchOptions | None = None
    savePredictions: int = 0
    savePredictionsImages: bool = True
    onlyWrong: bool = False

    def replace(self, **kw) -> "EvaluationOptions":
        known = {f.name for f in fields(self)}
        bad = sorted(set(kw) - known)
        if bad:
            raise TypeError(f"evaluate_dataset: unknown option(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")
        return dataclasses.replace(self, **kw)


@dataclass
class _Run:
    """What evaluate_dataset works out before the recalls."""
    name: str
    fullD: int
    dims: list
    useGPU: bool
    dbFn: Path
    qFn: Path
    recordBase: Path
    first: object = None  # the first database image (D and the time estimate)


def evaluate_dataset(net, db, outDir, netName: str, options: EvaluationOptions | None = None, *, reference=None,
                     netFile=None, log=print, **kw) -> dict:
    """Evaluate ``net`` (called ``netName``, read from ``netFile``) on dataset ``db`` (any
    dbBase).  Files in ``outDir``, named after :func:`network_name` (``netName``, or
    ``netName-<hash>`` when another network file of that name already wrote there):
    features ``<net>_<db.name>[_fast]_{db,q}.bin`` (:func:`feature_stem`), the record
    ``<stem>_recall.json`` and plot ``<stem>_recall.png`` with ``stem`` =
    :func:`result_stem` (network, dataset, protocol, search method).  ``dims``:
    dimensionalities to test, each within 1..D (fewer than the network's D: cropToDim;
    default the full D), refused before any extraction otherwise, as a ``memoryCap`` that
    cannot work.  The extraction time is estimated from a measured batch (not printed
    when both feature files are reused); ``images_per_second`` is null when nothing was
    extracted.  The record is written last, after the plot and the predictions, and a
    previous record of the same stem is removed first: a record on disk always belongs
    to the files beside it (an interrupted run leaves none).  ``reference(dims)`` ->
    ``{N: (recall %, count or None)}, source`` adds published numbers to the table,
    record and plot.  ``precision`` 'fast' extracts with a bf16 trunk (files tagged
    ``_fast``); ``search`` (:class:`~matnet.search.SearchOptions`, not in MATLAB): its
    memoryCap is testFromFn's (a database file larger is streamed); a faiss method (checked
    against exact search on checkSample sampled queries) and its parameters are checked
    before extraction, the record and plot are named ``..._<method>_recall.*`` and each
    result holds the check as ``search_check``.
    ``savePredictions`` N (not in MATLAB; VPR-methods-evaluation's num_preds_to_save):
    each query's top-N of the recall's own search written as ``<stem>_predictions.csv``,
    panels in ``<stem>_predictions/`` (``savePredictionsImages``; ``onlyWrong``: queries
    wrong at 1 only) and ``<stem>_report.html`` (see :mod:`matnet.prediction_files`;
    with several ``dims`` the stem ends in ``_<d>d``); each result names its files
    (``predictions_csv``...), and the record too when there is one result.
    The options are :class:`EvaluationOptions`' fields, given as ``options`` or as keywords
    (``dims=``, ``protocol=``, ``savePredictions=``...).  Returns the JSON record."""
    o = (options or EvaluationOptions()).replace(**kw)
    outDir = Path(outDir)
    o = _check_inputs(db, outDir, o, log)
    run = _prepare(net, db, outDir, netName, netFile, o, log)
    computed, extract_s = _extract(net, db, run, o, log)
    test_db = db if o.protocol == "matlab" else PlainKnn(db)
    record = _new_record(db, run, netFile, o, computed, extract_s)
    recordFn, plotFn = Path(f"{run.recordBase}_recall.json"), Path(f"{run.recordBase}_recall.png")
    recordFn.unlink(missing_ok=True)  # from here on, no record until this run's is complete
    curves = {}
    for d in run.dims:
        res, dcurves = _evaluate_dims(db, test_db, d, run, record, recordFn, reference, netFile, o, log)
        record["results"].append(res)
        curves.update(dcurves)
    if len(record["results"]) == 1 and "predictions_csv" in record["results"][0]:
        record["predictions_csv"] = record["results"][0]["predictions_csv"]
    method = o.search.method
    title = f"{run.recordBase.name} ({o.protocol} protocol" + (")" if method == "exact" else f", search {method})")
    plot_recall_at_n(plotFn, curves, title)
    write_json(recordFn, record)  # last: the mark of a finished run
    log(f"\nwrote {recordFn} and {plotFn}")
    return record


def _check_inputs(db, outDir: Path, o: EvaluationOptions, log) -> EvaluationOptions:
    """The protocol, the images and the search options, before anything is computed;
    the options with ``search`` and ``savePredictions`` in their checked form."""
    if o.protocol not in PROTOCOLS:
        raise EvaluationError(f"unknown protocol {o.protocol!r} (use {' or '.join(PROTOCOLS)})")
    outDir.mkdir(parents=True, exist_ok=True)
    log(f"dataset {db.name}: {db.numImages} database images, {db.numQueries} queries")
    chk_db, chk_q = check_images(db.dbPath, db.dbImageFns), check_images(db.qPath, db.qImageFns)
    log(chk_db.line("database", db.numImages))
    log(chk_q.line("queries", db.numQueries))
    if chk_db.missing or chk_q.missing:
        raise EvaluationError(f"{len(chk_db.missing)} database and {len(chk_q.missing)} query images of "
                              f"{db.name} are missing (first: {(chk_db.missing + chk_q.missing)[0]})")
    search = SearchOptions() if o.search is None else o.search
    savePredictions = check_save_predictions(o.savePredictions, RECALL_NS)
    if int(search.checkSample) < 0:
        raise EvaluationError(f"searchCheckSample must be >= 0, got {search.checkSample}")
    if search.exact and search.params:
        raise EvaluationError(f"searchParams {search.params} apply to a faiss searchMethod, not to 'exact'")
    if search.memoryCap is not None:
        try:
            parse_bytes(search.memoryCap)
        except ValueError as e:
            raise EvaluationError(f"--memory-cap {search.memoryCap}: {e}") from None
    return o.replace(search=search, savePredictions=savePredictions)


def _prepare(net, db, outDir: Path, netName: str, netFile, o: EvaluationOptions, log) -> _Run:
    """The network's D on the first image, the dims and memory cap checked against it, the
    files' names, a faiss index built once per D (a bad method fails before extraction)."""
    search = o.search
    useGPU = uses_gpu(o.useGPU)
    first = vl_imreadjpeg(resolve_image_path(Path(db.dbPath) / db.dbImageFns[0]))
    fullD = int(computeRepresentation(net, first, useGPU=useGPU, precision=o.precision).size)
    dims = check_dims(o.dims, fullD, netName)
    for d in sorted(set(dims)):
        check_memory_cap(search.memoryCap, db.numImages, db.numQueries, d)
    name = network_name(outDir, netName, netFile)
    if name != netName:
        log(f"another network file named {netName} has results in {outDir}: this one's files are named {name}")
    tag = feature_stem(name, db.name, o.precision)
    recordBase = outDir / result_stem(name, db.name, o.protocol, search.method, o.precision)
    if not search.exact:
        for d in sorted(set(dims)):
            spec = build_index(search.method, search.params, db.numImages, d)[0]
            log(f"search {search.method}, {d}-D: faiss index {spec}")
    return _Run(name, fullD, dims, useGPU, outDir / f"{tag}_db.bin", outDir / f"{tag}_q.bin", recordBase, first)


def _extract(net, db, run: _Run, o: EvaluationOptions, log) -> tuple[int, float | None]:
    """Both feature files, reused when complete; the time estimated first from a measured
    batch.  Returns (images extracted, seconds or None)."""
    todo = [(db.dbPath, db.dbImageFns, run.dbFn), (db.qPath, db.qImageFns, run.qFn)]
    todo = [t for t in todo if not features_complete(net, t[0], t[1], t[2], o.precision)]
    if todo:
        total = sum(len(t[1]) for t in todo)
        n = max(1, min(int(o.batchSize), total))
        per_image = seconds_per_image(net, run.first, n, useGPU=run.useGPU, precision=o.precision)
        log(f"estimated extraction time: {per_image * total / 3600:.2f} h ({per_image:.3f} s/image x {total} images, "
            f"measured on a batch of {n} after a warm-up image, decoding not included; "
            f"{'GPU' if run.useGPU else 'CPU'})")
    t0 = time.perf_counter()
    kw = dict(useGPU=run.useGPU, numThreads=o.numThreads, precision=o.precision)
    computed = 0
    for imPath, fns, fn, bs in ((db.dbPath, db.dbImageFns, run.dbFn, o.batchSize),
                                (db.qPath, db.qImageFns, run.qFn, o.qBatchSize or o.batchSize)):
        if extract_features(net, imPath, fns, fn, log=log, batchSize=bs, **kw):
            computed += len(fns)
    extract_s = time.perf_counter() - t0 if computed else None
    fileD = os.path.getsize(run.qFn) // (4 * db.numQueries)
    if fileD != run.fullD:
        raise EvaluationError(f"{run.qFn}: holds {fileD} values per image, the network gives {run.fullD}")
    return computed, extract_s


def _new_record(db, run: _Run, netFile, o: EvaluationOptions, computed: int, extract_s) -> dict:
    protocol, search = o.protocol, o.search
    return {"network": run.name, "network_file": None if netFile is None else str(netFile), "dataset": db.name,
            "spec": str(getattr(db, "specFn", "")),
            "protocol": protocol, "posDistThr": float(db.posDistThr if protocol == "matlab" else VPR_POS_DIST),
            "search_postprocess": type(db).__name__ if protocol == "matlab" and
            hasattr(db, "nnSearchPostprocess") else None,
            "num_queries": int(db.numQueries), "num_images": int(db.numImages), "dims_full": int(run.fullD),
            "recallNs": RECALL_NS, "device": "GPU" if run.useGPU else "CPU", "precision": o.precision,
            "features_reused": not computed, "images_extracted": computed, "extract_seconds": extract_s,
            "images_per_second": computed / extract_s if computed and extract_s > 0 else None,
            "search_method": search.method, "search_params": dict(search.params or {}), "results": []}


def _evaluate_dims(db, test_db, d: int, run: _Run, record: dict, recordFn: Path, reference, netFile,
                   o: EvaluationOptions, log) -> tuple[dict, dict]:
    """testFromFn at ``d`` dimensions: the result entry and its plot curves (and the
    predictions' files when asked for)."""
    search, method = o.search, o.search.method
    crop = 0 if d == run.fullD else int(d)
    recall, _, _, opts = testFromFn(test_db, str(run.dbFn), str(run.qFn), recallNs=RECALL_NS, cropToDim=crop,
                                    memoryCap=search.memoryCap, searchMethod=method, searchParams=search.params,
                                    searchCheckSample=search.checkSample, savePredictions=o.savePredictions)
    recall = np.asarray(recall, dtype=np.float64)
    ref, source = reference(int(d)) if reference else ({}, None)
    log(f"\n{run.recordBase.name}, {d}-D ({'cropToDim %d' % crop if crop else 'full'}), protocol {o.protocol}"
        + ("" if method == "exact" else f", search {method}") + ":")
    log(recall_table(RECALL_NS, recall, db.numQueries, ref))
    res = {"dims": int(d), "cropToDim": crop, "recall": recall.tolist(),
           "counts": [int(round(r * db.numQueries)) for r in recall]}
    curves = {}
    if "searchCheck" in opts:
        check = res["search_check"] = opts["searchCheck"]
        curves[f"exact search {d}-D, {check['queries']} queries"] = (check["recallNs"], check["exact"])
    if reference:
        res.update(published={str(n): r for n, (r, _) in ref.items()}, published_source=source)
        if ref:
            ns = sorted(ref)
            curves[f"published {d}-D"] = (ns, [ref[n][0] / 100 for n in ns])
    if "predictions" in opts:
        stem = Path(f"{run.recordBase}_{d}d" if len(run.dims) > 1 else run.recordBase)
        info = {"network": run.name, "network file": netFile or "", "dataset": f"{db.name} ({db.numQueries} "
                f"queries, {db.numImages} database images)", "protocol": o.protocol, "dimensions": d,
                "search": method, "post-processing": record["search_postprocess"] or "none",
                "record": recordFn.name}
        res.update(save_prediction_files(db, test_db, opts["predictions"], stem, RECALL_NS, recall, info,
                                         o.savePredictionsImages, o.onlyWrong, log=log))
    curves[f"ours {d}-D"] = (RECALL_NS, recall)
    return res, curves
