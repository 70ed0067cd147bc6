"""dbMSLS: Mapillary Street-Level Sequences as a NetVLAD dbBase (image-to-image task).

Official layout ``<root>/train_val/<city>/{database,query}/`` with ``images/<key>.jpg``,
``raw.csv`` (key, lon, lat, ca, captured_at, pano) and ``postprocessed.csv`` (key,
easting, northing, night, view_direction, ...), optional ``subtask_index.csv``; the
first CSV column is the row index.  As mapillary_sls's ``MSLS(mode='val',
task='im2im', subtask)`` with ``evaluate.py``'s 25 m: rows with ``pano`` True are
left out, and rows whose ``subtask`` column (default ``all``; s2w, w2s, o2n, n2o, d2n,
n2d) of subtask_index.csv is False (when the file exists; a city left with no database
or no query image is skipped with a warning, as the official code skips it); positives are database images of the same city within posDistThr (inclusive);
queries with no positive are left out of the test, as the official evaluation does
(reported in a warning).  Cities are read in the order given (default: the official
split, val = cph, sf).

UTM: a dbStruct has no zone, so city k of the list (0-based) has ``k * 1e7`` m added to
its eastings (UTM eastings lie within 0..1e6): distances within a city are unchanged and
no positive ever crosses cities, in matnet and in MATLAB reading an imported spec.
"""
from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path

import numpy as np

from .close_position import closePosition
from .db_base import dbBase
from .local_paths import folder

CITIES = {
    "train": ["trondheim", "london", "boston", "melbourne", "amsterdam", "helsinki", "tokyo", "toronto",
              "saopaulo", "moscow", "zurich", "paris", "bangkok", "budapest", "austin", "berlin", "ottawa",
              "phoenix", "goa", "amman", "nairobi", "manila"],
    "val": ["cph", "sf"],
    "test": ["miami", "athens", "buenosaires", "stockholm", "bengaluru", "kampala"],
}
CITY_OFFSET = 1e7
_TRUE = {"true", "1", "yes"}


class MSLSError(ValueError):
    """An MSLS folder or CSV that cannot be used."""


def read_csv(path: Path, need: tuple[str, ...]) -> list[dict]:
    """Rows of an MSLS CSV as dicts; missing file or columns are errors naming it."""
    if not path.is_file():
        raise MSLSError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark is not part of the first column's name
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise MSLSError(f"{path}: not UTF-8 text (line {line}, byte {e.start}: {data[e.start:e.start + 1]!r}); "
                        f"save it as UTF-8 (the MSLS files are)") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    cols = reader.fieldnames or []
    missing = [c for c in need if c not in cols]
    if missing:
        raise MSLSError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(c for c in cols if c) or 'none'})")
    return rows


def coordinate(row: dict, column: str, i: int, path: Path) -> float:
    """``row[column]`` as a finite float, else MSLSError naming the file, the data row
    (1-based, and its line: the header is line 1) and the column (NaN/Inf reached
    scipy's KD-tree, whose message names no file: issue 24, case 14)."""
    v = row.get(column)
    try:
        x = float(v)
    except (TypeError, ValueError):
        x = None
    if x is None or not math.isfinite(x):
        raise MSLSError(f"{path}: row {i + 1} (line {i + 2}), column {column}: {v!r} is not a "
                        f"{'number' if x is None else 'finite number'}")
    return x


def is_true(v) -> bool:
    return str(v).strip().lower() in _TRUE


def read_part(folder_: Path, excludePanos: bool = True, subtask: str = "all") -> dict:
    """One city's database or query folder: keys, UTM, metadata (subtask rows and, with
    ``excludePanos``, panorama rows dropped)."""
    post = read_csv(folder_ / "postprocessed.csv", ("key", "easting", "northing"))
    raw = read_csv(folder_ / "raw.csv", ("key", "pano"))
    if len(raw) != len(post) or any(a["key"] != b["key"] for a, b in zip(raw, post)):
        raise MSLSError(f"{folder_ / 'raw.csv'} and postprocessed.csv do not list the same keys in the same order")
    pano = np.array([is_true(r["pano"]) for r in raw], bool)
    keep = ~pano if excludePanos else np.ones(len(raw), bool)
    sub = folder_ / "subtask_index.csv"
    if sub.is_file():
        rows = read_csv(sub, (subtask,))
        if len(rows) != len(post):
            raise MSLSError(f"{sub}: {len(rows)} rows, postprocessed.csv has {len(post)}")
        keep &= np.array([is_true(r[subtask]) for r in rows], bool)
    keys = [r["key"] for r in post]
    seen = set()
    for k in keys:
        if k in seen:
            raise MSLSError(f"{folder_ / 'postprocessed.csv'}: duplicate image key {k}")
        seen.add(k)
    utm = np.array([[coordinate(r, c, i, folder_ / "postprocessed.csv") for i, r in enumerate(post)]
                    for c in ("easting", "northing")], np.float64).reshape(2, -1)
    idx = np.flatnonzero(keep)
    return {"keys": [keys[i] for i in idx], "utm": utm[:, idx],
            "night": np.array([is_true(post[i].get("night", "")) for i in idx], bool), "pano": pano[idx],
            "view_direction": [post[i].get("view_direction", "") for i in idx],
            "captured_at": [raw[i].get("captured_at", "") for i in idx]}


def present_splits(root, cities=None) -> dict[str, list[str]]:
    """train / val -> the official cities (or those of ``cities``) found under
    ``<root>/train_val``; splits with none are left out."""
    base = Path(root).expanduser() / "train_val"
    if not base.is_dir():
        raise MSLSError(f"{base}: folder not found (expected the MSLS layout {base}/<city>/{{database,query}}/)")
    out = {}
    for split in ("train", "val"):
        found = [c for c in CITIES[split] if (base / c).is_dir() and (cities is None or c in cities)]
        if found:
            out[split] = found
    if not out:
        raise MSLSError(f"{base}: none of the MSLS train/val cities" + (f" {cities}" if cities else "") + " found")
    return out


class dbMSLS(dbBase):
    """``dbMSLS(root, whichSet="val", cities=None, posDistThr=25, subtask="all")`` (see
    the module docstring).  ``dbPath`` = ``qPath`` = ``<root>/``, names
    ``train_val/<city>/{database,query}/images/<key>.jpg``.  Extra per-image properties
    ``dbCity``/``qCity``, ``dbNight``/``qNight``, ``dbPano``/``qPano`` (bool),
    ``dbViewDirection``/``qViewDirection``, ``dbCapturedAt``/``qCapturedAt`` (as in
    the CSVs) and ``cities``.  ``excludePanos=False`` keeps the panorama images (the
    official evaluation leaves them out).  ``nonTrivPosDistSqThr`` 100 as the NetVLAD
    specs: trainWeakly's positives within 10 m and negatives beyond 25 m are also
    mapillary_sls's training thresholds (posDistThr 10, negDistThr 25)."""

    def __init__(self, root, whichSet: str = "val", cities=None, posDistThr=25, nonTrivPosDistSqThr=100,
                 excludePanos: bool = True, subtask: str = "all"):
        if whichSet not in ("train", "val"):
            raise MSLSError(f"dbMSLS: whichSet must be train or val (MSLS test has no positions), got {whichSet!r}")
        root = Path(root).expanduser()
        cities = CITIES[whichSet] if cities is None else ([cities] if isinstance(cities, str) else list(cities))
        self.name, self.whichSet, self.cities = f"msls_{whichSet}", whichSet, cities
        self.dbPath = self.qPath = folder(root)
        self.specFn = str(root)
        db, q, dropped = {}, {}, []
        for k, city in enumerate(cities):
            cdir = root / "train_val" / city
            if not cdir.is_dir():
                have = sorted(p.name for p in (root / "train_val").iterdir() if p.is_dir()) \
                    if (root / "train_val").is_dir() else []
                raise MSLSError(f"{cdir}: city folder not found; name the cities you have: "
                                f"msls:{root}:{whichSet}:{','.join(have) or '<city,city>'} on the command line, "
                                f"cities= in Python (present: {', '.join(have) or 'none'})")
            parts = {}
            for part in ("database", "query"):
                parts[part] = read_part(cdir / part, excludePanos, subtask)
                parts[part]["utm"] = parts[part]["utm"] + np.array([[k * CITY_OFFSET], [0.0]])
                parts[part]["fns"] = [f"train_val/{city}/{part}/images/{key}.jpg" for key in parts[part]["keys"]]
                parts[part]["city"] = [city] * len(parts[part]["keys"])
            if not parts["database"]["keys"] or not parts["query"]["keys"]:
                warnings.warn(f"{cdir}: no database or no query images left for subtask '{subtask}' "
                              f"(panoramas left out): city skipped", stacklevel=2)
                continue
            cp = closePosition(parts["database"]["utm"], posDistThr)
            has = np.array([p.size > 0 for p in cp.getPosIDs(parts["query"]["utm"])[0]], bool)
            if not has.all():
                dropped.append(f"{int((~has).sum())} of {has.size} in {cdir / 'query'}")
            parts["query"] = {f: (v[:, has] if f == "utm" else
                                  (v[has] if isinstance(v, np.ndarray) else [x for x, h in zip(v, has) if h]))
                              for f, v in parts["query"].items()}
            for out, part in ((db, parts["database"]), (q, parts["query"])):
                for f, v in part.items():
                    out.setdefault(f, []).append(v)
        if not db:
            raise MSLSError(f"{root / 'train_val'}: no database and query images in cities {', '.join(cities)} "
                            f"for subtask '{subtask}'")
        cat = lambda d, f: (np.concatenate(d[f], axis=-1) if isinstance(d[f][0], np.ndarray) else sum(d[f], []))
        self.dbImageFns, self.qImageFns = cat(db, "fns"), cat(q, "fns")
        self.utmDb, self.utmQ = cat(db, "utm").reshape(2, -1), cat(q, "utm").reshape(2, -1)
        self.dbCity, self.qCity = cat(db, "city"), cat(q, "city")
        self.dbNight, self.qNight = cat(db, "night"), cat(q, "night")
        self.dbPano, self.qPano = cat(db, "pano"), cat(q, "pano")
        self.dbViewDirection, self.qViewDirection = cat(db, "view_direction"), cat(q, "view_direction")
        self.dbCapturedAt, self.qCapturedAt = cat(db, "captured_at"), cat(q, "captured_at")
        self.numImages, self.numQueries = len(self.dbImageFns), len(self.qImageFns)
        self.posDistThr, self.nonTrivPosDistSqThr = posDistThr, nonTrivPosDistSqThr
        self._finish()
        if dropped:
            warnings.warn(f"dbMSLS: queries with no database image within {posDistThr} m left out, as "
                          f"mapillary_sls's evaluation does: {'; '.join(dropped)}", stacklevel=2)
