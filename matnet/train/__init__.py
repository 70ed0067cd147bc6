"""Weakly supervised NetVLAD training (trainWeakly.m) and its pieces."""
from .opts import TrainWeaklyOpts

__all__ = ["TrainWeaklyOpts"]
