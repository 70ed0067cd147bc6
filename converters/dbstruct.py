"""Reader for NetVLAD dataset specifications (``<specDir>/<name>.mat`` holding ``dbStruct``).

Returns a dict with MATLAB's field names and normalised values: file name lists of
str, UTM coordinates as float64 2 x N, time stamps as int64 1-D, counts and
thresholds as Python numbers.  (The released files hold these as MATLAB doubles whose
data are stored compactly as uint8/uint16/int32; readers that report the storage type,
e.g. scipy without ``mat_dtype``, show integers.  Integer-class values are cast too, so
no integer arithmetic saturates.)  A file whose counts disagree with its lists, without
database images, with NaN/Inf positions, or missing/non-numeric thresholds raises
:class:`DbStructError` naming it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .matfile import loadmat

_NUMERIC = ("numImages", "numQueries", "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr")


class DbStructError(ValueError):
    """A dataset specification file that cannot be used."""


def _strings(v, field, path) -> list[str]:
    if isinstance(v, str):
        return [v]
    arr = np.asarray(v, dtype=object).ravel(order="F")
    out = []
    for x in arr:
        while isinstance(x, np.ndarray) and x.dtype == object and x.size == 1:
            x = x.reshape(-1)[0]
        if isinstance(x, np.ndarray):
            x = str(x.reshape(-1)[0]) if x.size else ""
        if not isinstance(x, str):
            raise DbStructError(f"{path}: dbStruct.{field} holds a {type(x).__name__}, not file names")
        out.append(x)
    return out


def _utm(v, n, field, path) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DbStructError(f"{path}: dbStruct.{field} is not numeric ({e})") from e
    if a.size == 0 and n == 0:
        return np.zeros((2, 0))
    if a.ndim != 2 or a.shape[0] != 2 or a.shape[1] != n:
        raise DbStructError(f"{path}: dbStruct.{field} has shape {a.shape}, expected 2 x {n}")
    return a


def load_dbstruct(path) -> dict:
    """``dbStruct`` of a spec file as a dict (see module docstring); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise DbStructError(f"{path}: dataset specification not found (download it and set "
                            f"specDir / dsetSpecDir)")
    m = loadmat(path)
    if "dbStruct" not in m:
        raise DbStructError(f"{path}: no variable 'dbStruct' (has {sorted(m)})")
    s = m["dbStruct"]
    if isinstance(s, (list, np.ndarray)) and len(s) == 1:
        s = s[0]
    if not isinstance(s, dict):
        raise DbStructError(f"{path}: dbStruct is a {type(s).__name__}, not a struct")
    for f in ("dbImageFns", "utmDb", "posDistThr", "nonTrivPosDistSqThr"):
        if f not in s:
            raise DbStructError(f"{path}: dbStruct has no field '{f}'")
    out = dict(s)
    ws = s.get("whichSet", "")
    out["whichSet"] = _strings(ws, "whichSet", path)[0] if np.size(ws) else ""
    out["dbImageFns"] = _strings(s["dbImageFns"], "dbImageFns", path)
    out["qImageFns"] = _strings(s["qImageFns"], "qImageFns", path) if np.size(s.get("qImageFns", [])) else []
    out["utmDb"] = _utm(s["utmDb"], len(out["dbImageFns"]), "utmDb", path)
    out["utmQ"] = _utm(s.get("utmQ", np.zeros((2, 0))), len(out["qImageFns"]), "utmQ", path)
    for f, n in (("dbTimeStamp", len(out["dbImageFns"])), ("qTimeStamp", len(out["qImageFns"]))):
        if f in s:
            try:
                t = np.asarray(s[f], dtype=np.int64).ravel()
            except (TypeError, ValueError) as e:
                raise DbStructError(f"{path}: dbStruct.{f} is not numeric ({e})") from e
            if t.size != n:
                raise DbStructError(f"{path}: dbStruct.{f} has {t.size} entries, expected {n}")
            out[f] = t
    for f in _NUMERIC:
        if f in s and np.size(s[f]):
            out[f] = _number(s[f], f, path)
    _check(out, path)
    return out


def dbstruct_fields(whichSet: str, dbImageFns, utmDb, qImageFns, utmQ, posDistThr=25,
                    nonTrivPosDistSqThr=100, dbTimeStamp=None, qTimeStamp=None) -> dict:
    """A ``dbStruct`` in the released files' field order and classes: names as N x 1
    cells, UTM 2 x N double, time stamps 1 x N double (only when given), counts and
    thresholds 1 x 1 double (``posDistSqThr = posDistThr^2``)."""
    utmDb = np.asarray(utmDb, np.float64).reshape(2, -1)
    utmQ = np.asarray(utmQ, np.float64).reshape(2, -1)
    if utmDb.shape[1] != len(dbImageFns) or utmQ.shape[1] != len(qImageFns):
        raise DbStructError(f"{len(dbImageFns)} database / {len(qImageFns)} query names but "
                            f"{utmDb.shape[1]} / {utmQ.shape[1]} positions")
    s = {"whichSet": str(whichSet), "dbImageFns": [str(f) for f in dbImageFns], "utmDb": utmDb}
    if dbTimeStamp is not None:
        s["dbTimeStamp"] = np.asarray(dbTimeStamp, np.float64).reshape(1, -1)
    s.update({"qImageFns": [str(f) for f in qImageFns], "utmQ": utmQ})
    if qTimeStamp is not None:
        s["qTimeStamp"] = np.asarray(qTimeStamp, np.float64).reshape(1, -1)
    s.update({"numImages": float(len(dbImageFns)), "numQueries": float(len(qImageFns)),
              "posDistThr": float(posDistThr), "posDistSqThr": float(posDistThr) ** 2,
              "nonTrivPosDistSqThr": float(nonTrivPosDistSqThr)})
    return s


def save_dbstruct(path, dbStruct: dict, force: bool = False) -> Path:
    """Write ``dbStruct`` (see :func:`dbstruct_fields`) to ``path`` as MATLAB's ``save``
    writes the released specs (v5, doubles stored compactly); an existing file is an
    error unless ``force``, also one created by a concurrent run while this one wrote."""
    from converters.mat5 import savemat5
    path = Path(path)
    msg = f"{path}: the spec file already exists (pass --force / force=True to replace it)"
    if path.exists() and not force:
        raise DbStructError(msg)
    try:  # without force, never replace a file another run created meanwhile (issue 24, case 6)
        return savemat5(path, {"dbStruct": dbStruct}, replace=force)
    except FileExistsError:
        raise DbStructError(msg + "; another run wrote it meanwhile") from None


def _number(v, field, path):
    try:
        a = np.asarray(v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        a = np.zeros(0)
    if a.size != 1:
        raise DbStructError(f"{path}: dbStruct.{field} is not a number ({v!r:.60})")
    x = float(a[0])
    return int(x) if x.is_integer() else x


def _check(out: dict, path: Path) -> None:
    """Counts agree with the lists, positions finite, thresholds usable (MATLAB's
    dbBase recomputes the counts silently; a disagreement means a damaged or hand-edited
    file)."""
    if not out["dbImageFns"]:
        raise DbStructError(f"{path}: dbStruct.dbImageFns is empty: no database images")
    for count, lst, what in (("numImages", "dbImageFns", "database images"),
                             ("numQueries", "qImageFns", "queries")):
        if count in out and out[count] != len(out[lst]):
            raise DbStructError(f"{path}: dbStruct.{count} is {out[count]} but dbStruct.{lst} lists "
                                f"{len(out[lst])} {what}")
    for f in ("utmDb", "utmQ"):
        bad = ~np.isfinite(out[f]).all(axis=0)
        if bad.any():
            raise DbStructError(f"{path}: dbStruct.{f} has NaN/Inf positions ({int(bad.sum())} images, "
                                f"first 0-based index {int(np.flatnonzero(bad)[0])})")
    if not (np.isfinite(out["posDistThr"]) and out["posDistThr"] > 0):
        raise DbStructError(f"{path}: dbStruct.posDistThr is {out['posDistThr']}, must be a positive distance")
    if not (np.isfinite(out["nonTrivPosDistSqThr"]) and out["nonTrivPosDistSqThr"] >= 0):
        raise DbStructError(f"{path}: dbStruct.nonTrivPosDistSqThr is {out['nonTrivPosDistSqThr']}, "
                            f"must be a squared distance >= 0")
