"""Synthetic place-recognition data and a small base network for the offline demo."""
from .basenet import saveTinyNet, tinyNetStructs
from .db import dbSynthetic
from .places import makePlaces, makeSplit

__all__ = ["dbSynthetic", "makePlaces", "makeSplit", "saveTinyNet", "tinyNetStructs"]
