"""trainWeakly's curves in TensorBoard (``tensorboard=DIR``, ``matnet train --tensorboard
DIR``).  Not in MATLAB: its trainWeakly plots with MATLAB figures (doDraw) only.

Scalars, step = epoch: ``train/loss`` (mean batch loss of the epoch), ``train/learning_rate``
and, on test epochs, ``val/recall@N`` and ``train/recall@N`` for every N of recallNs,
``val/rankloss`` and ``train/rankloss``; step = batch over the whole run (``(epoch - 1) *
batches + batch``): ``batch/loss``.  Written by rank 0 only under torch.distributed.
Needs the optional ``tensorboard`` package (``pip install 'matnet[tensorboard]'``); without
it, asking for TensorBoard fails before any compute with an error naming the extra.
"""
from __future__ import annotations

import numpy as np

from .. import distributed

EXTRA = "tensorboard"


class MissingExtraError(ImportError, ValueError):
    """An optional dependency that is not installed; the message names the extra."""


def check_tensorboard(logdir) -> None:
    """Fail now (before any compute) when ``logdir`` is set and tensorboard is missing."""
    if logdir:
        _summary_writer_class(logdir)


def _summary_writer_class(logdir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise MissingExtraError(f"tensorboard={logdir!r} (--tensorboard) needs the 'tensorboard' package, which is "
                                f"not installed ({e}); install the optional extra: pip install "
                                f"'matnet[{EXTRA}]' (or pip install tensorboard)") from None
    return SummaryWriter


class TensorBoardLog:
    """Scalars of one training run under ``logdir`` (None: does nothing; so on ranks > 0)."""

    def __init__(self, logdir, recallNs):
        self.recallNs = [int(n) for n in recallNs]
        self.w = None
        if logdir and distributed.is_rank0():
            self.w = _summary_writer_class(logdir)(log_dir=str(logdir))

    def batch(self, step: int, loss: float) -> None:
        if self.w is not None:
            self.w.add_scalar("batch/loss", float(loss), step)

    def epoch(self, iEpoch: int, lr: float, losses, val=None, train=None) -> None:
        """``losses``: the epoch's batch losses; ``val`` / ``train``: (recall per N, rankloss) on test epochs."""
        if self.w is None:
            return
        losses = np.asarray(losses, np.float64).ravel()
        if losses.size:
            self.w.add_scalar("train/loss", float(losses.mean()), iEpoch)
        self.w.add_scalar("train/learning_rate", float(lr), iEpoch)
        for part, res in (("val", val), ("train", train)):
            if res is None:
                continue
            recall, rankloss = res
            for n, r in zip(self.recallNs, np.asarray(recall, np.float64).ravel()):
                self.w.add_scalar(f"{part}/recall@{n}", float(r), iEpoch)
            if rankloss is not None and np.isfinite(rankloss):
                self.w.add_scalar(f"{part}/rankloss", float(rankloss), iEpoch)
        self.w.flush()

    def close(self) -> None:
        if self.w is not None:
            self.w.close()
            self.w = None
