"""A MAT v5 writer that stores values as MATLAB's own ``save -v7`` does (for dbStruct specs).

MATLAB keeps a ``double`` array whose values are all integers in the smallest integer
storage type that holds them (the class stays ``double``): the released spec files store
``numImages`` 10000 as uint16, ``posDistThr`` 25 as uint8, 91464 and the YYYYMM time
stamps as int32.  Other writers (scipy, mat-io) store doubles as doubles, or change the
class when given integers; this one reproduces MATLAB's bytes: each variable zlib-compressed,
char as UTF-8, empty names as zero-length elements, data of up to 4 bytes in the small
element format, struct field names padded to the longest name + 1; text
that is not ASCII as UTF-16 (see ``_char``).

Values: ``str`` -> char row; ``float``/``int``/numeric ndarray (float64 or integer) ->
double (compacted); a list of ``str`` -> N x 1 cell of char rows (as ``dbImageFns``);
``dict`` -> 1 x 1 struct (field order kept).  Only what the specs hold is supported.
"""
from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import numpy as np

from .atomic_file import atomic_write

# MAT v5 data types and array classes
miINT8, miUINT8, miINT16, miUINT16, miINT32, miUINT32, miDOUBLE, miMATRIX, miCOMPRESSED, miUTF8, miUTF16 = \
    1, 2, 3, 4, 5, 6, 9, 14, 15, 16, 17
mxCELL, mxSTRUCT, mxCHAR, mxDOUBLE = 1, 2, 4, 6

# storage MATLAB picks for all-integer doubles, first that holds every value (the order
# of the signed types is an assumption: the released specs hold only non-negative values)
_COMPACT = ((miUINT8, "<u1", 0, 255), (miINT8, "<i1", -128, 127), (miUINT16, "<u2", 0, 65535),
            (miINT16, "<i2", -32768, 32767), (miINT32, "<i4", -2 ** 31, 2 ** 31 - 1))


class Mat5Error(ValueError):
    """A value this writer cannot store."""


def _element(dtype: int, data: bytes) -> bytes:
    """A data element: small format (tag and data in 8 bytes) when data has 1..4 bytes."""
    if 0 < len(data) <= 4:
        return struct.pack("<HH", dtype, len(data)) + data.ljust(4, b"\0")
    return struct.pack("<II", dtype, len(data)) + data + b"\0" * (-len(data) % 8)


def _matrix(cls: int, dims, body: bytes) -> bytes:
    """miMATRIX with array flags, dimensions, an empty name (fields and cells) and ``body``."""
    flags = struct.pack("<IIII", miUINT32, 8, cls, 0)  # array flags (class, no flags), nzmax
    inner = flags + _element(miINT32, struct.pack(f"<{len(dims)}i", *dims)) + struct.pack("<II", miINT8, 0) + body
    return struct.pack("<II", miMATRIX, len(inner)) + inner


def _double(a: np.ndarray) -> bytes:
    a = np.asarray(a, np.float64)
    if a.ndim < 2:
        a = a.reshape(1, -1) if a.ndim == 1 else a.reshape(1, 1)
    flat = a.ravel(order="F")
    data = _element(miDOUBLE, flat.astype("<f8").tobytes())
    if flat.size and np.all(np.isfinite(flat)) and np.all(flat == np.round(flat)) and not np.any(np.signbit(flat) & (flat == 0)):
        lo, hi = flat.min(), flat.max()
        for t, dt, tlo, thi in _COMPACT:
            if lo >= tlo and hi <= thi:
                data = _element(t, flat.astype(dt).tobytes())
                break
    return _matrix(mxDOUBLE, a.shape, data)


def _char(s: str) -> bytes:
    """A char row.  ASCII text as miUTF8 (one byte per character, as the released specs
    hold their names); any other text as miUTF16, dimensions = UTF-16 code units, which
    is MATLAB's own char width.  Multi-byte UTF-8 under a character count (this writer
    before, scipy's savemat) is read cut short by mat-io (so matnet's reader) and refused
    or garbled by MATLAB (R2020b+: "Cannot read file"); mat-io writes non-ASCII text as
    miUTF16 too (issue 24, case 15)."""
    if not s:
        return _matrix(mxCHAR, (0, 0), struct.pack("<II", miUTF8, 0))
    if s.isascii():
        return _matrix(mxCHAR, (1, len(s)), _element(miUTF8, s.encode("ascii")))
    data = s.encode("utf-16-le", errors="surrogatepass")
    return _matrix(mxCHAR, (1, len(data) // 2), _element(miUTF16, data))


def _value(v, where: str) -> bytes:
    if isinstance(v, str):
        return _char(v)
    if isinstance(v, dict):
        return _struct(v, where)
    if isinstance(v, (list, tuple)):
        for x in v:
            if not isinstance(x, str):
                raise Mat5Error(f"{where}: a cell may only hold char rows here, not {type(x).__name__}")
        return _matrix(mxCELL, (len(v), 1), b"".join(_char(x) for x in v))
    if isinstance(v, (bool, int, float, np.generic, np.ndarray)):
        a = np.asarray(v)
        if a.dtype.kind not in "biuf":
            raise Mat5Error(f"{where}: cannot store a {a.dtype} array")
        return _double(a)
    raise Mat5Error(f"{where}: cannot store a {type(v).__name__}")


def _struct(d: dict, where: str) -> bytes:
    names = list(d)
    for k in names:
        if not (isinstance(k, str) and k.isidentifier() and len(k) < 64):
            raise Mat5Error(f"{where}: {k!r} is not a MATLAB field name")
    width = max((len(k) for k in names), default=0) + 1
    body = _element(miINT32, struct.pack("<i", width))
    body += _element(miINT8, b"".join(k.encode("ascii").ljust(width, b"\0") for k in names))
    body += b"".join(_value(d[k], f"{where}.{k}") for k in names)
    return _matrix(mxSTRUCT, (1, 1), body)


def _named(name: str, payload: bytes) -> bytes:
    """Put the variable name into a top-level miMATRIX built with an empty name."""
    head = 8 + 16 + 16  # tag, flags element, 2-D dims element
    named = payload[8:head] + _element(miINT8, name.encode("ascii")) + payload[head + 8:]
    return struct.pack("<II", miMATRIX, len(named)) + named


def savemat5(path, mdict: dict, replace: bool = True) -> Path:
    """Write ``mdict`` (name -> value, see the module docstring) as MATLAB ``save -v7``
    would, atomically (a temporary file in the same folder, then renamed).  With
    ``replace=False`` an existing ``path`` is never replaced, even one created by another
    process while this one was writing: FileExistsError naming it (the temporary is then
    hard-linked to ``path``, which fails atomically when the name exists)."""
    path = Path(path)
    header = f"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: {time.strftime('%a %b %d %H:%M:%S %Y')}"
    out = [header.encode("ascii").ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"]
    for name, v in mdict.items():
        if not (isinstance(name, str) and name.isidentifier()):
            raise Mat5Error(f"{path}: {name!r} is not a MATLAB variable name")
        z = zlib.compress(_named(name, _value(v, name)))
        out.append(struct.pack("<II", miCOMPRESSED, len(z)) + z)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, replace=replace) as f:
        f.write(b"".join(out))
    return path
