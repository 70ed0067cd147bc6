"""An exclusive lock held on a lock file, between processes and between threads.

POSIX ``flock`` on a file of its own; the holder deletes the file before releasing,
so none is left behind (a process killed while holding it leaves an empty file,
which the next holder reuses and deletes).  A waiter that wakes up on a file that
was meanwhile deleted or replaced retries on the current one, so two holders can
never coexist.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager


@contextmanager
def file_lock(path):
    """Hold the exclusive lock ``path`` for the duration of the ``with`` block."""
    path = os.fspath(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
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
        yield
    finally:
        try:
            os.unlink(path)
        finally:
            os.close(fd)
