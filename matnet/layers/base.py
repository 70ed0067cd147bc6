"""The layer contract shared by every SimpleNN layer, and the struct -> layer factory.

A layer mirrors one element of MatConvNet's ``net.layers`` cell: it has a
``name``, a MatConvNet ``type`` (``'custom'`` for NetVLAD's classdef layers, whose
MATLAB class is ``class_name``), ``weights`` as torch Parameters in MatConvNet
shapes, and the training fields ``learningRate``, ``weightDecay`` (per-weight
multipliers, None where MATLAB has none), ``momentum`` (list of tensors or None)
and ``precious``.  ``to_struct()`` gives back the MATLAB struct fields.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

# MatConvNet struct type -> layer class, and NetVLAD classdef name -> layer class.
STRUCT_TYPES: dict[str, type["Layer"]] = {}
CUSTOM_CLASSES: dict[str, type["Layer"]] = {}

# Fields every layer owns; anything else in a struct is kept verbatim in ``extra``.
_COMMON = ("name", "type", "weights", "precious", "learningRate", "weightDecay", "momentum")


def register_type(*types: str) -> Callable:
    """Class decorator: build this class for structs whose ``type`` is one of ``types``."""
    def deco(cls):
        for t in types:
            STRUCT_TYPES[t] = cls
        return cls
    return deco


def register_class(class_name: str) -> Callable:
    """Class decorator: build this class for MATLAB classdef objects named ``class_name``."""
    def deco(cls):
        CUSTOM_CLASSES[class_name] = cls
        cls.class_name = class_name
        return cls
    return deco


def exporting() -> bool:
    """True while the network is being traced into a standalone graph (ONNX export,
    ``torch.jit.trace``, ``torch.export``).  The layers whose exact MATLAB backward is a
    custom autograd Function then run the same forward computation as plain torch ops,
    which those tracers can record; everywhere else the Function is used."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_exporting()


def add_epsilon(t: torch.Tensor, eps: float) -> torch.Tensor:
    """``t + eps`` (MATLAB's ``+ 1e-12`` of relja_l2normalize_col, a normalize's kappa),
    kept through graph optimisers.

    Outside export it is ``t + eps``.  While exporting, the constant enters as
    ``eps * (t == t)``: a tensor that equals ``eps`` wherever ``t`` is a number (and
    leaves a NaN a NaN), but whose value depends on the data, so no optimiser can fold
    it.  A plain ``t + 1e-12`` is not safe there: torch.onnx's graph optimiser
    (onnxscript's ``x + 0 -> x`` rule, which compares constants with an absolute
    tolerance of 1e-8) deletes it, and a cluster or pixel with (almost) nothing in it is
    then scaled up to unit norm, or becomes 0/0 = NaN.  The export keeps the optimiser
    on; only the epsilon is structured so that it cannot be removed."""
    if exporting():
        return t + (t == t).to(t.dtype) * eps
    return t + eps


class LayerError(ValueError):
    """A layer struct or a layer input that cannot be used; the message names the layer."""


def as_list(v) -> list:
    """MATLAB cell (list, tuple, object ndarray) or empty -> python list."""
    if v is None:
        return []
    if isinstance(v, np.ndarray) and v.dtype == object:
        return list(v.reshape(-1, order="F"))
    if isinstance(v, (list, tuple)):
        return list(v)
    if isinstance(v, np.ndarray) and v.size == 0:
        return []
    return [v]


def as_parameter(w) -> nn.Parameter:
    """A C-contiguous float32 Parameter (one layout whatever the source, so results do
    not depend on where the weights came from).  A contiguous float32 tensor is taken
    over without a copy (the native loader relies on this); arrays are copied, so
    training never writes into a caller's numpy array."""
    if isinstance(w, nn.Parameter):
        return w
    if isinstance(w, torch.Tensor):
        return nn.Parameter(w.detach().to(torch.float32).contiguous())
    a = np.asarray(w)
    t = torch.empty(a.shape, dtype=torch.float32)
    t.numpy()[...] = a  # one copy, C-ordered whatever the source (.mat arrays are column-major)
    return nn.Parameter(t)


def scalar(v, default: float) -> float:
    """A MATLAB scalar (1x1 array, python number, or empty/None -> default) as float."""
    a = np.asarray(default if v is None else v, dtype=np.float64).reshape(-1)
    return float(a[0]) if a.size else float(default)


def _optional_floats(v) -> list[float] | None:
    if v is None:
        return None
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    return [float(x) for x in a] if a.size else None


class Layer(nn.Module):
    """Base of all SimpleNN layers.  Subclasses implement ``forward(x)`` on N x C x H x W."""

    type: str = ""
    class_name: str | None = None  # set for classdef (type 'custom') layers

    def __init__(self, name: str, weights=(), *, precious: bool = False,
                 learningRate=None, weightDecay=None, momentum=None, extra: dict | None = None):
        super().__init__()
        self.name = str(name)
        self.weights = nn.ParameterList([as_parameter(w) for w in weights])
        self.precious = bool(precious)
        self.learningRate = _optional_floats(learningRate)
        self.weightDecay = _optional_floats(weightDecay)
        self.momentum = None if momentum is None or len(as_list(momentum)) == 0 else [
            torch.as_tensor(np.asarray(m, dtype=np.float32)).clone() for m in as_list(momentum)]
        self.extra = dict(extra or {})

    # -- construction from / to MATLAB structs ---------------------------------------
    @classmethod
    def from_struct(cls, s: dict) -> "Layer":
        """Build from a MATLAB struct given as a dict (numpy arrays in MATLAB shapes)."""
        raise NotImplementedError

    @staticmethod
    def common_kwargs(s: dict, known: tuple[str, ...] = ()) -> dict:
        """The constructor keywords every layer shares, read from struct ``s``."""
        return dict(
            precious=bool(scalar(s.get("precious"), 0.0)),
            learningRate=s.get("learningRate"), weightDecay=s.get("weightDecay"),
            momentum=s.get("momentum"),
            extra={k: v for k, v in s.items() if k not in _COMMON and k not in known})

    def struct_fields(self) -> dict:
        """Type-specific struct fields (stride, pad, ...); subclasses override."""
        return {}

    def to_struct(self) -> dict:
        """MATLAB struct of this layer (numpy values, MATLAB shapes and field names)."""
        s: dict[str, Any] = {"name": self.name, "type": self.type}
        s["weights"] = [w.detach().cpu().numpy().copy() for w in self.weights]
        s.update(self.struct_fields())
        s.update(self.extra)
        s["precious"] = self.precious
        if self.learningRate is not None:
            s["learningRate"] = np.asarray(self.learningRate, dtype=np.float32).reshape(1, -1)
        if self.weightDecay is not None:
            s["weightDecay"] = np.asarray(self.weightDecay, dtype=np.float32).reshape(1, -1)
        if self.momentum is not None:
            s["momentum"] = [m.detach().cpu().numpy().copy() for m in self.momentum]
        return s

    def fail(self, problem: str) -> LayerError:
        """An error naming this layer; ``raise self.fail('...')``."""
        return LayerError(f"layer '{self.name}' ({self.class_name or self.type}): {problem}")

    def extra_repr(self) -> str:
        shapes = ", ".join("x".join(map(str, w.shape)) for w in self.weights)
        return f"name={self.name!r}" + (f", weights=[{shapes}]" if shapes else "")


def struct_name(s: dict, index: int | None = None) -> str:
    name = s.get("name")
    if isinstance(name, str) and name:
        return name
    return f"layer{index + 1}" if index is not None else "<unnamed>"


def layer_from_struct(s: dict, class_name: str | None = None, index: int | None = None) -> Layer:
    """Build any layer from a MATLAB layer struct given as a dict.

    ``class_name`` is the MATLAB class of a classdef layer (``layerVLAD``, ...); for
    plain structs the ``type`` field decides.  ``index`` (0-based) only names
    unnamed layers ``layer<index+1>`` as ``vl_simplenn_tidy`` does.  Unknown types or
    classes and missing required fields raise :class:`LayerError` naming the layer.
    """
    if not isinstance(s, dict):
        raise LayerError(f"layer {struct_name({}, index)}: expected a struct (dict), got {type(s).__name__}")
    s = dict(s)
    s.setdefault("name", struct_name(s, index))
    if class_name is not None:
        cls = CUSTOM_CLASSES.get(class_name)
        if cls is None:
            raise LayerError(f"layer '{s['name']}': unknown layer class '{class_name}' "
                             f"(known: {', '.join(sorted(CUSTOM_CLASSES)) or 'none'})")
        return cls.from_struct(s)
    ltype = s.get("type")
    if not isinstance(ltype, str):
        raise LayerError(f"layer '{s['name']}': struct has no 'type' field")
    cls = STRUCT_TYPES.get(ltype)
    if cls is None:
        raise LayerError(f"layer '{s['name']}': unsupported layer type '{ltype}' "
                         f"(supported: {', '.join(sorted(STRUCT_TYPES))})")
    return cls.from_struct(s)


def require(s: dict, field: str):
    """``s[field]``, or a LayerError naming the layer and the missing field."""
    if field not in s:
        raise LayerError(f"layer '{s.get('name', '<unnamed>')}' ({s.get('type', '?')}): "
                         f"missing required field '{field}'")
    return s[field]


def pair(v, default: int) -> tuple[int, int]:
    """MATLAB scalar or [a b] -> (a, b)."""
    a = np.asarray(default if v is None else v).reshape(-1)
    if a.size == 0:
        a = np.asarray([default])
    if a.size == 1:
        return int(a[0]), int(a[0])
    return int(a[0]), int(a[1])


def pad4(v) -> tuple[int, int, int, int]:
    """MATLAB pad: scalar or [top bottom left right] -> (top, bottom, left, right)."""
    a = np.asarray(0 if v is None else v).reshape(-1)
    if a.size == 0:
        return 0, 0, 0, 0
    if a.size == 1:
        return (int(a[0]),) * 4
    if a.size != 4:
        raise ValueError(f"pad must be a scalar or [top bottom left right], got {a.tolist()}")
    return tuple(int(x) for x in a)
