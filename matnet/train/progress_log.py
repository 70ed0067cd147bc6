"""The training log ``<outPrefix><sessionID>.log``: what trainWeakly did, readable while
it runs or after the terminal is gone.  One line every few batches (mean batch loss
since the previous line, batches per second, time left in the epoch) and one per
event (start, learning rate, saves, cache refreshes, test results); each line is
flushed as written and a resumed run appends.  Under torch.distributed only rank 0
writes.  (MATLAB's trainWeakly prints to the console only.)"""
from __future__ import annotations

import time

from .. import distributed

EVERY = 10  # batches between progress lines


class ProgressLog:
    def __init__(self, fn):
        self.fn = str(fn)
        self.f = open(self.fn, "a") if distributed.is_rank0() else None
        self._reset(time.perf_counter())

    def _reset(self, t):
        self.t, self.losses = t, []

    def write(self, text: str) -> None:
        if self.f is not None:
            self.f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
            self.f.flush()

    def epoch_start(self) -> None:
        self._reset(time.perf_counter())

    def batch(self, iEpoch: int, iBatch: int, nBatches: int, loss: float) -> None:
        """After batch ``iBatch`` (1-based) of ``nBatches``: a line every EVERY batches and after the last."""
        self.losses.append(loss)
        if iBatch % EVERY and iBatch != nBatches:
            return
        now = time.perf_counter()
        rate = len(self.losses) / max(now - self.t, 1e-9)
        left = (nBatches - iBatch) / rate
        self.write(f"epoch {iEpoch} batch {iBatch}/{nBatches} loss {sum(self.losses) / len(self.losses):.4f} "
                   f"{rate:.3g} batch/s, epoch ends in {left / 60:.1f} min")
        self._reset(now)

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
