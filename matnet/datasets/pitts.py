"""dbPitts: Pittsburgh 30k / 250k (datasets/dbPitts.m)."""
from __future__ import annotations

from .db_base import dbBase
from .local_paths import folder, localPaths


class dbPitts(dbBase):
    """``dbPitts(fullSize, whichSet)``: ``fullSize`` False/'30k' -> pitts30k_<whichSet>,
    True/'250k' -> pitts250k_<whichSet>; ``whichSet`` in train/val/test.  (MATLAB takes
    any char as true, so '30k' silently loads 250k; here '30k' means 30k and other
    strings are rejected.)  Images at ``<dbRoot>/images/``, queries at ``<dbRoot>/queries/``;
    ``dbRoot`` defaults to localPaths' dsetRootPitts."""

    def __init__(self, fullSize=False, whichSet="test", specDir=None, dbRoot=None):
        if whichSet not in ("train", "val", "test"):
            raise ValueError(f"dbPitts: whichSet must be train, val or test, got {whichSet!r}")
        if isinstance(fullSize, str):
            if fullSize not in ("30k", "250k"):
                raise ValueError(f"dbPitts: fullSize must be a bool, '30k' or '250k', got {fullSize!r}")
            fullSize = fullSize == "250k"
        self.name = f"pitts{'250k' if fullSize else '30k'}_{whichSet}"
        root = localPaths()["dsetRootPitts"] if dbRoot is None else dbRoot
        self.dbPath = folder(root, "images")
        self.qPath = folder(root, "queries")
        self.dbLoad(specDir)
