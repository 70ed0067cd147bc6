"""Each query's top-N database images, as the search that gave the recall returned them,
and the per-query CSV (not in MATLAB: testFromFn keeps only the recall).

The ids come from the very search recallAtN scored: :class:`PredictionRecorder` wraps
testCore's searcher (exact, streamed or faiss) *after* the dataset's post-processing
(Tokyo 24/7's panorama NMS, TokyoTM's time filter under the ``matlab`` protocol) and
keeps the first N columns of what recallAtN received, so there is no second search and
the CSV's correct flags reproduce the recall exactly.

CSV (``<stem>_predictions.csv``), one row per (query, rank):
``query_id`` (0-based), ``query`` (image path relative to the dataset root, the common
folder of the database and query folders), ``rank`` (1-based), ``db_id`` (0-based),
``db_image``, ``distance`` (squared L2 as the search returns it, float32 printed to
round-trip), ``meters`` (ground distance between the two UTM positions), ``correct``
(1 when the database image is a positive of the query under the protocol used),
``has_positive`` (0 marks a query with no database image within the protocol's
distance: kept, never recalled) and, where the dataset has one, ``condition`` (Tokyo
24/7: day/sunset/night; MSLS: day/night).  A query for which the post-processing left no result at all
(TokyoTM's filter can) keeps one row with rank 0 and empty database fields.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from converters.atomic_file import atomic_write

COLUMNS = ["query_id", "query", "rank", "db_id", "db_image", "distance", "meters", "correct", "has_positive"]


class PredictionRecorder:
    """A recallAtN searcher ``searcher(qIds, nTop) -> ids or (ids, ds)`` that also keeps,
    for every query it answers, the first ``n`` ids and distances (distances NaN when the
    searcher gives ids only).  ``n`` must not exceed the nTop recallAtN asks for: the
    recall is never computed from a different search than the one recorded."""

    def __init__(self, searcher, n: int, nQueries: int):
        self.searcher, self.n = searcher, int(n)
        if self.n < 1:
            raise ValueError(f"savePredictions must be >= 1, got {n}")
        self.ids = np.full((nQueries, self.n), -1, np.int64)
        self.ds = np.full((nQueries, self.n), np.inf, np.float32)
        self.asked = np.zeros(nQueries, bool)

    def __call__(self, qIds, nTop):
        if nTop < self.n:
            raise ValueError(f"savePredictions {self.n} exceeds the largest recall N ({nTop}): "
                             f"add {self.n} to recallNs or save fewer predictions")
        out = self.searcher(qIds, nTop)
        ids, ds = out if isinstance(out, tuple) else (out, None)
        q = np.asarray(qIds, np.int64).ravel()
        ids = np.asarray(ids, np.int64).reshape(q.size, -1)[:, :self.n]
        self.ids[q, :ids.shape[1]] = ids
        if ds is not None:
            self.ds[q, :ids.shape[1]] = np.asarray(ds, np.float32).reshape(q.size, -1)[:, :self.n]
        else:
            self.ds[q, :ids.shape[1]] = np.where(ids >= 0, np.nan, np.inf)
        self.asked[q] = True
        return out

    def result(self) -> dict:
        """{"queries", "ids", "ds"}: the queries answered (ascending), their top-n rows
        (ids -1 / distance inf past the results a query got)."""
        q = np.flatnonzero(self.asked)
        return {"queries": q, "ids": self.ids[q], "ds": self.ds[q]}


def dataset_root(db) -> str:
    """The folder the CSV's image paths are relative to: the common folder of the
    dataset's database and query folders."""
    return os.path.commonpath([os.path.abspath(db.dbPath), os.path.abspath(db.qPath)])


@dataclass
class Predictions:
    """Top-N of the tested queries: ``queries`` (nT,) 0-based ids; ``ids``, ``distance``,
    ``meters``, ``correct`` nT x N (id -1 / distance inf / meters NaN / correct False past
    a query's results); ``has_positive`` (nT,); ``query_names`` (nT,) and ``db_names``
    ({db id: path}) relative to ``root``; ``condition`` (nT,) or None."""

    queries: np.ndarray
    ids: np.ndarray
    distance: np.ndarray
    meters: np.ndarray
    correct: np.ndarray
    has_positive: np.ndarray
    query_names: list
    db_names: dict
    condition: np.ndarray | None = None
    root: str = ""

    @property
    def n(self) -> int:
        return self.ids.shape[1]

    @property
    def valid(self) -> np.ndarray:
        return self.ids >= 0

    def first_correct(self) -> np.ndarray:
        """1-based rank of the first correct result, 0 when none in the top N."""
        c = self.correct
        return np.where(c.any(1), c.argmax(1) + 1, 0)

    def correct_at(self, n: int) -> np.ndarray:
        """Per query: a correct result within the first ``n`` (recallAtN's hit; n <= N)."""
        if n > self.n:
            raise ValueError(f"recall at {n} needs at least {n} saved predictions, these have {self.n}")
        return self.correct[:, :n].any(1)

    def query_path(self, i: int) -> str:
        return os.path.join(self.root, self.query_names[i])

    def db_path(self, dbId: int) -> str:
        return os.path.join(self.root, self.db_names[int(dbId)])


def build_predictions(db, test_db, queries, ids, ds) -> Predictions:
    """The table of recorded ``ids`` / ``ds`` (rows of ``queries``) on dataset ``db``;
    ``test_db`` is the protocol's view whose ``isPosQ`` decides correct (``db`` itself
    under the matlab protocol).  ``has_positive``: the query's nearest database position
    is a positive (isPosQ depends on the distance only, so then some database image is)."""
    queries = np.asarray(queries, np.int64)
    ids = np.asarray(ids, np.int64).reshape(queries.size, -1)
    ds = np.asarray(ds, np.float32).reshape(ids.shape)
    valid = ids >= 0
    safe = np.maximum(ids, 0)
    uq = db.utmQ[:, queries][:, :, None]
    meters = np.sqrt((uq[0] - db.utmDb[0][safe]) ** 2 + (uq[1] - db.utmDb[1][safe]) ** 2)
    meters = np.where(valid, meters, np.nan)
    correct = np.zeros(ids.shape, bool)
    if valid.any():
        qq = np.broadcast_to(queries[:, None], ids.shape)
        correct[valid] = np.asarray(test_db.isPosQ(qq[valid], ids[valid]), bool)
    if db.numImages and queries.size:
        _, nearest = cKDTree(np.asarray(db.utmDb, np.float64).T).query(db.utmQ[:, queries].T)
        has_pos = np.asarray(test_db.isPosQ(queries, np.asarray(nearest, np.int64)), bool).reshape(-1)
    else:
        has_pos = np.zeros(queries.size, bool)
    root = dataset_root(db)
    qrel = [os.path.relpath(os.path.join(db.qPath, db.qImageFns[q]), root) for q in queries]
    dbRel = {int(i): os.path.relpath(os.path.join(db.dbPath, db.dbImageFns[i]), root)
             for i in np.unique(ids[valid])}
    cond = query_conditions(db, queries)
    return Predictions(queries, ids, np.where(valid, ds, np.inf).astype(np.float32), meters, correct,
                       has_pos, qrel, dbRel, cond, root)


def query_conditions(db, queries):
    """The queries' condition where the dataset has one: Tokyo 24/7's time of day
    (day / sunset / night), MSLS' night flag (day / night); else None."""
    if callable(getattr(db, "query_time_of_day", None)):
        return np.asarray(db.query_time_of_day(queries)).astype(str)
    if getattr(db, "qNight", None) is not None:
        return np.where(np.asarray(db.qNight, bool)[queries], "night", "day")
    return None


def _fmt_dist(x) -> str:
    return "nan" if not np.isfinite(x) else np.format_float_positional(np.float32(x), unique=True, trim="-")


def write_predictions_csv(path, pred: Predictions) -> Path:
    """The CSV described in the module docstring, written atomically."""
    path = Path(path)
    cols = COLUMNS + (["condition"] if pred.condition is not None else [])
    with atomic_write(path, "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for r, q in enumerate(pred.queries):
            tail = [pred.condition[r]] if pred.condition is not None else []
            hp = int(pred.has_positive[r])
            k = int(pred.valid[r].sum())
            if k == 0:
                w.writerow([int(q), pred.query_names[r], 0, "", "", "", "", "", hp] + tail)
            for j in range(k):
                i = int(pred.ids[r, j])
                w.writerow([int(q), pred.query_names[r], j + 1, i, pred.db_names[i], _fmt_dist(pred.distance[r, j]),
                            f"{pred.meters[r, j]:.3f}", int(pred.correct[r, j]), hp] + tail)
    return path


def read_predictions_csv(path, root: str = "") -> Predictions:
    """A CSV written by :func:`write_predictions_csv` back as :class:`Predictions`
    (``root``: the dataset root its paths are relative to, when known).  ValueError
    naming the file and row on a malformed one."""
    path = Path(path)
    rows: dict[int, list] = {}
    names, hp, cond, dbNames = {}, {}, {}, {}
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (r.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a predictions CSV (missing columns {', '.join(missing)})")
        hasCond = "condition" in r.fieldnames
        for lineNo, row in enumerate(r, start=2):
            try:
                q = int(row["query_id"])
                names[q], hp[q] = row["query"], bool(int(row["has_positive"]))
                if hasCond:
                    cond[q] = row["condition"]
                rows.setdefault(q, [])
                if int(row["rank"]) == 0:
                    continue
                i = int(row["db_id"])
                dbNames[i] = row["db_image"]
                rows[q].append((int(row["rank"]), i, float(row["distance"]), float(row["meters"]),
                                bool(int(row["correct"]))))
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}, line {lineNo}: malformed row ({e})") from None
    queries = np.array(sorted(rows), np.int64)
    n = max((len(v) for v in rows.values()), default=0)
    n = max(n, max((max((x[0] for x in v), default=0) for v in rows.values()), default=0))
    ids = np.full((queries.size, n), -1, np.int64)
    dist = np.full((queries.size, n), np.inf, np.float32)
    meters = np.full((queries.size, n), np.nan)
    correct = np.zeros((queries.size, n), bool)
    for k, q in enumerate(queries):
        for rank, i, d, m, c in rows[q]:
            ids[k, rank - 1], dist[k, rank - 1], meters[k, rank - 1], correct[k, rank - 1] = i, d, m, c
    return Predictions(queries, ids, dist, meters, correct, np.array([hp[q] for q in queries], bool),
                       [names[q] for q in queries], dbNames,
                       np.array([cond[q] for q in queries]) if hasCond else None, root)
