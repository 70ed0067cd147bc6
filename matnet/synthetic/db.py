"""dbSynthetic: the synthetic streets as a NetVLAD dataset (a dbBase)."""
from __future__ import annotations

from pathlib import Path

from ..datasets.db_base import dbBase


class dbSynthetic(dbBase):
    """``dbSynthetic(whichSet, root)``: spec ``<root>/datasets/synth_<whichSet>.mat``,
    images under ``<root>/images/`` (see :func:`matnet.synthetic.make_places`)."""

    def __init__(self, whichSet: str, root):
        root = Path(root)
        self.name = f"synth_{whichSet}"
        self.dbPath = self.qPath = str(root / "images") + "/"
        self.dbLoad(specDir=root / "datasets")
