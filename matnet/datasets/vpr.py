"""dbVPR: a dataset in the VPR folder format as a NetVLAD dbBase."""
from __future__ import annotations

import types
import warnings
from pathlib import Path

import numpy as np

from .db_base import dbBase
from .local_paths import folder
from .tokyo247 import first_per_panorama
from .tokyo_tm import dbTokyoTimeMachine
from .vpr_format import VPRFormatError, check_export_complete, list_images, month_stamp, parse_name

DATABASE, QUERIES = "database", "queries"


def split_folder(root, whichSet: str, part: str) -> Path:
    return Path(root).expanduser() / "images" / whichSet / part


def count_without_positive(db) -> int:
    """Number of queries with no database image within posDistThr."""
    if not db.numQueries:
        return 0
    return int(sum(p.size == 0 for p in db.cp.getPosIDs(db.utmQ)[0]))


class dbVPR(dbBase):
    """``dbVPR(root, whichSet="test", posDistThr=25)``: database
    ``<root>/images/<whichSet>/database``, queries ``.../queries`` (see
    :mod:`matnet.datasets.vpr_format` for the names and the image order).  ``dbPath`` =
    ``qPath`` = ``<root>/``, so ``dbImageFns`` are ``images/<whichSet>/database/...``
    as an imported spec has them.  UTM from the names (to the 0.01 m they keep); extra
    properties ``dbPanoId``/``qPanoId`` and, when every name has at least a month,
    ``dbTimeStamp``/``qTimeStamp`` (YYYYMM, as TokyoTM).  ``nonTrivPosDistSqThr`` 100
    as the NetVLAD specs.  ``panoramaNMS=True`` applies Tokyo 24/7's search
    post-processing with panoramas from the pano_id field; ``timeFilter=True``
    TokyoTM's (results with the query's time stamp dropped, non-trivial positives of
    another time stamp).  Queries with no database image within posDistThr are kept
    (MATLAB's recallAtN counts them as not recalled) and reported in a warning."""

    def __init__(self, root, whichSet: str = "test", posDistThr=25, nonTrivPosDistSqThr=100,
                 panoramaNMS: bool = False, timeFilter: bool = False):
        root = Path(root).expanduser()
        if not (root / "images").is_dir():
            raise VPRFormatError(f"{root / 'images'}: folder not found (expected "
                                 f"{root}/images/{whichSet}/{{database,queries}})")
        self.name = f"{root.name}_{whichSet}"
        self.whichSet = whichSet
        self.dbPath = self.qPath = folder(root)
        self.specFn = str(root)
        prefix = f"images/{whichSet}/"
        lists = {}
        check_export_complete(split_folder(root, whichSet, DATABASE).parent)
        for part in (DATABASE, QUERIES):
            sub = split_folder(root, whichSet, part)
            if not sub.parent.is_dir():
                raise VPRFormatError(f"{sub.parent}: split folder not found")
            rels = list_images(sub)
            lists[part] = ([prefix + f"{part}/" + r for r in rels], [parse_name(sub / r) for r in rels])
        self.dbImageFns, dbFields = lists[DATABASE]
        self.qImageFns, qFields = lists[QUERIES]
        self.numImages, self.numQueries = len(self.dbImageFns), len(self.qImageFns)
        utm = lambda fs: np.array([[float(f["utm_east"]) for f in fs], [float(f["utm_north"]) for f in fs]],
                                  np.float64).reshape(2, -1)
        self.utmDb, self.utmQ = utm(dbFields), utm(qFields)
        self.dbPanoId = [f["pano_id"] for f in dbFields]
        self.qPanoId = [f["pano_id"] for f in qFields]
        stamps = [[month_stamp(f["timestamp"]) for f in fs] for fs in (dbFields, qFields)]
        if all(t is not None for ts in stamps for t in ts):
            self.dbTimeStamp, self.qTimeStamp = (np.asarray(ts, np.int64) for ts in stamps)
        self.posDistThr = posDistThr
        self.nonTrivPosDistSqThr = nonTrivPosDistSqThr
        self._finish()
        self.timeFilter, self.panoramaNMS = timeFilter, panoramaNMS
        if timeFilter:
            if not hasattr(self, "dbTimeStamp"):
                bad = next(fn for fn, t in zip(self.dbImageFns + self.qImageFns, stamps[0] + stamps[1]) if t is None)
                raise VPRFormatError(f"{root / bad}: timeFilter needs a time stamp (at least YYYYMM) in every name")
            self.nnSearchPostprocess = types.MethodType(dbTokyoTimeMachine.nnSearchPostprocess, self)
        if panoramaNMS:
            if not all(self.dbPanoId):
                bad = self.dbImageFns[self.dbPanoId.index("")]
                raise VPRFormatError(f"{root / bad}: panoramaNMS needs a pano_id in every database name")
            _, self.dbPanorama = np.unique(np.asarray(self.dbPanoId), return_inverse=True)
            self.cutoutsPerPanorama = int(np.bincount(self.dbPanorama).max())
            self.nnSearchPostprocess = types.MethodType(dbVPR._panorama_postprocess, self)
        missing = count_without_positive(self)
        if missing:
            warnings.warn(f"{split_folder(root, whichSet, QUERIES)}: {missing} of {self.numQueries} queries "
                          f"have no database image within {posDistThr} m (kept: they count as not recalled, "
                          f"as in MATLAB's recallAtN)", stacklevel=2)

    def _panorama_postprocess(self, searcher, iQuery, nTop):
        """Tokyo 24/7's NMS with panoramas from the pano_id field (``cutoutsPerPanorama``
        x nTop results searched)."""
        return first_per_panorama(searcher, iQuery, nTop, self.cutoutsPerPanorama, lambda ids: self.dbPanorama[ids])

    def _nontrivial(self, ids, dSq, iQuery, query_from_db):
        if self.timeFilter:
            return dbTokyoTimeMachine._nontrivial(self, ids, dSq, iQuery, query_from_db)
        return super()._nontrivial(ids, dSq, iQuery, query_from_db)
