"""A dataset from the text a user types: the one parser every command uses.

Forms (:data:`DATASET_FORMS`):

- a MATLAB dataset name: ``pitts30k_<set>``, ``pitts250k_<set>`` (set train, val,
  test), ``tokyoTM_<train|val>``, ``tokyoTinyTM_<train|val>``, ``tokyo247``; the spec
  under ``spec_dir`` (default localPaths' dsetSpecDir), images under ``root`` (default
  localPaths' dsetRootPitts, dsetRootTokyo247, dsetRootTokyoTM), as MATLAB's db classes;
- ``spec:FILE.mat``: a dbStruct spec file with the rules its name gives
  (:func:`~matnet.datasets.spec.db_from_spec`); images under ``root`` (for a released
  spec's name, localPaths' folder of that dataset when ``root`` is not given);
- ``vpr:ROOT[:split]``: a VPR-format folder (split default ``test``);
- ``msls:ROOT[:split][:city,city]``: Mapillary SLS (split ``train`` or ``val``, default
  ``val``; cities default the split's official ones), e.g. ``msls:/data/msls:val:cph,sf``
  or ``msls:/data/msls::cph``.

A bare ``FILE.mat`` (the older spelling of ``spec:FILE.mat``) still works, with a
deprecation message.  This module imports nothing heavy until a dataset is built.
"""
from __future__ import annotations

import re
import sys

DATASET_FORMS = ("a MATLAB name (pitts30k_<set>, pitts250k_<set> with set train/val/test, tokyoTM_<train|val>, "
                 "tokyoTinyTM_<train|val>, tokyo247), spec:FILE.mat, vpr:ROOT[:split], "
                 "msls:ROOT[:split][:city,city]")
MATLAB_NAMES = tuple(f"pitts{s}_{w}" for s in ("30k", "250k") for w in ("train", "val", "test")) + \
    ("tokyoTM_train", "tokyoTM_val", "tokyoTinyTM_train", "tokyoTinyTM_val", "tokyo247")

_PITTS = re.compile(r"^pitts(30k|250k)_(train|val|test)$")
_TM = re.compile(r"^tokyo(Tiny)?TM_(train|val)$")


def takes_root(text: str) -> bool:
    """Whether ``root`` applies to the dataset ``text`` (MATLAB names and spec files;
    ``vpr:``/``msls:`` carry their root in the text)."""
    return not str(text).startswith(("vpr:", "msls:"))


def _split_tail(rest: str, most: int) -> tuple[str, list[str]]:
    """``ROOT:a:b`` -> (ROOT, [a, b]): up to ``most`` trailing ``:``-fields without a path
    separator (so a root may itself hold a ``:``)."""
    parts = rest.split(":")
    tail = []
    while len(parts) > 1 and len(tail) < most and not any(c in parts[-1] for c in "/\\"):
        tail.insert(0, parts.pop())
    return ":".join(parts), tail


def _released_root(stem: str, what: str, text: str) -> str:
    from .local_paths import localPaths
    key = ("dsetRootPitts" if _PITTS.match(stem) else "dsetRootTokyo247" if stem == "tokyo247" else
           "dsetRootTokyoTM" if _TM.match(stem) else None)
    if key is None:
        raise ValueError(f"{what} {text}: give --root, the folder the spec's image names are relative to")
    return localPaths()[key]


def parse_dataset(text: str, root=None, spec_dir=None, panoramaNMS: bool = False, timeFilter: bool = False,
                  what: str = "--dataset"):
    """The dataset (a dbBase) ``text`` names, in one of :data:`DATASET_FORMS` (see the
    module docstring).  ``root``: image root of a MATLAB name or spec file;
    ``spec_dir``: spec folder of a MATLAB name; ``panoramaNMS`` / ``timeFilter``:
    dbVPR's search rules (vpr: only).  ``what`` names the option in errors."""
    text = str(text)
    kind, sep, rest = text.partition(":")
    if (panoramaNMS or timeFilter) and kind != "vpr":
        raise ValueError(f"{what} {text}: --panorama-nms and --time-filter apply to vpr: datasets only")
    if sep and kind in ("vpr", "msls"):
        if root is not None:
            raise ValueError(f"{what} {text}: --root applies to MATLAB names and spec: files; "
                             f"a {kind}: dataset carries its root in the text")
        path, tail = _split_tail(rest, 1 if kind == "vpr" else 2)
        if not path or kind == "vpr" and tail and not tail[0]:
            raise ValueError(f"{what} {text!r}: expected {DATASET_FORMS}")
        if kind == "vpr":
            from .vpr import dbVPR
            return dbVPR(path, tail[0] if tail else "test", panoramaNMS=panoramaNMS, timeFilter=timeFilter)
        from .msls import dbMSLS
        split = tail[0] if tail and tail[0] else "val"
        cities = [c for c in tail[1].split(",") if c] if len(tail) > 1 else None
        if cities == []:
            raise ValueError(f"{what} {text!r}: no city after the split (msls:ROOT:split:city,city)")
        return dbMSLS(path, split, cities=cities)
    if (sep and kind == "spec") or (not sep and text.endswith(".mat")):
        if not sep:
            print(f"matnet: deprecated: {what} {text}: write spec:{text} (a bare .mat file name goes in the "
                  f"next release)", file=sys.stderr)
            rest = text
        if not rest:
            raise ValueError(f"{what} {text!r}: expected {DATASET_FORMS}")
        from pathlib import Path

        from .spec import db_from_spec
        spec = Path(rest).expanduser()
        return db_from_spec(spec, root if root is not None else _released_root(spec.stem, what, text))
    if m := _PITTS.match(text):
        from .pitts import dbPitts
        return dbPitts(m[1], m[2], specDir=spec_dir, dbRoot=root)
    if m := _TM.match(text):
        from .tiny import dbTiny
        from .tokyo_tm import dbTokyoTimeMachine
        return (dbTiny if m[1] else dbTokyoTimeMachine)(m[2], specDir=spec_dir, dbRoot=root)
    if text == "tokyo247":
        from .tokyo247 import dbTokyo247
        return dbTokyo247(specDir=spec_dir, dbRoot=root)
    raise ValueError(f"{what} {text!r}: unknown dataset; expected {DATASET_FORMS}")
