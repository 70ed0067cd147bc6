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
from contextlib import contextmanager


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
