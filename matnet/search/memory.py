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


QUERY_BLOCK = 1024  # queries per distance block in a streamed search
WORKING_SET = 24 << 20  # what a search needs besides its sized buffers: torch's and BLAS's scratch,
                        # the reader's staging block, the top-k's temporaries, allocator slack
STAGE_BYTES = 1 << 20  # a streamed read's staging block (dtype conversion, cropToDim, NaN check)


def search_overhead(D: int, nQ: int, k: int = 100) -> int:
    """Bytes a streamed search needs whatever its chunk size: the queries (twice: the
    caller's and the searched copy), the running top-k (ids and distances, old and new
    while merging) and :data:`WORKING_SET`."""
    return WORKING_SET + 2 * 4 * nQ * D + 4 * 12 * nQ * max(1, k)


def row_bytes(D: int, nQ: int) -> int:
    """Bytes per database row of a streamed chunk: the two chunk buffers (one read ahead
    while the other is searched), a column of the distance block (QUERY_BLOCK queries)
    and the row's squared norm."""
    return 4 * 2 * D + 4 * min(nQ, QUERY_BLOCK) + 4


def smallest_cap(D: int, nQ: int, k: int = 100) -> int:
    """The smallest memory cap a streamed search of ``nQ`` queries of ``D`` values runs in
    (one database row per chunk), rounded up to a MiB."""
    need = search_overhead(D, nQ, k) + row_bytes(D, nQ)
    return -(-need // 2**20) * 2**20


def chunk_rows(D: int, nQ: int, memoryCap: int, k: int = 100) -> int:
    """Database rows per chunk of a streamed search so that its peak resident memory stays
    within ``memoryCap`` bytes: :func:`search_overhead` plus :func:`row_bytes` per row.
    A cap below :func:`smallest_cap` is refused (MemoryError) naming the smallest that works."""
    free = int(memoryCap) - search_overhead(D, nQ, k)
    per_row = row_bytes(D, nQ)
    if free < per_row:
        raise MemoryError(f"memoryCap {memoryCap / 2**20:.1f} MiB is too small for {nQ} queries of D={D} "
                          f"(k={k}): the queries, the running top-k and the search's working set need "
                          f"{search_overhead(D, nQ, k) / 2**20:.1f} MiB before any database row, so the search "
                          f"needs at least {smallest_cap(D, nQ, k) / 2**20:.0f} MiB (the smallest cap that works)")
    return int(free // per_row)


def rank_block(memoryCap: int) -> int:
    """Entries (queries x negatives x D) testCoreRank compares at once within a streamed
    search's cap: its rows, their differences and squares, and the read's copies (about
    32 bytes per entry) in a quarter of the cap."""
    return max(1, int(memoryCap) // 128)


def in_memory_bytes(nbytes: int, D: int, nQ: int = 0, k: int = 100, crop: int = 0) -> int:
    """Peak bytes of searching a database file of ``nbytes`` (rows of ``D`` values) loaded
    whole: the file, read_bin's NaN check (a byte per value), the cropped copy and its
    temporaries, a distance block, the queries and top-k, the working set."""
    n = nbytes // (4 * D) if D else 0
    cropped = 2 * 4 * n * crop if crop else 0
    return nbytes + nbytes // 4 + cropped + min(4 * SEARCH_BLOCK, 4 * n * max(1, nQ)) + search_overhead(crop or D, nQ, k)


def streaming_cap(nbytes: int, memoryCap=None, need: int | None = None) -> int | None:
    """The cap within which a database of ``nbytes`` is streamed, or None when it is loaded:
    streamed when loading it would need more than ``memoryCap`` (bytes or a string such as
    '1GB'; ``need``: the peak of the in-memory search, default ``nbytes``), or, with no cap
    given, when the file is larger than half the available memory (then within
    :func:`default_memory_cap`)."""
    if memoryCap is None:
        return None if nbytes <= available_memory() // 2 else default_memory_cap()
    cap = parse_bytes(memoryCap)
    return None if (nbytes if need is None else need) <= cap else cap
