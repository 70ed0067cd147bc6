"""MAT-file reading and writing (v5/v7 and v7.3/HDF5) as plain Python values.

``loadmat`` returns MATLAB values with MATLAB shapes (nothing squeezed: a 1x1x3
mean image stays ``(1, 1, 3)``, a scalar stays ``(1, 1)``):

* numeric / logical arrays -> ``numpy.ndarray`` in MATLAB's shape and class;
* ``char`` row -> ``str``; char matrix -> ``numpy`` array of row strings;
* ``struct`` 1x1 -> ``dict`` (field order kept); struct arrays -> ``list`` of dicts
  when 0-d/1-d (1xN, Nx1, empty), else an object ndarray of dicts;
* ``cell`` -> ``list`` when 1xN, Nx1 or empty, else an object ndarray (MATLAB shape);
* classdef objects -> :class:`MatObject` (class name + properties; properties MATLAB
  left at their class defaults come from the file's defaults table); objects saved
  through ``saveobj`` -> ``MatObject(..., saveobj=True)`` whose ``props`` is the saved
  struct; object arrays -> object ndarrays of ``MatObject``; handle objects referenced
  twice are the same ``MatObject``; function handles -> ``MatObject('function_handle',
  {...})``; tables, categoricals, datetimes -> mat-io's pandas/numpy values; sparse
  -> ``scipy.sparse.coo_matrix``.

``savemat`` takes the same values back (dicts -> 1x1 structs, lists -> 1xN cells,
``MatObject`` -> classdef objects, with ``saveobj=True`` written as MATLAB writes a
``saveobj`` result) and writes atomically: a temporary file in the same folder,
renamed over ``path`` only once complete.

Objects live in the file's MCOS ``FileWrapper__`` block (version 4 from MATLAB 2024,
2 or 3 before; mat-io reads all three).  Where mat-io cannot decode it, it only warns
and returns raw metadata; ``loadmat`` raises :class:`MatFileError` instead, with the
block's version and mat-io's reason.

The decoding of MATLAB's object subsystem is mat-io's (``import matio``); this module
is the only place that knows about it.
"""
from __future__ import annotations

import importlib.metadata
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import issparse

import h5py
import matio
from matio.utils.matheaders import read_mat_header
from matio.utils.matclass import (EmptyMatStruct, MatlabContainerMap, MatlabEnumerationArray,
                                  MatlabFunction, MatlabObject, MatlabOpaque, MatlabOpaqueArray,
                                  MatlabOpaqueProperty, MatWriteWarning)

from .atomic_file import atomic_path

__all__ = ["MatObject", "MatFileError", "loadmat", "savemat", "whosmat", "filewrapper_version"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MATIO_VERSION = importlib.metadata.version("mat-io")


class MatFileError(ValueError):
    """A MAT file that cannot be read or written; the message names the file and the problem."""


def layers_error(where, failures: list[tuple[str, str]], n: int) -> MatFileError:
    """One error for every layer of a network file that cannot be built: ``failures``
    holds (which layer, why) pairs, all listed, the first on the first line."""
    lines = [f"{which}: {why}" for which, why in failures]
    return MatFileError(f"{where}: {len(failures)} of {n} layers cannot be built: " + "\n  ".join(lines))


@dataclass(eq=False)
class MatObject:
    """A MATLAB classdef object: ``class_name`` and its properties (``props``, a dict).

    ``saveobj=True`` marks an object MATLAB stored through its ``saveobj`` method
    (NetVLAD's ``layerVLAD``/``layerVLADv2``): ``props`` is then the saved struct,
    and ``savemat`` writes it back the same way so MATLAB calls ``loadobj`` on it.
    """
    class_name: str
    props: dict = field(default_factory=dict)
    saveobj: bool = False

    def __repr__(self):
        return f"MatObject({self.class_name!r}, props=[{', '.join(self.props)}]" + \
            (", saveobj=True)" if self.saveobj else ")")


# ----------------------------------------------------------------------------- reading

def _is_vector_shape(shape) -> bool:
    return len(shape) <= 2 and (len(shape) < 2 or min(shape) <= 1)


class _Decoder:
    """mat-io values -> plain values; keeps handle identity (same object -> same MatObject)."""

    def __init__(self):
        self.seen: dict[int, MatObject] = {}

    def __call__(self, v):
        if isinstance(v, MatlabOpaque):
            return self.opaque(v)
        if isinstance(v, MatlabOpaqueArray):
            return self.object_array(v)
        if isinstance(v, MatlabEnumerationArray):
            return self.object_array(v)
        if isinstance(v, MatlabFunction):
            fh = np.asarray(v)
            inner = self.struct(fh["function_handle"].reshape(-1)[0]) if "function_handle" in \
                (fh.dtype.names or ()) else self.struct_array(fh)
            if not isinstance(inner, dict):
                inner = {"value": inner}
            return MatObject("function_handle", {k: x[0] if isinstance(x, list) and len(x) == 1 else x
                                                 for k, x in inner.items()})
        if isinstance(v, MatlabObject):  # old-style (@folder) MATLAB class
            props = self.struct_array(np.asarray(v))
            return MatObject(str(v.classname), props if isinstance(props, dict) else {"value": props})
        if isinstance(v, EmptyMatStruct):
            return {} if v.size == 1 else ([] if _is_vector_shape(v.shape) else
                                          np.array([{} for _ in range(v.size)], dtype=object)
                                          .reshape(v.shape, order="F"))
        if isinstance(v, MatlabOpaqueProperty):
            return np.asarray(v)
        if isinstance(v, MatlabContainerMap):
            return {k: self(x) for k, x in v.items()}
        if issparse(v):
            return v
        if isinstance(v, np.ndarray):
            return self.array(v)
        return v

    def opaque(self, o: MatlabOpaque):
        key = id(o)
        if key in self.seen:
            return self.seen[key]
        if isinstance(o.properties, tuple):  # an empty object array (0x0, 1x0, ...)
            return np.empty(o.properties, dtype=object)
        obj = MatObject(str(o.classname))
        self.seen[key] = obj
        props = o.properties
        if props is None:  # a deleted handle
            return obj
        if not isinstance(props, dict):  # e.g. string/datetime converted by mat-io
            self.seen.pop(key)
            return props
        saved = self(props["any"]) if "any" in props else None
        if isinstance(saved, dict):
            # MATLAB stores a saveobj result as the property 'any'
            obj.saveobj = True
            obj.props = saved
        else:
            obj.props = {k: self(x) for k, x in props.items()}
        return obj

    def object_array(self, a):
        out = np.empty(a.shape, dtype=object)
        for idx, x in np.ndenumerate(np.asarray(a, dtype=object)):
            out[idx] = self(x)
        return out

    def struct(self, rec) -> dict:
        return {k: self(rec[k]) for k in rec.dtype.names}

    def struct_array(self, a: np.ndarray):
        if a.size == 1:
            return self.struct(a.reshape(-1)[0])
        items = [self.struct(r) for r in a.reshape(-1, order="F")]
        if _is_vector_shape(a.shape):
            return items
        out = np.empty(a.size, dtype=object)
        out[:] = items
        return out.reshape(a.shape, order="F")

    def array(self, a: np.ndarray):
        kind = a.dtype.kind
        if a.dtype.names:
            return self.struct_array(a)
        if kind == "O":
            if _is_vector_shape(a.shape):
                return [self(x) for x in a.reshape(-1, order="F")]
            out = np.empty(a.shape, dtype=object)
            for idx, x in np.ndenumerate(a):
                out[idx] = self(x)
            return out
        if kind in "US":
            if a.size == 0:
                return ""
            if a.size == 1:
                return str(a.reshape(-1)[0])
            return np.asarray(a)
        if kind == "T":  # MATLAB string arrays (StringDType)
            return str(a.reshape(-1)[0]) if a.size == 1 else a.astype(object)
        return np.asarray(a)


def _check_file(path: Path) -> str:
    """The MAT version of ``path`` ('5' or '7.3'), or MatFileError."""
    if not path.is_file():
        raise MatFileError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(128)
        f.seek(512)  # v7.3: the HDF5 file starts after a 512-byte user block
        hdf = f.read(8)
    if len(head) < 128:
        raise MatFileError(f"{path}: not a MAT file (only {len(head)} bytes; a MAT file has a 128-byte header)")
    if not head.startswith(b"MATLAB"):
        raise MatFileError(f"{path}: not a MAT file (no 'MATLAB' header text)")
    version = head[124:128]
    if version in (b"\x00\x02IM", b"\x02\x00MI"):
        if hdf != _HDF5_SIGNATURE:
            raise MatFileError(f"{path}: MAT v7.3 header but no HDF5 data after it (truncated or corrupt)")
        return "7.3"
    if version in (b"\x00\x01IM", b"\x01\x00MI"):
        return "5"
    raise MatFileError(f"{path}: unknown MAT-file version bytes {version!r}")


# mat-io's warnings when it drops MATLAB objects (it then returns their raw metadata instead)
_LOST_OBJECTS = ("Failed to parse subsystem data", "Failed to load object instance")


def filewrapper_version(path) -> int | None:
    """The version of the MCOS ``FileWrapper__`` block that holds a MAT file's classdef
    objects (MATLAB 2024+ writes 4, older releases 2 or 3); None without objects or when
    the block cannot be found."""
    path = Path(path)
    try:
        kind = _check_file(path)
        offset, _, order = read_mat_header(str(path))
        if kind == "7.3":
            with h5py.File(path, "r") as f:
                cell = f.get("#subsystem#/MCOS")
                head = None if cell is None else f[cell[()].reshape(-1)[0]][()]
        else:
            with open(path, "rb") as f:
                head = _v5_filewrapper_metadata(f, offset, order)
        if head is None:
            return None
        head = np.ascontiguousarray(head, dtype=np.uint8).reshape(-1)[:4].tobytes()
        return int(np.frombuffer(head, dtype=order[0] + "i4")[0])
    except Exception:  # damaged beyond locating the block: the caller reports mat-io's reason
        return None


def _v5_filewrapper_metadata(f, offset: int, order: str):
    """The first cell of a MAT v5 file's FileWrapper__ (its metadata bytes), read with
    mat-io's v5 reader the way its ``read_subsystem`` does; None without objects."""
    from matio.utils.matheaders import check_mat_version
    from matio.v5.matreader5 import MatFile5Reader, load_subsys_stream
    if offset <= 0:
        return None
    stream = load_subsys_stream(f, offset, order)
    stream.seek(0)
    order, _ = check_mat_version(stream.read(4))
    stream.read(4)  # padding
    reader = MatFile5Reader(stream, byte_order=order)
    reader.initialize_read()
    hdr, _ = reader.read_var_header()
    data = reader.read_var_array(hdr, False)
    if "MCOS" not in (data.dtype.names or ()):
        return None
    return data[0, 0]["MCOS"][0, 0]


def _raise_for_lost_objects(path: Path, caught) -> None:
    """MatFileError when mat-io could not decode the file's MATLAB objects (it only warns
    and returns their raw metadata, which would surface later as a confusing type error)."""
    lost = [str(w.message) for w in caught if str(w.message).startswith(_LOST_OBJECTS)]
    if not lost:
        return
    version = filewrapper_version(path)
    which = f"version {version}" if version is not None else "version unknown"
    raise MatFileError(f"{path}: the MATLAB object data (classdef objects, e.g. NetVLAD's layers) could not be "
                       f"decoded: mat-io {_MATIO_VERSION} failed on the MCOS FileWrapper__ block ({which}; "
                       f"MATLAB 2024+ writes version 4, older releases 2 or 3): {lost[0]}")


def loadmat(path, variable_names=None) -> dict[str, Any]:
    """Read a MAT v5/v7 or v7.3 file: ``{variable name: plain value}`` (see module doc).

    ``variable_names`` (str or list) restricts reading to those variables; a name
    not in the file raises :class:`MatFileError`.
    """
    path = Path(path)
    _check_file(path)
    if isinstance(variable_names, str):
        variable_names = [variable_names]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            raw = matio.load_from_mat(str(path), variable_names=variable_names)
    except MatFileError:
        raise
    except Exception as e:  # mat-io / h5py / zlib errors on corrupt or truncated files
        raise MatFileError(f"{path}: cannot decode MAT file (truncated or corrupt?): "
                           f"{type(e).__name__}: {e}") from e
    _raise_for_lost_objects(path, caught)
    raw.pop("__globals__", None)
    raw = {k: v for k, v in raw.items() if not k.startswith("__")}
    if variable_names is not None:
        missing = [n for n in variable_names if n not in raw]
        if missing:
            have = sorted(w[0] for w in whosmat(path))
            raise MatFileError(f"{path}: variable(s) {', '.join(missing)} not in file "
                               f"(has: {', '.join(have) or 'nothing'})")
    dec = _Decoder()
    return {k: dec(v) for k, v in raw.items()}


def whosmat(path) -> list[tuple[str, tuple, str]]:
    """``(name, shape, MATLAB class)`` of each variable, without reading the data."""
    path = Path(path)
    _check_file(path)
    try:
        return [(name, tuple(shape), cls) for name, (shape, cls) in matio.whosmat(str(path)).items()]
    except Exception as e:
        raise MatFileError(f"{path}: cannot list variables: {type(e).__name__}: {e}") from e


# ----------------------------------------------------------------------------- writing

class _Encoder:
    """plain values -> values mat-io writes; collects the classes written via saveobj."""

    def __init__(self, path: Path):
        self.path = path
        self.saveobj_classes: set[str] = set()
        self.done: dict[int, MatlabOpaque] = {}

    def __call__(self, v, where: str):
        if isinstance(v, MatObject):
            return self.object(v, where)
        if isinstance(v, dict):
            return self.struct(v, where)
        if isinstance(v, (list, tuple)):
            return self.cell(v, where)
        if v is None:
            return np.zeros((0, 0))
        if isinstance(v, str):
            return np.array([v]) if v else np.zeros((0, 0), dtype="<U1")
        if isinstance(v, (bool, int, float, np.generic)):
            return np.asarray(v).reshape(1, 1)
        if issparse(v):
            return v
        if isinstance(v, np.ndarray):
            if v.dtype.kind == "O":
                out = np.empty(v.shape, dtype=object)
                for idx, x in np.ndenumerate(v):
                    out[idx] = self(x, f"{where}{{{','.join(str(i + 1) for i in idx)}}}")
                return out
            if v.dtype.kind in "biufc":
                return v.reshape(1, 1) if v.ndim == 0 else (v.reshape(1, -1) if v.ndim == 1 else v)
            if v.dtype.kind in "US":
                return v
        if hasattr(v, "detach"):  # a torch tensor
            return self(v.detach().cpu().numpy(), where)
        if type(v).__module__.startswith("pandas"):
            return v
        raise MatFileError(f"{self.path}: cannot write {where}: unsupported type {type(v).__name__}")

    def _fields(self, d: dict, where: str) -> dict:
        for k in d:
            if not isinstance(k, str) or not k.isidentifier() or k[0] == "_":
                raise MatFileError(f"{self.path}: cannot write {where}: {k!r} is not a MATLAB field name")
        return {k: self(x, f"{where}.{k}") for k, x in d.items()}

    def struct(self, d: dict, where: str):
        if not d:
            return EmptyMatStruct(np.empty((1, 1), dtype=object))
        vals = self._fields(d, where)
        arr = np.empty((1, 1), dtype=[(k, object) for k in vals])
        for k, x in vals.items():
            arr[k][0, 0] = x
        return arr

    def cell(self, items, where: str):
        out = np.empty((1, len(items)) if items else (0, 0), dtype=object)
        for i, x in enumerate(items):
            out[0, i] = self(x, f"{where}{{{i + 1}}}")
        return out

    def object(self, o: MatObject, where: str):
        if id(o) in self.done:  # same object twice: a handle, write one object
            return self.done[id(o)]
        if o.class_name == "function_handle":
            raise MatFileError(f"{self.path}: cannot write {where}: function handles are not supported")
        if o.saveobj:
            self.saveobj_classes.add(o.class_name)
            props = {"any": self.struct(o.props, where)}
        else:
            props = self._fields(o.props, where)
        out = MatlabOpaque(props, o.class_name)
        self.done[id(o)] = out
        return out


def _write_v73_header_text(path):
    """The descriptive text MATLAB puts in a -v7.3 header (mat-io writes a v5 text)."""
    text = (f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: "
            f"{time.strftime('%a %b %d %H:%M:%S %Y')} HDF5 schema 1.00 .").encode("ascii")
    with open(path, "r+b") as f:
        f.write(text[:116].ljust(116, b" "))


def savemat(path, mdict: dict, format: str = "7.3") -> Path:
    """Write ``mdict`` (variable name -> value) as a MAT file, atomically.

    ``format``: ``"7.3"`` (HDF5, MATLAB ``-v7.3``) or ``"5"`` (``-v7``, compressed).
    1-d numpy arrays are written as 1xN rows.  Returns ``path``.
    """
    path = Path(path)
    versions = {"7.3": "v7.3", "5": "v7", "7": "v7"}
    if format not in versions:
        raise MatFileError(f"{path}: unknown MAT format {format!r} (use '7.3' or '5')")
    for name in mdict:
        if not isinstance(name, str) or not name.isidentifier() or name[0] == "_":
            raise MatFileError(f"{path}: {name!r} is not a MATLAB variable name")
    enc = _Encoder(path)
    data = {k: enc(v, k) for k, v in mdict.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("error", category=MatWriteWarning)
            matio.save_to_mat(str(tmp), data, version=versions[format],
                              saveobj_classes=sorted(enc.saveobj_classes))
            if format == "7.3":
                _write_v73_header_text(tmp)
    except BaseException as e:
        if isinstance(e, (MatFileError, KeyboardInterrupt)):
            raise
        raise MatFileError(f"{path}: cannot write MAT file: {type(e).__name__}: {e}") from e
    return path
