"""Memory sizing of a search: the distance block computed at once, parsing a cap given by the
user, the default cap of a streamed search, whether a database file is streamed, and the
rows of a streamed chunk within a cap."""
from __future__ import annotations

import os
import re

SEARCH_BLOCK = 1 << 26  # distance-matrix entries computed at once (256 MiB of float32)

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


def parse_bytes(v) -> int:
    """Bytes from an int or a string such as '1GB', '512MiB', '2g' (k/m/g/t alone: powers of 1024)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if v <= 0:
            raise ValueError(f"memory size must be positive, got {v}")
        return int(v)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(v))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read memory size {v!r} (examples: 1GB, 512MiB, 2000000000)")
    n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise ValueError(f"memory size must be positive, got {v!r}")
    return n


def available_memory() -> int:
    """Bytes of memory available to new allocations (MemAvailable; else physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_memory_cap() -> int:
    """A streamed search's cap when none is given: a quarter of the available memory."""
    return max(1 << 28, available_memory() // 4)


def streaming_cap(nbytes: int, memoryCap=None) -> int | None:
    """The cap within which a database of ``nbytes`` is streamed, or None when it is loaded:
    streamed when larger than ``memoryCap`` (bytes or a string such as '1GB'), or, with no
    cap given, than half the available memory (then within :func:`default_memory_cap`)."""
    if nbytes <= (parse_bytes(memoryCap) if memoryCap is not None else available_memory() // 2):
        return None
    return parse_bytes(memoryCap) if memoryCap is not None else default_memory_cap()


QUERY_BLOCK = 1024  # queries per distance block in a streamed search


def chunk_rows(D: int, nQ: int, memoryCap: int) -> int:
    """Database rows per chunk so that two chunk buffers (one read ahead while the other
    is searched), a block of distances (QUERY_BLOCK queries; with top-k's temporaries) and
    the queries fit in ``memoryCap`` bytes."""
    free = 0.9 * memoryCap - 4 * nQ * D  # a tenth left for the allocator and top-k's own buffers
    per_row = 4 * 2 * D + 4 * min(nQ, QUERY_BLOCK)  # two rows of the buffers, float32 distances
    if free < per_row:
        raise MemoryError(f"memoryCap {memoryCap / 2**20:.0f} MiB is too small for {nQ} queries of "
                          f"D={D} (needs at least {(4 * nQ * D + per_row) / 2**20:.1f} MiB)")
    return int(free // per_row)
