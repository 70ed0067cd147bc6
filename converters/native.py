"""matnet's fast native network format: one safetensors file, no pickle.

Every numeric array of the network (weights, momentum, ``meta`` arrays such as
``normalization.averageImage``) is a tensor in its MATLAB shape, named by its path:
``<layer index>/<layer name>/weights/<weight index>`` (0-based), or
``meta/normalization/averageImage``.  The rest (layer structs without their
arrays, the class of classdef layers, ``meta``) is a JSON string in the file's
metadata under ``"matnet"``, where an array is ``{"__tensor__": <tensor name>}``.
Loading parses JSON and reads tensors only; nothing is ever unpickled.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from matnet.layers import LayerError, layer_from_struct  # registers every layer type and class
from matnet.simplenn import SimpleNN

from .atomic_file import atomic_path
from .matfile import MatFileError, MatObject, layers_error

__all__ = ["save_native", "load_native", "FORMAT"]

FORMAT = "matnet-simplenn/1"


class _Packer:
    """Plain MATLAB-like values -> JSON-able values + a dict of named arrays."""

    def __init__(self, path):
        self.path = path
        self.tensors: dict[str, np.ndarray] = {}

    def __call__(self, v, key: str):
        if isinstance(v, dict):
            return {"__struct__": [[k, self(x, f"{key}/{k}")] for k, x in v.items()]}
        if isinstance(v, (list, tuple)):
            return [self(x, f"{key}/{i}") for i, x in enumerate(v)]
        if isinstance(v, MatObject):
            return {"__object__": v.class_name, "saveobj": v.saveobj, "props": self(v.props, key)}
        if hasattr(v, "detach"):
            v = v.detach().cpu().numpy()
        if isinstance(v, np.ndarray) and v.dtype == object:
            return {"__cell__": list(v.shape),
                    "items": [self(x, f"{key}/{i}") for i, x in enumerate(v.reshape(-1, order="F"))]}
        if isinstance(v, np.ndarray) and v.dtype.kind in "US":
            return {"__chars__": [str(x) for x in v.reshape(-1)]}
        if isinstance(v, (np.ndarray, np.generic)):
            a = np.asarray(v)
            if a.dtype.kind not in "biuf":
                raise MatFileError(f"{self.path}: cannot store {key}: unsupported dtype {a.dtype}")
            self.tensors[key] = np.ascontiguousarray(a)
            return {"__tensor__": key}
        if v is None or isinstance(v, (str, bool, int, float)):
            return v
        raise MatFileError(f"{self.path}: cannot store {key}: unsupported type {type(v).__name__}")


def _unpack(v, tensors):
    """JSON node -> MATLAB-like value; a malformed node raises ValueError saying what."""
    if isinstance(v, list):
        return [_unpack(x, tensors) for x in v]
    if not isinstance(v, dict):
        return v
    if "__tensor__" in v:
        if v["__tensor__"] not in tensors:
            raise ValueError(f"refers to tensor {v['__tensor__']!r}, which the file does not hold")
        return tensors[v["__tensor__"]]
    if "__struct__" in v:
        fields = v["__struct__"]
        if not isinstance(fields, list) or not all(
                isinstance(f, list) and len(f) == 2 and isinstance(f[0], str) for f in fields):
            raise ValueError("a struct node is not a list of [field name, value] pairs")
        return {k: _unpack(x, tensors) for k, x in fields}
    if "__object__" in v:
        return MatObject(v["__object__"], _unpack(v.get("props"), tensors), saveobj=v.get("saveobj"))
    if "__cell__" in v:
        shape, items = v["__cell__"], v.get("items")
        if not (isinstance(shape, list) and all(_is_count(d) for d in shape) and isinstance(items, list)
                and math.prod(shape) == len(items)):
            raise ValueError(f"a cell node of shape {shape!r} does not hold that many items")
        out = np.empty(len(items), dtype=object)
        out[:] = [_unpack(x, tensors) for x in items]
        return out.reshape(shape, order="F")
    if "__chars__" in v:
        return np.array(v["__chars__"])
    raise ValueError(f"unknown JSON node {sorted(v)}")


def _is_count(v) -> bool:
    """A JSON integer >= 0 (not a bool, not a float)."""
    return type(v) is int and v >= 0


def save_native(net: SimpleNN, path) -> Path:
    """Write ``net`` as a safetensors file (atomically: temp name, then rename)."""
    path = Path(path)
    pack = _Packer(path)
    layers = [{"class_name": layer.class_name, "struct": pack(layer.to_struct(), f"{i}/{layer.name}")}
              for i, layer in enumerate(net.layers)]
    doc = {"format": FORMAT, "layers": layers, "meta": pack(dict(net.meta), "meta")}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(pack.tensors, str(tmp), metadata={"matnet": json.dumps(doc)})
    return path


_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def _check_entry(path: Path, name: str, info) -> tuple[int, int, np.dtype, tuple]:
    """(begin, end, dtype, shape) of one header entry, every field checked."""
    def bad(problem):
        return MatFileError(f"{path}: bad safetensors header: tensor {name!r}: {problem}")
    if not isinstance(info, dict):
        raise bad(f"a {type(info).__name__}, not an object with dtype, shape, data_offsets")
    for k in ("dtype", "shape", "data_offsets"):
        if k not in info:
            raise bad(f"no '{k}'")
    if not isinstance(info["dtype"], str) or info["dtype"] not in _DTYPES:
        raise bad(f"dtype {info['dtype']!r} is not one of {', '.join(_DTYPES)}")
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise bad(f"shape {shape!r} is not a list of integers >= 0")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
            and offsets[0] <= offsets[1]):
        raise bad(f"data_offsets {offsets!r} is not [begin, end] with 0 <= begin <= end")
    dtype = np.dtype(_DTYPES[info["dtype"]])
    need = dtype.itemsize * math.prod(shape)  # python ints: no overflow
    if offsets[1] - offsets[0] != need:
        raise bad(f"shape {shape} of {info['dtype']} needs {need} bytes, data_offsets {offsets} "
                  f"give {offsets[1] - offsets[0]}")
    return offsets[0], offsets[1], dtype, tuple(shape)


def _read_safetensors(path: Path):
    """(tensors as read-only numpy views of a memory map, metadata dict).

    The safetensors layout is an 8-byte little-endian header length, a JSON header
    (name -> dtype, shape, data_offsets; ``__metadata__``: str -> str), then the raw
    data, which the tensors must cover exactly, without overlaps or holes (as the
    safetensors library requires).  Every field is checked: a malformed header raises
    :class:`MatFileError` naming the file.  Views instead of copies: the layers copy
    their weights once, when they are built.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise MatFileError(f"{path}: not a safetensors file ({size} bytes)")
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise MatFileError(f"{path}: not a safetensors file (header length {n} > file size)")
        try:
            header = json.loads(f.read(n), object_pairs_hook=_no_duplicates)
        except (ValueError, RecursionError) as e:
            raise MatFileError(f"{path}: not a safetensors file (truncated or corrupt?): "
                               f"{'JSON nested too deeply' if isinstance(e, RecursionError) else e}") from e
    if not isinstance(header, dict):
        raise MatFileError(f"{path}: not a safetensors file (the header is a JSON {type(header).__name__}, "
                           f"not an object)")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise MatFileError(f"{path}: bad safetensors header: __metadata__ is not an object of strings")
    entries = sorted((*_check_entry(path, name, info), name) for name, info in header.items())
    pos, data_size = 0, size - 8 - n
    for begin, end, _, _, name in entries:
        if end > data_size:
            raise MatFileError(f"{path}: tensor {name!r} ends at byte {end} of the data, the file holds "
                               f"{data_size} (truncated, or bad data_offsets)")
    for begin, end, _, _, name in entries:
        if begin != pos:
            raise MatFileError(f"{path}: bad safetensors header: tensor {name!r} starts at byte {begin}, "
                               + ("overlapping the tensor before it" if begin < pos else
                                  f"leaving a hole after byte {pos}"))
        pos = end
    if pos != data_size:
        raise MatFileError(f"{path}: the tensors need {pos} bytes of data, the file holds {data_size} "
                           + ("(truncated?)" if pos > data_size else "(trailing bytes: corrupt?)"))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n) if data_size else np.zeros(0, np.uint8)
    tensors = {name: data[begin:end].view(dtype).reshape(shape) for begin, end, dtype, shape, name in entries}
    return tensors, meta


def load_native(path) -> SimpleNN:
    """Read a network written by :func:`save_native`.  A malformed file (header, JSON
    description, a weight that does not fit its layer) raises :class:`MatFileError`
    naming it."""
    path = Path(path)
    if not path.is_file():
        raise MatFileError(f"{path}: no such file")
    tensors, meta = _read_safetensors(path)
    # weights are copied by the layers; everything else is copied here (no view outlives the map)
    tensors = {k: v if "/weights/" in k or "/momentum/" in k else np.array(v) for k, v in tensors.items()}
    if "matnet" not in meta:
        raise MatFileError(f"{path}: safetensors file without matnet metadata (not written by matnet)")
    try:
        doc = json.loads(meta["matnet"])
    except (ValueError, RecursionError) as e:
        raise MatFileError(f"{path}: bad matnet metadata (corrupt?): "
                           f"{'JSON nested too deeply' if isinstance(e, RecursionError) else e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise MatFileError(f"{path}: unknown format {doc.get('format') if isinstance(doc, dict) else doc!r} "
                           f"(expected {FORMAT})")
    if not isinstance(doc.get("layers"), list) or not all(
            isinstance(e, dict) and "struct" in e and isinstance(e.get("class_name"), (str, type(None)))
            for e in doc["layers"]):
        raise MatFileError(f"{path}: bad network description: 'layers' is not a list of "
                           f"{{class_name, struct}} objects")
    layers, failures = [], []
    with warnings.catch_warnings():  # torch warns about read-only arrays; the layers copy them
        warnings.simplefilter("ignore", UserWarning)
        for i, entry in enumerate(doc["layers"]):  # every layer is tried: all failures reported
            try:
                s = _unpack(entry["struct"], tensors)
                layers.append(layer_from_struct(s, class_name=entry["class_name"], index=i))
            except (LayerError, ValueError, TypeError, KeyError, IndexError, RecursionError) as e:
                failures.append((f"layer {i}", _message(e)))
        if failures:
            raise layers_error(path, failures, len(doc["layers"]))
        try:
            return SimpleNN(layers, _unpack(doc.get("meta", {}), tensors))
        except (ValueError, TypeError, RecursionError) as e:
            raise MatFileError(f"{path}: bad network description: meta: {_message(e)}") from e


def _message(e: BaseException) -> str:
    return "nested too deeply" if isinstance(e, RecursionError) else str(e)
