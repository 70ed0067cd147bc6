"""A NetVLAD spec's images as a VPR-format folder (symlinks by default, or copies).

Writes ``<out>/images/<whichSet>/{database,queries}/<name>`` for every image of the spec
and ``<out>/images/<whichSet>/{database,queries}_images_paths.txt`` listing them in the
spec's order, so dbVPR, VPR-methods-evaluation and a re-import keep MATLAB's image ids,
and ``<out>/images/<whichSet>/matnet_export.json`` marking the export complete (written
last; dbVPR refuses a split whose export did not finish).
Files are the originals, unchanged: Tokyo 24/7 keeps its PNG database and its
native-size queries (the downloader's ``format_tokyo247.py`` re-encodes the database
and resizes queries to 480 px).  Labels filled per dataset (what the spec and its
names hold; latitude/longitude from the UTM position in the dataset's zone, 5 decimals as
the downloader writes them, see :mod:`matnet.datasets.utm_inverse`):

* Pitts30k/250k: UTM zone 17T, pano_id = the panorama number, tile =
  (pitch-1)*24 + (yaw-1), note = ``pitchP_yawY`` (as the downloader);
* Tokyo 24/7: zone 54S; database pano_id = the 22-character panorama id, tile =
  yaw/30 (as the downloader); queries note = their file number;
* TokyoTM: zone 54S, pano_id, lat/lon from the name, timestamp = the YYYYMM time
  stamp, tile = yaw/30, note = ``<yaw>_<pitch>``;
* a spec imported from a VPR folder (names ``@utm...@``): the labels of its names;
* any other spec: UTM only, note = the spec's name (``/`` and ``@`` as ``+``).

UTM is written with 2 decimals, so positions come back to within 0.005 m.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

from converters.atomic_file import GLOB, atomic_path, write_text
from converters.dbstruct import DbStructError

from ..images import resolve_image_path
from .spec import db_from_spec
from .utm_inverse import utm_to_latlon
from .vpr_format import EXPORT_MARKER, VPRFormatError, make_name, parse_name

_PITTS_NAME = re.compile(r"^(\d+)_pitch(\d+)_yaw(\d+)$")
_TOKYO247_DB = re.compile(r"^(.{22})_(\d+)_(\d+)$")
_TOKYO_TM = re.compile(r"^(.+)__(\d{6})_(-?[\d.]+)_(-?[\d.]+)_(\d+)_(\d+)$")


def labels(kind: str, fn: str, timestamp=None) -> dict:
    """VPR name fields (besides UTM) of spec image ``fn`` for dataset kind pitts /
    tokyo247 / tokyoTM / other."""
    stem = os.path.splitext(os.path.basename(fn))[0]
    if kind == "pitts" and (m := _PITTS_NAME.match(stem)):
        return dict(zone=17, letter="T", pano_id=m[1], tile=f"{(int(m[2]) - 1) * 24 + int(m[3]) - 1:02d}",
                    note=f"pitch{m[2]}_yaw{m[3]}")
    if kind == "tokyo247":
        if m := _TOKYO247_DB.match(stem):
            return dict(zone=54, letter="S", pano_id=m[1], tile=f"{int(m[3]) // 30:02d}")
        return dict(zone=54, letter="S", note=stem)
    if kind == "tokyoTM" and (m := _TOKYO_TM.match(stem)):
        return dict(zone=54, letter="S", pano_id=m[1], lat=m[3], lon=m[4],
                    timestamp=str(timestamp if timestamp is not None else m[2]),
                    tile=f"{int(m[5]) // 30:02d}", note=f"{m[5]}_{m[6]}")
    try:  # a spec imported from a VPR folder: its names hold the labels, keep them
        f = parse_name(fn)
    except VPRFormatError:
        f = None
    if f is not None:
        f = {k: v for k, v in f.items() if k not in ("utm_east", "utm_north")}
        f["zone"] = int(f["zone"]) if f["zone"] else None
        return f
    return dict(note=os.path.splitext(fn)[0].replace("/", "+").replace("@", "+"))


def dataset_kind(db) -> str:
    name = type(db).__name__
    return {"dbPitts": "pitts", "dbTokyo247": "tokyo247", "dbTokyoTimeMachine": "tokyoTM"}.get(name, "other")


def export_vpr(specFn, root, outDir, copy: bool = False, force: bool = False, log=print) -> Path:
    """Export spec ``specFn`` whose images are under ``root`` (as ``db_from_spec``
    reads it), or the dataset ``specFn`` (a dbBase; ``root`` unused), to ``outDir`` (see
    the module docstring).  Every image is checked before anything is written; an
    existing non-empty split folder is an error unless ``force``."""
    db = specFn if hasattr(specFn, "dbImageFns") else db_from_spec(specFn, root)
    specFn = getattr(db, "specFn", None) or db.name
    kind = dataset_kind(db)
    split = Path(outDir).expanduser() / "images" / db.whichSet
    plan = {}
    for part, path, fns, utm, ts in (("database", db.dbPath, db.dbImageFns, db.utmDb, getattr(db, "dbTimeStamp", None)),
                                     ("queries", db.qPath, db.qImageFns, db.utmQ, getattr(db, "qTimeStamp", None))):
        missing, rows = [], []
        zone = {"pitts": 17, "tokyo247": 54, "tokyoTM": 54}.get(kind)
        lat, lon = utm_to_latlon(utm[0], utm[1], zone) if zone else (None, None)
        for i, fn in enumerate(fns):
            try:
                src = resolve_image_path(Path(path) / fn)
            except FileNotFoundError:
                missing.append(str(Path(path) / fn))
                continue
            f = labels(kind, fn, None if ts is None else int(ts[i]))
            if zone and "lat" not in f:
                f.update(lat=f"{lat[i]:0=9.5f}", lon=f"{lon[i]:0=10.5f}")
            rows.append((src, make_name(utm[0, i], utm[1, i], src.suffix, **f)))
        if missing:
            raise DbStructError(f"{specFn}: {len(missing)} of {len(fns)} {part} images are missing under {path}, "
                                f"first: {missing[0]}")
        dups = [n for n, c in Counter(n for _, n in rows).items() if c > 1]
        if dups:
            dup = dups[0]
            raise DbStructError(f"{specFn}: two {part} images would both be named {dup}")
        target = split / part
        if target.is_dir() and any(target.iterdir()) and not force:
            raise DbStructError(f"{target}: folder exists and is not empty (pass --force to write into it)")
        plan[part] = rows
    marker = split / EXPORT_MARKER
    split.mkdir(parents=True, exist_ok=True)
    write_marker(marker, specFn, {p: len(r) for p, r in plan.items()}, complete=False)
    for part, rows in plan.items():
        target = split / part
        target.mkdir(parents=True, exist_ok=True)
        remove_temporaries(target, log)
        for src, name in rows:
            dst = target / name
            with atomic_path(dst, sync=copy) as tmp:
                if copy:
                    shutil.copyfile(src, tmp)
                else:
                    os.symlink(src.resolve(), tmp)
        listing = split / f"{part}_images_paths.txt"
        write_text(listing, "".join(name + "\n" for _, name in rows))
        log(f"{target}: {len(rows)} images ({'copied' if copy else 'linked'}), order in {listing.name}")
    write_marker(marker, specFn, {p: len(r) for p, r in plan.items()}, complete=True)  # last: the export is whole
    return split


def remove_temporaries(folder: Path, log=print) -> None:
    """Remove the temporaries (``*.matnet-tmp``) a killed export left in ``folder``, saying
    how many (issue 24, case 19); exports into one folder do not run concurrently (a
    non-empty folder needs --force)."""
    gone = list(folder.glob(GLOB))
    for g in gone:
        g.unlink(missing_ok=True)
    if gone:
        log(f"{folder}: removed {len(gone)} temporaries a killed export left")


def write_marker(path: Path, specFn, counts: dict, complete: bool) -> None:
    """``<out>/images/<split>/matnet_export.json``: the spec, the image counts and whether
    the export finished, replaced atomically.  Written with ``complete: false`` before the
    first image and rewritten with ``true`` after the last listing, so a killed export is
    recognised by :func:`check_export_complete` (dbVPR, ``dataset import``) instead of
    being read as a smaller dataset (issue 24, case 8: 4,776 of 15,000 queries)."""
    write_text(path, json.dumps({"spec": str(specFn), "images": counts, "complete": complete}) + "\n")
