"""dbTiny: a tiny Tokyo Time Machine subset for quick experiments (datasets/dbTiny.m)."""
from __future__ import annotations

import numpy as np

from .close_position import sqdist
from .db_base import dbBase
from .tokyo_tm import dbTokyoTimeMachine


class dbTiny(dbBase):
    """``dbTiny(whichSet)``: name ``tokyoTinyTM_<whichSet>``.  Repeatedly picks a random
    database image and the images within squared distance < 5 of it; when there are
    at least 24 (MATLAB tests > 12 then indexes 13..24, failing for 13..23) the first 6
    become queries and the 13th..24th database images, until >= 120 database images.
    Random draws from numpy seeded 43 (not MATLAB's stream).  No time stamps; the
    non-trivial positives are all within nonTrivPosDistSqThr (no > 1 condition)."""

    def __init__(self, whichSet="train", specDir=None, dbRoot=None, source=None):
        src = dbTokyoTimeMachine(whichSet, specDir=specDir, dbRoot=dbRoot) if source is None else source
        for k in ("whichSet", "dbPath", "qPath", "posDistThr", "nonTrivPosDistSqThr", "specFn"):
            setattr(self, k, getattr(src, k, None))
        self.name = f"tokyoTinyTM_{whichSet}"
        rng = np.random.default_rng(43)
        dbIms, qIms = [], []
        while len(dbIms) < 120:
            r = rng.integers(src.numImages)
            these = np.flatnonzero(sqdist(src.utmDb, src.utmDb[:, r:r + 1]) < 5)
            if these.size >= 24:
                qIms.extend(these[:6])
                dbIms.extend(these[12:24])
        qIms, dbIms = np.asarray(qIms), np.asarray(dbIms)
        self.utmQ = src.utmDb[:, qIms]
        self.utmDb = src.utmDb[:, dbIms]
        self.qImageFns = [src.dbImageFns[i] for i in qIms]
        self.dbImageFns = [src.dbImageFns[i] for i in dbIms]
        self.numQueries, self.numImages = len(qIms), len(dbIms)
        self._finish()

    def _nontrivial(self, ids, dSq, iQuery, query_from_db):
        return dSq <= self.nonTrivPosDistSqThr
