"""Synthetic place-recognition data and a small base network for the offline demo."""
from .basenet import saveTinyNet, tinyNetStructs
from .places import makePlaces, makeSplit

__all__ = ["makePlaces", "makeSplit", "saveTinyNet", "tinyNetStructs"]
