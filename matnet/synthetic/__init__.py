"""Synthetic place-recognition data and a small base network for the offline demo."""
from .basenet import save_tiny_net, tiny_net_structs
from .db import dbSynthetic
from .places import make_places, make_split

__all__ = ["dbSynthetic", "make_places", "make_split", "save_tiny_net", "tiny_net_structs"]
