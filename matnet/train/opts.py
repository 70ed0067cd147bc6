"""TrainWeaklyOpts: trainWeakly.m's option struct (same field names and defaults).

Unknown names are rejected with the list of valid ones (vl_argparse).  Every value is
type- and range-checked when set (construction, ``replace``, assignment), so a bad
option fails before any compute with an error naming it, its value and what is
allowed; MATLAB's forms are accepted (numbers as ints or floats, logicals as 0/1,
lists as lists, tuples or vectors, one layer name for fixLayers).  MATLAB itself checks
none of them (``useGPU='no'`` counts as true there).  Checks that need the network
(backPropToLayer in range, fixLayers naming layers) are done by trainWeakly before it
computes anything.  Fields that trainWeakly fills in itself (dbTrainName,
backPropDepth, ...) are kept with the options so a checkpoint stores the same struct
MATLAB saves.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import option_checks as c


def _default_recall_ns() -> list[int]:
    return [1, 2, 3, 4, 5] + list(range(10, 101, 5))


@dataclass(init=False)
class TrainWeaklyOpts:
    """trainWeakly's options; ``TrainWeaklyOpts(**kw)`` or ``.replace(**kw)``.

    ``backPropToLayer`` is a 1-based layer index or a layer name (as MATLAB);
    ``recallNs`` defaults to [1:5, 10:5:100]; ``useGPU`` falls back to the CPU with a
    warning when no GPU exists.  ``precision`` is not in MATLAB: 'exact' (default; float32,
    TF32 off) or 'fast' (bf16 trunk, float32 head), for the training tuples and the
    features (see :mod:`matnet.precision`).
    """

    netID: str = "caffe"
    layerName: str = "conv5"
    method: str = "vlad_preL2_intra"
    batchSize: int = 4
    learningRate: float = 1e-4
    lrDownFreq: int = 5
    lrDownFactor: float = 2
    weightDecay: float = 1e-3
    momentum: float = 0.9
    backPropToLayer: Any = 1
    fixLayers: list = field(default_factory=list)
    nNegChoice: int = 1000
    nNegCap: int = 10
    nNegCache: int = 10
    nEpoch: int = 30
    margin: float = 0.1
    excludeVeryHard: bool = False
    jitterFlip: bool = False
    jitterScale: list = field(default_factory=list)
    sessionID: str | None = None
    outPrefix: str | None = None
    dbCheckpoint0: str | None = None
    qCheckpoint0: str | None = None
    dbCheckpoint0val: str | None = None
    qCheckpoint0val: str | None = None
    checkpoint0suffix: str = ""
    info: str = ""
    test0: bool = True
    saveFrequency: int = 2000
    compFeatsFrequency: int = 1000
    computeBatchSize: int = 10
    epochTestFrequency: int = 1
    doDraw: bool = False
    printLoss: bool = False
    printBatchLoss: bool = False
    nTestSample: int = 1000
    nTestRankSample: int = 5000
    recallNs: list = field(default_factory=_default_recall_ns)
    useGPU: bool = True
    precision: str = "exact"
    numThreads: int = 12
    startEpoch: int = 1
    # --- filled in by trainWeakly (saved with the options, as MATLAB does)
    dbTrainName: str | None = None
    dbValName: str | None = None
    backPropToLayerName: str | None = None
    backPropDepth: int | None = None
    dbCheckpoint0_orig: str | None = None
    qCheckpoint0_orig: str | None = None

    def __setattr__(self, name, value):
        check = _CHECKS.get(name)
        if check is None:
            raise AttributeError(f"TrainWeaklyOpts has no option {name!r}; valid options: {', '.join(self.names())}")
        try:
            value = check(name, value)
        except ValueError as e:
            raise ValueError(f"TrainWeaklyOpts: {e}") from None
        object.__setattr__(self, name, value)

    def __init__(self, **kw):
        names = self.names()
        bad = [k for k in kw if k not in names]
        if bad:
            raise ValueError(f"TrainWeaklyOpts: unknown option(s) {', '.join(map(repr, bad))}; "
                             f"valid options: {', '.join(names)}")
        for f in dataclasses.fields(self):
            if f.name in kw:
                v = kw[f.name]
            elif f.default_factory is not dataclasses.MISSING:
                v = f.default_factory()
            else:
                v = f.default
            setattr(self, f.name, v)

    @classmethod
    def names(cls) -> list[str]:
        """Valid option names, in trainWeakly.m's order."""
        return [f.name for f in dataclasses.fields(cls)]

    def replace(self, **kw) -> "TrainWeaklyOpts":
        """A copy with ``kw`` changed (unknown names rejected)."""
        d = self.to_dict()
        d.update(kw)
        return TrainWeaklyOpts(**d)

    def to_dict(self) -> dict:
        """Plain python values (None for MATLAB's [])."""
        return {n: _copy(getattr(self, n)) for n in self.names()}

    def to_struct(self) -> dict:
        """The MATLAB struct saved in checkpoints: [] as empty doubles, lists as row
        vectors (fixLayers as a cell of names), logicals as bool."""
        out = {}
        for n in self.names():
            v = getattr(self, n)
            if v is None:
                out[n] = np.zeros((0, 0))
            elif n == "fixLayers":
                out[n] = [str(x) for x in v]
            elif isinstance(v, (list, tuple)):
                out[n] = np.asarray(v, dtype=np.float64).reshape(1, -1)
            elif isinstance(v, bool):
                out[n] = np.bool_(v)
            elif isinstance(v, (int, float)):
                out[n] = np.float64(v)
            else:
                out[n] = v
        return out

    @classmethod
    def from_struct(cls, s: dict) -> "TrainWeaklyOpts":
        """Inverse of :meth:`to_struct` (also accepts a MATLAB-saved opts struct);
        fields this port does not know are dropped."""
        template = cls()
        kw = {}
        for n in cls.names():
            if n not in s:
                continue
            default = getattr(template, n)
            kw[n] = _from_matlab(s[n], default, n)
        return cls(**kw)

    def __str__(self) -> str:
        w = max(map(len, self.names()))
        return "\n".join(f"{n:>{w}}: {getattr(self, n)!r}" for n in self.names())


_count = c.integer(1)
_CHECKS = {
    "netID": c.nonempty_text, "layerName": c.nonempty_text, "method": c.nonempty_text,
    "batchSize": _count, "learningRate": c.real(0), "lrDownFreq": _count, "lrDownFactor": c.real(0, above=True),
    "weightDecay": c.real(0), "momentum": c.real(0, 1), "backPropToLayer": c.layer, "fixLayers": c.names,
    "nNegChoice": _count, "nNegCap": _count, "nNegCache": c.integer(0), "nEpoch": _count, "margin": c.real(),
    "excludeVeryHard": c.logical, "jitterFlip": c.logical, "jitterScale": c.positive_reals,
    "sessionID": c.optional(c.nonempty_text), "outPrefix": c.optional(c.prefix),
    "dbCheckpoint0": c.optional(c.text), "qCheckpoint0": c.optional(c.text),
    "dbCheckpoint0val": c.optional(c.text), "qCheckpoint0val": c.optional(c.text),
    "checkpoint0suffix": c.text, "info": c.text, "test0": c.logical,
    "saveFrequency": c.integer(1, allow_inf=True), "compFeatsFrequency": c.integer(1, allow_inf=True),
    "computeBatchSize": _count, "epochTestFrequency": _count, "doDraw": c.logical, "printLoss": c.logical,
    "printBatchLoss": c.logical, "nTestSample": c.integer(1, allow_inf=True), "nTestRankSample": c.integer(0),
    "recallNs": c.increasing_counts, "useGPU": c.logical, "precision": c.one_of("exact", "fast"),
    "numThreads": _count, "startEpoch": _count,
    "dbTrainName": c.optional(c.text), "dbValName": c.optional(c.text), "backPropToLayerName": c.optional(c.text),
    "backPropDepth": c.optional(_count), "dbCheckpoint0_orig": c.optional(c.text),
    "qCheckpoint0_orig": c.optional(c.text),
}


def _copy(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def _scalar(a: np.ndarray):
    return a.reshape(-1)[0].item()


def _from_matlab(v, default, name):
    if isinstance(v, np.ndarray) and v.dtype != object and v.size == 0:
        if isinstance(default, list):
            return []
        return "" if isinstance(default, str) else None
    if name == "fixLayers":
        if isinstance(v, str):
            return [v]
        if isinstance(v, np.ndarray):
            v = list(v.reshape(-1, order="F"))
        return [str(x) for x in v]
    if isinstance(default, list):
        return [_num(x) for x in np.asarray(v).reshape(-1)]
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "US":
            return str(v.reshape(-1)[0]) if v.size else ""
        v = _scalar(v)
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(default, bool):
        return bool(v)
    if name == "backPropToLayer" and isinstance(v, str):
        return v
    if isinstance(default, int) and not isinstance(default, bool) or name == "backPropDepth":
        return int(v) if isinstance(v, (int, float)) and float(v).is_integer() else v
    if isinstance(default, float):
        return float(v)
    return v


def _num(x):
    x = x.item() if isinstance(x, np.generic) else x
    return int(x) if float(x).is_integer() else float(x)
