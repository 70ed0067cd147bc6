"""Memory sizes: parsing a cap given by the user and the default cap of a streamed search."""
from __future__ import annotations

import os
import re

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
