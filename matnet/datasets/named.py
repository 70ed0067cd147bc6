"""A dataset from the string a user types on the command line: MATLAB's dataset names
(``pitts30k_train``, ``pitts250k_val``, ``tokyoTM_train``, ``tokyoTinyTM_val``,
``tokyo247``; specs and images where localPaths says), a dbStruct spec file
(``path/to/x.mat``, images under ``dbRoot``), or a folder format
(``vpr:ROOT:SPLIT``, ``msls:ROOT:SPLIT``)."""
from __future__ import annotations

import re

_PITTS = re.compile(r"^pitts(30k|250k)_(train|val|test)$")
_TM = re.compile(r"^tokyo(Tiny)?TM_(train|val)$")


def dataset_by_name(name: str, dbRoot=None, specDir=None):
    """The dbBase ``name`` designates (see the module docstring); ``dbRoot`` and
    ``specDir`` override localPaths' folders."""
    from .local_paths import localPaths
    from .pitts import dbPitts
    from .spec import db_from_spec
    from .tiny import dbTiny
    from .tokyo247 import dbTokyo247
    from .tokyo_tm import dbTokyoTimeMachine
    if name.startswith(("vpr:", "msls:")):
        kind, _, rest = name.partition(":")
        root, _, split = rest.rpartition(":")
        if not root or not split:
            raise ValueError(f"dataset {name!r}: expected {kind}:ROOT:SPLIT (e.g. {kind}:/data/{kind}:train)")
        if kind == "vpr":
            from .vpr import dbVPR
            return dbVPR(root, split)
        from .msls import dbMSLS
        return dbMSLS(root, split)
    if name.endswith(".mat"):
        if dbRoot is None:
            stem = name.rsplit("/", 1)[-1][:-4]
            key = ("dsetRootPitts" if _PITTS.match(stem) else "dsetRootTokyo247" if stem == "tokyo247" else
                   "dsetRootTokyoTM" if _TM.match(stem) else None)
            if key is None:
                raise ValueError(f"{name}: give the folder its image names are relative to (dbRoot)")
            dbRoot = localPaths()[key]
        return db_from_spec(name, dbRoot)
    if m := _PITTS.match(name):
        return dbPitts(m[1], m[2], specDir=specDir, dbRoot=dbRoot)
    if m := _TM.match(name):
        cls = dbTiny if m[1] else dbTokyoTimeMachine
        return cls(m[2], specDir=specDir, dbRoot=dbRoot)
    if name == "tokyo247":
        return dbTokyo247(specDir=specDir, dbRoot=dbRoot)
    raise ValueError(f"unknown dataset {name!r}: expected pitts30k_<set>, pitts250k_<set> (set train/val/test), "
                     f"tokyoTM_<train|val>, tokyoTinyTM_<train|val>, tokyo247, a spec file .mat, "
                     f"vpr:ROOT:SPLIT or msls:ROOT:SPLIT")
