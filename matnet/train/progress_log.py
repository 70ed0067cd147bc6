"""The training log ``<outPrefix><sessionID>.log``: what trainWeakly did, readable while
it runs or after the terminal is gone.  One line every few batches (mean batch loss
since the previous line, batches per second, time left in the epoch) and one per
event (start, learning rate, saves, cache refreshes, test results); each line is
flushed as written and a resumed run appends.  Under torch.distributed only rank 0
writes.  (MATLAB's trainWeakly prints to the console only.)

On a terminal, each epoch also shows a progress bar (tqdm: batches done, the running
mean loss, batches per second, time left in the epoch) on stderr; it is off when
stderr is not a terminal (a log file, a pipe, CI) and on every rank but 0, where
the log file's lines are the record."""
from __future__ import annotations

import sys
import time

from .. import distributed

EVERY = 10  # batches between progress lines


class ProgressLog:
    def __init__(self, fn, console=None):
        """``console``: the stream of the progress bar (default stderr; shown only when it
        is a terminal)."""
        self.fn = str(fn)
        self.f = open(self.fn, "a") if distributed.is_rank0() else None
        self.console = console
        self.bar, self.epoch_losses = None, []
        self._reset(time.perf_counter())

    def _reset(self, t):
        self.t, self.losses = t, []

    def write(self, text: str) -> None:
        if self.f is not None:
            self.f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
            self.f.flush()

    def epoch_start(self, iEpoch: int | None = None, nEpoch: int | None = None, startBatch: int = 1,
                    nBatches: int | None = None, desc: str = "") -> None:
        """A new epoch (batches ``startBatch..nBatches``): the log's counters, and the
        console's progress bar when there is a terminal."""
        self._reset(time.perf_counter())
        self.close_bar()
        self.epoch_losses = []
        console = sys.stderr if self.console is None else self.console
        isatty = getattr(console, "isatty", None)
        if nBatches is None or not distributed.is_rank0() or not (isatty and isatty()):
            return
        from tqdm import tqdm
        self.bar = tqdm(total=nBatches, initial=startBatch - 1, file=console, unit="batch", leave=False,
                        desc=f"{desc}epoch {iEpoch}" + (f"/{nEpoch}" if nEpoch else ""), dynamic_ncols=True)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def batch(self, iEpoch: int, iBatch: int, nBatches: int, loss: float) -> None:
        """After batch ``iBatch`` (1-based) of ``nBatches``: the bar moves on (mean loss of
        the epoch so far); a log line every EVERY batches and after the last."""
        self.losses.append(loss)
        self.epoch_losses.append(loss)
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {sum(self.epoch_losses) / len(self.epoch_losses):.4f}", refresh=False)
            self.bar.update(1)
        if iBatch % EVERY and iBatch != nBatches:
            return
        now = time.perf_counter()
        rate = len(self.losses) / max(now - self.t, 1e-9)
        left = (nBatches - iBatch) / rate
        self.write(f"epoch {iEpoch} batch {iBatch}/{nBatches} loss {sum(self.losses) / len(self.losses):.4f} "
                   f"{rate:.3g} batch/s, epoch ends in {left / 60:.1f} min")
        self._reset(now)

    def close(self) -> None:
        self.close_bar()
        if self.f is not None:
            self.f.close()
            self.f = None
