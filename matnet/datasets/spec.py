"""Any dbStruct spec file as a dataset, and any dataset as a dbStruct."""
from __future__ import annotations

import re
from pathlib import Path

from converters.dbstruct import DbStructError, dbstruct_fields

from .db_base import dbBase
from .local_paths import folder


class dbSpec(dbBase):
    """``dbSpec(specFn, dbRoot)``: the spec ``specFn`` (any name) with every image,
    database and query, at ``dbRoot + name`` (as the specs ``matnet dataset import``
    writes, whose names are relative to the dataset root).  No dataset-specific search
    rules: see :func:`db_from_spec` for the released specs."""

    def __init__(self, specFn, dbRoot):
        specFn = Path(specFn).expanduser()
        self.name = specFn.stem
        self.dbPath = self.qPath = folder(dbRoot)
        self.dbLoad(specFn.parent)


_PITTS = re.compile(r"^pitts(30k|250k)_(train|val|test)$")
_TOKYO_TM = re.compile(r"^tokyoTM_(train|val)$")


def db_from_spec(specFn, dbRoot) -> dbBase:
    """The dataset of a spec file with its own rules, chosen by the file name as the
    released specs are named: ``pitts30k_*``/``pitts250k_*`` -> dbPitts (images under
    ``<dbRoot>/images/``, queries ``<dbRoot>/queries/``), ``tokyo247`` -> dbTokyo247
    (panorama NMS; ``images/``, ``query/``), ``tokyoTM_*`` -> dbTokyoTimeMachine (time
    filter; ``images/``); any other name -> :class:`dbSpec` (names relative to dbRoot)."""
    from .pitts import dbPitts
    from .tokyo247 import dbTokyo247
    from .tokyo_tm import dbTokyoTimeMachine
    specFn = Path(specFn).expanduser()
    if not specFn.is_file():
        raise DbStructError(f"{specFn}: dataset specification not found")
    stem, specDir = specFn.stem, specFn.parent
    if m := _PITTS.match(stem):
        return dbPitts(m[1], m[2], specDir=specDir, dbRoot=dbRoot)
    if stem == "tokyo247":
        return dbTokyo247(specDir=specDir, dbRoot=dbRoot)
    if m := _TOKYO_TM.match(stem):
        return dbTokyoTimeMachine(m[1], specDir=specDir, dbRoot=dbRoot)
    return dbSpec(specFn, dbRoot)


def dbstruct_of(db) -> dict:
    """The ``dbStruct`` of a dataset (names, UTM, time stamps when it has them, counts,
    thresholds) in the released files' field order and classes."""
    return dbstruct_fields(db.whichSet, db.dbImageFns, db.utmDb, db.qImageFns, db.utmQ,
                           posDistThr=db.posDistThr, nonTrivPosDistSqThr=db.nonTrivPosDistSqThr,
                           dbTimeStamp=getattr(db, "dbTimeStamp", None), qTimeStamp=getattr(db, "qTimeStamp", None))
