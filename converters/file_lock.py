"""An exclusive lock held on a lock file, between processes and between threads.

POSIX ``flock`` on a file of its own; the holder writes who it is into the file
(``pid <pid> on <host>``) and deletes the file before releasing, so none is left behind
(a process killed while holding it leaves a file, which the next holder reuses and
deletes).  A waiter that wakes up on a file that was meanwhile deleted or replaced
retries on the current one, so two holders can never coexist.  A bottom module: imports
nothing of matnet (trainWeakly's checkpoint0 files and serialAllFeats' outputs use it).
"""
from __future__ import annotations

import fcntl
import os
import socket
import sys
from contextlib import contextmanager

from .atomic_file import remove_stale_temporaries


def lock_holder(path) -> str:
    """Who holds lock file ``path``, as its holder wrote it ('' when unknown)."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


@contextmanager
def file_lock(path, on_wait=None):
    """Hold the exclusive lock ``path`` for the duration of the ``with`` block.  When
    another process or thread holds it, ``on_wait(holder)`` is called once (``holder``
    as :func:`lock_holder` gives it) and the call waits."""
    path = os.fspath(path)
    told = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None and not told:
                    told = True
                    on_wait(lock_holder(path))
                fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the file we locked was deleted by the previous holder: retry
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    except OSError:
        pass
    try:
        yield
    finally:
        try:
            os.unlink(path)
        finally:
            os.close(fd)


def report_stale(path, gone) -> None:
    """Say on stderr which temporaries of ``path`` a killed run had left (and were removed)."""
    if gone:
        print(f"{path}: removed {len(gone)} temporar{'y' if len(gone) == 1 else 'ies'} a killed run left "
              f"({', '.join(g.name for g in gone[:3])}{', ...' if len(gone) > 3 else ''})",
              file=sys.stderr, flush=True)


@contextmanager
def output_lock(path, lock=None, sidecars=()):
    """Hold ``lock`` (default ``<path>.lock``) while writing ``path`` (a second writer
    waits, told who holds it), and first remove the temporaries
    (``<name>.<pid>-<token>.matnet-tmp``) that killed runs of ``path`` and of its
    ``sidecars`` (files written under the same lock) left, saying so: a killed convert,
    export or merge left up to ~600 MB that no later run removed (issue 24, case 19).
    Yields the removed paths."""
    path = os.fspath(path)
    lock = f"{path}.lock" if lock is None else os.fspath(lock)
    with file_lock(lock, on_wait=lambda holder: print(
            f"{path}: another run is writing it ({holder or 'holder unknown'}; lock {lock}): waiting",
            file=sys.stderr, flush=True)):
        gone = [g for p in (path, *sidecars) for g in remove_stale_temporaries(p)]
        report_stale(path, gone)
        yield gone
