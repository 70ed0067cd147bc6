"""Small datasets written in the real formats for the tests: VPR folders (@utm@ names),
MSLS city folders (CSVs) and NetVLAD specs (dbStruct) with tiny JPEG images."""
from __future__ import annotations

import csv
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from converters.matfile import savemat
from matnet.datasets import dbBase


def tiny_jpeg(path: Path, seed: int, size=(12, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path, quality=90)


def vpr_name(east, north, **f) -> str:
    """A name as the downloader writes it (UTM %010.2f, 14 fields)."""
    order = ["zone", "letter", "lat", "lon", "pano_id", "tile", "heading", "pitch", "roll", "height",
             "timestamp", "note"]
    return f"@{east:010.2f}@{north:010.2f}@" + "@".join(str(f.get(k, "")) for k in order) + "@.jpg"


def make_vpr(root: Path, split: str, db_utm, q_utm, db_extra=None, q_extra=None, subdirs=False) -> tuple[list, list]:
    """Write ``root/images/<split>/{database,queries}``; returns the relative names written
    (in writing order, not sorted)."""
    out = []
    for part, utm, extra in (("database", db_utm, db_extra), ("queries", q_utm, q_extra)):
        names = []
        for i, (e, n) in enumerate(np.asarray(utm, float).T):
            f = (extra[i] if extra else {}) or {}
            name = vpr_name(e, n, **f)
            rel = f"{i % 3:02d}/{name}" if subdirs else name
            tiny_jpeg(root / "images" / split / part / rel, seed=zlib.crc32(f"{split}/{part}/{i}".encode()))
            names.append(rel)
        out.append(names)
    return out[0], out[1]


MSLS_RAW = ["", "key", "lon", "lat", "ca", "captured_at", "pano"]
MSLS_POST = ["", "key", "easting", "northing", "night", "control_panel", "view_direction", "unique_cluster"]


def write_csv(path: Path, header, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def make_msls_part(folder: Path, keys, utm, pano=None, night=None, subtask_all=None, images=True) -> None:
    """One ``<city>/{database,query}`` folder: raw.csv, postprocessed.csv,
    subtask_index.csv (when ``subtask_all`` is given) and images/<key>.jpg."""
    n = len(keys)
    pano = [False] * n if pano is None else pano
    night = [False] * n if night is None else night
    write_csv(folder / "raw.csv", MSLS_RAW,
              [[i, k, 12.5 + i * 1e-4, 55.6, 90.0, f"2016-06-{1 + i % 28:02d}", str(bool(p))]
               for i, (k, p) in enumerate(zip(keys, pano))])
    write_csv(folder / "postprocessed.csv", MSLS_POST,
              [[i, k, f"{e:.6f}", f"{no:.6f}", str(bool(ni)), "False", "Forward" if i % 2 else "Sideways", i]
               for i, (k, (e, no), ni) in enumerate(zip(keys, np.asarray(utm, float).T, night))])
    if subtask_all is not None:
        write_csv(folder / "subtask_index.csv", ["", "all", "s2w"], [[i, str(bool(a)), "False"]
                                                                      for i, a in enumerate(subtask_all)])
    if images:
        for i, k in enumerate(keys):
            tiny_jpeg(folder / "images" / f"{k}.jpg", seed=zlib.crc32(f"{folder.name}/{k}".encode()))


class SpecDb(dbBase):
    def __init__(self, name, specDir):
        self.name = name
        self.dbLoad(specDir)


def make_db(tmp_path, utmDb, utmQ, name="toy", posDistThr=25, nonTriv=100):
    utmDb, utmQ = np.asarray(utmDb, float), np.asarray(utmQ, float)
    s = {"whichSet": "test",
         "dbImageFns": [f"db/{i:05d}.jpg" for i in range(utmDb.shape[1])],
         "utmDb": utmDb,
         "qImageFns": [f"q/{i:05d}.jpg" for i in range(utmQ.shape[1])],
         "utmQ": utmQ,
         "numImages": np.uint16(utmDb.shape[1]), "numQueries": np.uint16(utmQ.shape[1]),
         "posDistThr": np.uint8(posDistThr), "posDistSqThr": np.uint16(posDistThr ** 2),
         "nonTrivPosDistSqThr": np.uint8(nonTriv)}
    savemat(tmp_path / f"{name}.mat", {"dbStruct": s}, format="5")
    return SpecDb(name, tmp_path)


def street_positions(seed: int, nDb: int, nQ: int, extent: float):
    """``(rng, utmDb, utmQ)``: ``nDb`` database positions uniform in an ``extent`` metres
    square and ``nQ`` queries near distinct database images (8 m noise), from
    ``default_rng(seed)`` (returned for the features that follow)."""
    rng = np.random.default_rng(seed)
    utmDb = rng.uniform(0, extent, (2, nDb))
    utmQ = utmDb[:, rng.choice(nDb, nQ, replace=False)] + rng.normal(0, 8, (2, nQ))
    return rng, utmDb, utmQ
