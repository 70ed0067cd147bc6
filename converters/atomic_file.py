"""Every file matnet writes appears whole or not at all: it is written under a temporary
name in the target's folder, flushed to disk (fsync) and renamed over the target; on any
error (disk full, an interrupt) the temporary is removed and the target left as it was.

Temporary names are ``<name>.<pid>-<token>.matnet-tmp``: one pattern for every writer,
so "no temporaries left" is the glob ``*.matnet-tmp`` and :func:`remove_stale_temporaries`
finds what a killed run left of a given output.  A bottom module: imports nothing of
matnet.
"""
from __future__ import annotations

import glob
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SUFFIX = ".matnet-tmp"
GLOB = "*" + SUFFIX  # every temporary in a folder


def temporary_name(path) -> Path:
    """A temporary name next to ``path`` that no other process or call uses."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}")


def temporary_regex(name_regex: str) -> str:
    """A regular expression matching the temporaries of the file names ``name_regex`` matches."""
    return rf"(?:{name_regex})\.\d+-[0-9a-f]+{re.escape(SUFFIX)}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(tmp: Path) -> None:
    tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(path, sync: bool = True, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for a writer that takes a file name (h5py,
    torch.save, onnx, savefig); when the block ends without error the file written there
    is fsynced and renamed to ``path``.  On an error the temporary is removed (the target
    is untouched) and the error raised again.  The writer creates the file, so it gets the
    umask's permissions.  ``sync`` False: no fsync (a symbolic link, whose target is not
    ours to flush).  ``replace`` False: never replace an existing ``path``, even one
    another process created while this one wrote: the temporary is hard-linked to
    ``path`` (atomic, fails when the name exists: FileExistsError naming it)."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        if sync:
            _fsync(tmp)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"{path}: the file already exists") from None
            _remove(tmp)
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def atomic_write(path, mode: str = "wb", replace: bool = True, **open_kw):
    """Yield the open temporary file (``open(tmp, mode, **open_kw)``) of ``path``; when
    the block ends without error it is flushed, fsynced, closed and renamed to ``path``;
    on an error it is removed and the target left as it was.  ``replace`` as
    :func:`atomic_path`'s."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_write: mode must write a new file ('w', 'wb', ...), got {mode!r}")
    with atomic_path(path, sync=False, replace=replace) as tmp:  # synced here, through the open file
        with open(tmp, mode, **open_kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_bytes(path, data: bytes) -> None:
    """``path``'s content, atomically."""
    with atomic_write(path) as f:
        f.write(data)


def write_text(path, text: str) -> None:
    """``path``'s text (UTF-8), atomically."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def remove_stale_temporaries(path) -> list[Path]:
    """Remove the temporaries of ``path`` (``<name>.<pid>-<token>.matnet-tmp``) that killed
    runs left; returns them.  Call it only while no other process writes ``path`` (e.g.
    under the run's lock): a live writer's temporary is removed too."""
    path = Path(path)
    pattern = re.compile(temporary_regex(re.escape(path.name)))
    gone = []
    for tmp in path.parent.glob(f"{glob.escape(path.name)}.*{SUFFIX}"):
        if pattern.fullmatch(tmp.name):
            _remove(tmp)
            gone.append(tmp)
    return gone
