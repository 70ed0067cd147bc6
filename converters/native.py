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
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from matnet.layers import LayerError, layer_from_struct  # registers every layer type and class
from matnet.simplenn import SimpleNN

from .matfile import MatFileError, MatObject

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
    if isinstance(v, list):
        return [_unpack(x, tensors) for x in v]
    if not isinstance(v, dict):
        return v
    if "__tensor__" in v:
        return tensors[v["__tensor__"]]
    if "__struct__" in v:
        return {k: _unpack(x, tensors) for k, x in v["__struct__"]}
    if "__object__" in v:
        return MatObject(v["__object__"], _unpack(v["props"], tensors), saveobj=v["saveobj"])
    if "__cell__" in v:
        items = [_unpack(x, tensors) for x in v["items"]]
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out.reshape(v["__cell__"], order="F")
    if "__chars__" in v:
        return np.array(v["__chars__"])
    raise ValueError(f"unknown JSON node {sorted(v)}")


def save_native(net: SimpleNN, path) -> Path:
    """Write ``net`` as a safetensors file (atomically: temp name, then rename)."""
    path = Path(path)
    pack = _Packer(path)
    layers = [{"class_name": layer.class_name, "struct": pack(layer.to_struct(), f"{i}/{layer.name}")}
              for i, layer in enumerate(net.layers)]
    doc = {"format": FORMAT, "layers": layers, "meta": pack(dict(net.meta), "meta")}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(pack.tensors, tmp, metadata={"matnet": json.dumps(doc)})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}


def _read_safetensors(path: Path):
    """(tensors as read-only numpy views of a memory map, metadata dict).

    The safetensors layout is an 8-byte little-endian header length, a JSON header
    (name -> dtype, shape, data_offsets; ``__metadata__``), then the raw data.  Views
    instead of copies: the layers copy their weights once, when they are built.
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
            header = json.loads(f.read(n))
        except ValueError as e:
            raise MatFileError(f"{path}: not a safetensors file (truncated or corrupt?): {e}") from e
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n) if size > 8 + n else np.zeros(0, np.uint8)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = np.dtype(_DTYPES.get(info["dtype"], "V"))
        shape = tuple(info["shape"])
        if dtype.kind == "V" or end > data.size or end - begin != dtype.itemsize * int(np.prod(shape)):
            raise MatFileError(f"{path}: tensor {name!r}: bad dtype/offsets (truncated or corrupt?)")
        tensors[name] = data[begin:end].view(dtype).reshape(shape)
    return tensors, header.get("__metadata__") or {}


def load_native(path) -> SimpleNN:
    """Read a network written by :func:`save_native`."""
    path = Path(path)
    if not path.is_file():
        raise MatFileError(f"{path}: no such file")
    tensors, meta = _read_safetensors(path)
    # weights are copied by the layers; everything else is copied here (no view outlives the map)
    tensors = {k: v if "/weights/" in k or "/momentum/" in k else np.array(v) for k, v in tensors.items()}
    try:
        doc = json.loads(meta["matnet"])
    except (KeyError, ValueError) as e:
        raise MatFileError(f"{path}: safetensors file without matnet metadata ({e})") from e
    if doc.get("format") != FORMAT:
        raise MatFileError(f"{path}: unknown format {doc.get('format')!r} (expected {FORMAT})")
    try:
        layers = []
        with warnings.catch_warnings():  # torch warns about read-only arrays; the layers copy them
            warnings.simplefilter("ignore", UserWarning)
            for i, entry in enumerate(doc["layers"]):
                s = _unpack(entry["struct"], tensors)
                layers.append(layer_from_struct(s, class_name=entry["class_name"], index=i))
        return SimpleNN(layers, _unpack(doc["meta"], tensors))
    except (LayerError, KeyError, ValueError) as e:
        raise MatFileError(f"{path}: bad network description: {e}") from e
