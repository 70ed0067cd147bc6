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
    features (see :mod:`matnet.precision`).  ``tensorboard`` is not in MATLAB either: a
    folder for TensorBoard scalars of the losses and validation recalls (see
    :mod:`matnet.train.tensorboard_log`; needs the optional ``tensorboard`` extra).
    """

    netID: str = field(default="caffe",
                      metadata={"help": "base network: loadNet's ID (vd16, vd19, caffe, places; "
                                        "tiny = matnet's demo network)"})
    layerName: str = field(default="conv5",
                          metadata={"help": "layer of the base network the head goes on (e.g. conv5, conv5_3)"})
    method: str = field(default="vlad_preL2_intra",
                       metadata={"help": "head: vlad_preL2_intra, vlad_preL2, vlad, vladv2_*, max, avg (+ _preL2)"})
    batchSize: int = field(default=4, metadata={"help": "queries per SGD step"})
    learningRate: float = field(default=1e-4, metadata={"help": "initial learning rate"})
    lrDownFreq: int = field(default=5, metadata={"help": "divide the learning rate every this many epochs"})
    lrDownFactor: float = field(default=2, metadata={"help": "by this factor (the cache refresh period grows by it)"})
    weightDecay: float = field(default=1e-3, metadata={"help": "weight decay"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    backPropToLayer: Any = field(default=1, metadata={"help": "train layers from this one up (1-based index or name)"})
    fixLayers: list = field(default_factory=list, metadata={"help": "names of layers not to train"})
    nNegChoice: int = field(default=1000, metadata={"help": "random negatives sampled per query"})
    nNegCap: int = field(default=10, metadata={"help": "at most this many violating negatives per tuple"})
    nNegCache: int = field(default=10, metadata={"help": "hardest negatives remembered per query"})
    nEpoch: int = field(default=30, metadata={"help": "epochs"})
    margin: float = field(default=0.1, metadata={"help": "triplet margin (squared distances)"})
    excludeVeryHard: bool = field(default=False, metadata={"help": "drop negatives closer than the positive"})
    jitterFlip: bool = field(default=False, metadata={"help": "flip tuples horizontally at random"})
    jitterScale: list = field(default_factory=list,
                             metadata={"help": "rescale tuples by one of these factors at random"})
    sessionID: str | None = field(default=None,
                                 metadata={"help": "run name (default: random); needed with startEpoch > 1"})
    outPrefix: str | None = field(default=None,
                                 metadata={"help": "output file prefix (default: localPaths' outPrefix)"})
    dbCheckpoint0: str | None = field(default=None,
                                     metadata={"help": "initial database features of dbTrain "
                                                       "(.bin; computed when missing)"})
    qCheckpoint0: str | None = field(default=None, metadata={"help": "initial query features of dbTrain (.bin)"})
    dbCheckpoint0val: str | None = field(default=None, metadata={"help": "initial database features of dbVal (.bin)"})
    qCheckpoint0val: str | None = field(default=None, metadata={"help": "initial query features of dbVal (.bin)"})
    checkpoint0suffix: str = field(default="", metadata={"help": "suffix of the default checkpoint0 names"})
    info: str = field(default="", metadata={"help": "free text kept with the options"})
    test0: bool = field(default=True, metadata={"help": "test the network before training"})
    saveFrequency: int = field(default=2000,
                              metadata={"help": "save every this many queries (inf: at epoch ends only)"})
    compFeatsFrequency: int = field(default=1000,
                                   metadata={"help": "recompute the feature cache every this many queries"})
    computeBatchSize: int = field(default=10, metadata={"help": "images per batch when computing features"})
    epochTestFrequency: int = field(default=1, metadata={"help": "test every this many epochs"})
    doDraw: bool = field(default=False,
                        metadata={"help": "plot the training curves and validation recall to "
                                          "<outPrefix><sessionID>_training.png"})
    printLoss: bool = field(default=False, metadata={"help": "print every query's loss and the full recall tables"})
    printBatchLoss: bool = field(default=False, metadata={"help": "print every batch's loss"})
    nTestSample: int = field(default=1000, metadata={"help": "queries used to test recall"})
    nTestRankSample: int = field(default=5000, metadata={"help": "queries used for the rank loss (0: none)"})
    recallNs: list = field(default_factory=_default_recall_ns, metadata={"help": "N of the recall@N to compute"})
    useGPU: bool = field(default=True, metadata={"help": "train on the GPU (falls back to the CPU with a warning)"})
    precision: str = field(default="exact",
                          metadata={"help": "exact: float32 as MatConvNet; fast: bf16 trunk, "
                                            "float32 head (not in MATLAB)"})
    tensorboard: str | None = field(default=None,
                                    metadata={"help": "folder for TensorBoard scalars: losses, learning rate, "
                                                      "recalls (not in MATLAB; needs pip install "
                                                      "'matnet[tensorboard]'; rank 0 writes under torchrun)"})
    numThreads: int = field(default=12, metadata={"help": "image reading threads"})
    startEpoch: int = field(default=1, metadata={"help": "resume at this epoch (with sessionID)"})
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
        import numpy as np
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
    "tensorboard": c.optional(c.nonempty_text),
    "numThreads": _count, "startEpoch": _count,
    "dbTrainName": c.optional(c.text), "dbValName": c.optional(c.text), "backPropToLayerName": c.optional(c.text),
    "backPropDepth": c.optional(_count), "dbCheckpoint0_orig": c.optional(c.text),
    "qCheckpoint0_orig": c.optional(c.text),
}


def _copy(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def _scalar(a):
    return a.reshape(-1)[0].item()


def _from_matlab(v, default, name):
    import numpy as np
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
    import numpy as np
    x = x.item() if isinstance(x, np.generic) else x
    return int(x) if float(x).is_integer() else float(x)
