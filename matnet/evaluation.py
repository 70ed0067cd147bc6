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

import json
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .search.approximate import build_index
from .datasets.close_position import sqdist
from .recall_at_n import RECALL_NS, testFromFn
from .search import SearchOptions
from .extract import _fingerprint, computeRepresentation, serialAllFeats
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


def write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def extract_features(net, imPath, imageFns, outFn: Path, log=print, **kw) -> bool:
    """serialAllFeats into ``outFn``, skipped when ``outFn`` is complete for this network,
    image list and precision (its ``.done.json`` sidecar holds serialAllFeats' fingerprint).
    Returns whether anything was computed."""
    precision = kw.get("precision", "exact")
    fp = _fingerprint(net, str(imPath), list(imageFns)) + ("" if precision == "exact" else f"+{precision}")
    done = Path(str(outFn) + ".done.json")
    try:
        ok = json.loads(done.read_text()).get("fingerprint") == fp and outFn.is_file()
    except (OSError, ValueError):
        ok = False
    if ok:
        log(f"{outFn}: complete for this network and image list, reused")
        return False
    done.unlink(missing_ok=True)
    serialAllFeats(net, imPath, imageFns, outFn, **kw)
    write_json(done, {"fingerprint": fp, "images": len(imageFns)})
    return True


def evaluate_dataset(net, db, outDir, netName: str, dims=None, protocol: str = "matlab", useGPU=None,
                     batchSize: int = 16, qBatchSize: int | None = None, numThreads: int | None = None,
                     reference=None, netFile=None, log=print, precision: str = "exact",
                     search: SearchOptions | None = None, savePredictions: int = 0,
                     savePredictionsImages: bool = True, onlyWrong: bool = False) -> dict:
    """Evaluate ``net`` (called ``netName``) on dataset ``db`` (any dbBase); files
    ``<outDir>/<netName>_<db.name>_{db,q}.bin``, ``..._recall.json`` and ``..._recall.png``.  ``dims``: dimensionalities to test
    (fewer than the network's D: cropToDim; default the full D).  ``reference(dims)`` ->
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
    Returns the JSON record."""
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"unknown protocol {protocol!r} (use {' or '.join(PROTOCOLS)})")
    outDir = Path(outDir)
    outDir.mkdir(parents=True, exist_ok=True)
    log(f"dataset {db.name}: {db.numImages} database images, {db.numQueries} queries")
    chk_db, chk_q = check_images(db.dbPath, db.dbImageFns), check_images(db.qPath, db.qImageFns)
    log(chk_db.line("database", db.numImages))
    log(chk_q.line("queries", db.numQueries))
    if chk_db.missing or chk_q.missing:
        raise EvaluationError(f"{len(chk_db.missing)} database and {len(chk_q.missing)} query images of "
                              f"{db.name} are missing (first: {(chk_db.missing + chk_q.missing)[0]})")
    search = SearchOptions() if search is None else search
    savePredictions = check_save_predictions(savePredictions, RECALL_NS)
    searchMethod, searchParams = search.method, search.params
    if int(search.checkSample) < 0:
        raise EvaluationError(f"searchCheckSample must be >= 0, got {search.checkSample}")
    if search.exact and searchParams:
        raise EvaluationError(f"searchParams {searchParams} apply to a faiss searchMethod, not to 'exact'")
    useGPU = torch.cuda.is_available() if useGPU is None else bool(useGPU)
    tag = f"{netName}_{db.name}" + ("" if check_precision(precision) == "exact" else f"_{precision}")
    base = outDir / tag
    dbFn, qFn = Path(f"{base}_db.bin"), Path(f"{base}_q.bin")
    recordBase = base
    t0 = time.perf_counter()
    rep = computeRepresentation(net, vl_imreadjpeg(resolve_image_path(Path(db.dbPath) / db.dbImageFns[0])),
                                useGPU=useGPU, precision=precision)
    per_image = time.perf_counter() - t0
    if searchMethod != "exact":  # a bad method fails now, not after the extraction
        for d in sorted({min(int(d), rep.size) for d in (dims or [rep.size])}):
            spec = build_index(searchMethod, searchParams, db.numImages, d)[0]
            log(f"search {searchMethod}, {d}-D: faiss index {spec}")
        recordBase = outDir / (tag + "_" + re.sub(r"[^A-Za-z0-9]+", "-", searchMethod).strip("-"))
    total = db.numImages + db.numQueries
    log(f"estimated extraction time: {per_image * total / 3600:.1f} h ({per_image:.2f} s/image x {total} images, "
        f"{'GPU' if useGPU else 'CPU'})")
    t0 = time.perf_counter()
    kw = dict(useGPU=useGPU, numThreads=numThreads, precision=precision)
    extract_features(net, db.dbPath, db.dbImageFns, dbFn, log=log, batchSize=batchSize, **kw)
    extract_features(net, db.qPath, db.qImageFns, qFn, log=log, batchSize=qBatchSize or batchSize, **kw)
    extract_s = time.perf_counter() - t0
    fullD = os.path.getsize(qFn) // (4 * db.numQueries)
    test_db = db if protocol == "matlab" else PlainKnn(db)
    record = {"network": netName, "network_file": None if netFile is None else str(netFile), "dataset": db.name, "spec": str(getattr(db, "specFn", "")),
              "protocol": protocol, "posDistThr": float(db.posDistThr if protocol == "matlab" else VPR_POS_DIST),
              "search_postprocess": type(db).__name__ if protocol == "matlab" and
              hasattr(db, "nnSearchPostprocess") else None,
              "num_queries": int(db.numQueries), "num_images": int(db.numImages), "dims_full": int(fullD),
              "recallNs": RECALL_NS, "device": "GPU" if useGPU else "CPU", "precision": precision, "extract_seconds": extract_s,
              "images_per_second": total / extract_s if extract_s > 0 else None, "search_method": searchMethod,
              "search_params": dict(searchParams or {}), "results": []}
    curves = {}
    for d in (dims or [fullD]):
        crop = 0 if d >= fullD else int(d)
        recall, _, _, opts = testFromFn(test_db, str(dbFn), str(qFn), recallNs=RECALL_NS, cropToDim=crop,
                                        memoryCap=search.memoryCap, searchMethod=searchMethod,
                                        searchParams=searchParams, searchCheckSample=search.checkSample,
                                        savePredictions=savePredictions)
        recall = np.asarray(recall, dtype=np.float64)
        ref, source = reference(int(d)) if reference else ({}, None)
        log(f"\n{tag}, {d}-D ({'cropToDim %d' % crop if crop else 'full'}), protocol {protocol}"
            + ("" if searchMethod == "exact" else f", search {searchMethod}") + ":")
        log(recall_table(RECALL_NS, recall, db.numQueries, ref))
        res = {"dims": int(d), "cropToDim": crop, "recall": recall.tolist(),
               "counts": [int(round(r * db.numQueries)) for r in recall]}
        if "searchCheck" in opts:
            check = res["search_check"] = opts["searchCheck"]
            curves[f"exact search {d}-D, {check['queries']} queries"] = (check["recallNs"], check["exact"])
        if reference:
            res.update(published={str(n): r for n, (r, _) in ref.items()}, published_source=source)
            if ref:
                ns = sorted(ref)
                curves[f"published {d}-D"] = (ns, [ref[n][0] / 100 for n in ns])
        if "predictions" in opts:
            stem = Path(f"{recordBase}_{d}d" if len(dims or [fullD]) > 1 else recordBase)
            info = {"network": netName, "network file": netFile or "", "dataset": f"{db.name} ({db.numQueries} "
                    f"queries, {db.numImages} database images)", "protocol": protocol, "dimensions": d,
                    "search": searchMethod, "post-processing": record["search_postprocess"] or "none",
                    "record": f"{recordBase.name}_recall.json"}
            res.update(save_prediction_files(db, test_db, opts["predictions"], stem, RECALL_NS, recall, info,
                                             savePredictionsImages, onlyWrong, log=log))
        record["results"].append(res)
        curves[f"ours {d}-D"] = (RECALL_NS, recall)
    if len(record["results"]) == 1 and "predictions_csv" in record["results"][0]:
        record["predictions_csv"] = record["results"][0]["predictions_csv"]
    write_json(Path(f"{recordBase}_recall.json"), record)
    title = f"{tag} ({protocol} protocol" + (")" if searchMethod == "exact" else f", search {searchMethod})")
    plot_recall_at_n(Path(f"{recordBase}_recall.png"), curves, title)
    log(f"\nwrote {recordBase}_recall.json and {recordBase}_recall.png")
    return record
