"""The files ``--save-predictions N`` adds to an evaluation (not in MATLAB), named from
the evaluation's result stem: ``<stem>_predictions.csv`` (:mod:`matnet.predictions`),
``<stem>_predictions/`` (one panel per query, :mod:`matnet.panels`) and
``<stem>_report.html`` (:mod:`matnet.html_report`)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from converters.atomic_file import atomic_write

from .html_report import write_report
from .panels import write_panels
from .predictions import build_predictions, write_predictions_csv


def check_save_predictions(n, recallNs) -> int:
    """``n`` as an int in 0..max(recallNs); ValueError naming the option otherwise (checked
    before any extraction)."""
    try:
        k = int(n or 0)
    except (TypeError, ValueError):
        raise ValueError(f"savePredictions (--save-predictions) must be an integer, got {n!r}") from None
    top = int(max(recallNs))
    if k < 0 or k > top:
        raise ValueError(f"savePredictions (--save-predictions) {k}: must be between 1 and the largest recall N "
                         f"({top}); the predictions are the recall search's own results")
    return k


def save_prediction_files(db, test_db, recorded: dict, stem, recallNs, recall, info: dict,
                          images: bool = True, onlyWrong: bool = False, log=print) -> dict:
    """Write the CSV, the panels (``images``; only queries wrong at 1 with ``onlyWrong``)
    and the HTML report of the ``recorded`` top-N (testFromFn's ``opts['predictions']``)
    of dataset ``db`` under the protocol view ``test_db``.  Returns the record's entries
    (file names relative to the stem's folder)."""
    stem = Path(stem)
    pred = build_predictions(db, test_db, recorded["queries"], recorded["ids"], recorded["ds"])
    csvFn = write_predictions_csv(Path(f"{stem}_predictions.csv"), pred)
    out = {"predictions_csv": csvFn.name, "predictions_n": pred.n, "predictions_root": pred.root}
    panelsDir, files = None, None
    if images:
        panelsDir = Path(f"{stem}_predictions")
        res = write_panels(pred, panelsDir, onlyWrong=onlyWrong)
        files = res["files"]
        log(f"panels: {res['written']} written, {res['reused']} reused in {panelsDir}"
            + (" (queries wrong at 1 only)" if onlyWrong else ""))
        out["predictions_panels"] = panelsDir.name
    html = write_report(Path(f"{stem}_report.html"), pred, recallNs, recall, stem.name, info, panelsDir, files)
    out["report_html"] = html.name
    log(f"wrote {csvFn} ({pred.queries.size} queries x top-{pred.n}) and {html} "
        f"({os.path.getsize(html) / 2**20:.1f} MiB)")
    return out


def write_run(db, recorded: dict, stem, recallNs, recall, network: str, test_db=None, protocol: str = "matlab",
              images: bool = True, log=print) -> Path:
    """The prediction files of a testFromFn run (``recorded`` = its ``opts['predictions']``)
    and a minimal JSON record ``<stem>_recall.json`` naming them, as ``matnet evaluate``
    writes (what ``matnet report`` compares; the demo uses it).  Returns the record's path."""
    stem = Path(stem)
    recall = [float(r) for r in np.asarray(recall).ravel()]
    info = {"network": network, "dataset": f"{db.name} ({db.numQueries} queries, {db.numImages} database images)",
            "protocol": protocol}
    files = save_prediction_files(db, db if test_db is None else test_db, recorded, stem, recallNs, recall, info,
                                  images=images, log=log)
    record = {"network": network, "dataset": db.name, "protocol": protocol, "num_queries": int(db.numQueries),
              "num_images": int(db.numImages), "recallNs": [int(n) for n in recallNs],
              "results": [{"recall": recall, **files}], "predictions_csv": files["predictions_csv"]}
    path = Path(f"{stem}_recall.json")
    with atomic_write(path, "w") as f:
        json.dump(record, f, indent=1)
    return path
