"""``matnet train --dbTrain D --dbVal D [--<option> VALUE ...]``: trainWeakly from the
command line, every option under its MATLAB name (``--batchSize 4 --learningRate 1e-3
--backPropToLayer conv5_1 --jitterFlip true --recallNs 1 5 10``).

Datasets are MATLAB's names (``pitts30k_train``, ``pitts250k_val``, ``tokyoTM_train``,
``tokyoTinyTM_val``), dbStruct spec files (``x.mat`` with ``--dbRoot``), or
``vpr:ROOT:SPLIT`` / ``msls:ROOT:SPLIT``.  Resume with ``--sessionID ID --startEpoch E``.
Run unchanged under ``torchrun --nproc_per_node=N -m matnet train ...`` to train on N
processes (GPUs with ``--useGPU true``): the same result as one process.  Progress
also goes to ``<outPrefix><sessionID>.log``.
"""
from __future__ import annotations

import math
import sys

# one line per option (trainWeakly's README_more), in TrainWeaklyOpts' order
HELP = {
    "netID": "base network: loadNet's ID (caffe, vd16, tiny, ... or a file name in pretrainedCNNs)",
    "layerName": "layer of the base network the head goes on (e.g. conv5, conv5_3)",
    "method": "head: vlad_preL2_intra, vlad_preL2, vlad, vladv2_*, max, avg (+ _preL2)",
    "batchSize": "queries per SGD step",
    "learningRate": "initial learning rate",
    "lrDownFreq": "divide the learning rate every this many epochs",
    "lrDownFactor": "by this factor (the cache refresh period grows by it)",
    "weightDecay": "weight decay",
    "momentum": "SGD momentum",
    "backPropToLayer": "train layers from this one up (1-based index or name)",
    "fixLayers": "names of layers not to train",
    "nNegChoice": "random negatives sampled per query",
    "nNegCap": "at most this many violating negatives per tuple",
    "nNegCache": "hardest negatives remembered per query",
    "nEpoch": "epochs",
    "margin": "triplet margin (squared distances)",
    "excludeVeryHard": "drop negatives closer than the positive",
    "jitterFlip": "flip tuples horizontally at random",
    "jitterScale": "rescale tuples by one of these factors at random",
    "sessionID": "run name (default: random); needed with startEpoch > 1",
    "outPrefix": "output file prefix (default: localPaths' outPrefix)",
    "dbCheckpoint0": "initial database features of dbTrain (.bin; computed when missing)",
    "qCheckpoint0": "initial query features of dbTrain (.bin)",
    "dbCheckpoint0val": "initial database features of dbVal (.bin)",
    "qCheckpoint0val": "initial query features of dbVal (.bin)",
    "checkpoint0suffix": "suffix of the default checkpoint0 names",
    "info": "free text kept with the options",
    "test0": "test the network before training",
    "saveFrequency": "save every this many queries (inf: at epoch ends only)",
    "compFeatsFrequency": "recompute the feature cache every this many queries",
    "computeBatchSize": "images per batch when computing features",
    "epochTestFrequency": "test every this many epochs",
    "doDraw": "plot the progress to <outPrefix><sessionID>_progress.png",
    "printLoss": "print every query's loss and the full recall tables",
    "printBatchLoss": "print every batch's loss",
    "nTestSample": "queries used to test recall",
    "nTestRankSample": "queries used for the rank loss (0: none)",
    "recallNs": "N of the recall@N to compute",
    "useGPU": "train on the GPU (falls back to the CPU with a warning)",
    "precision": "exact: float32 as MatConvNet; fast: bf16 trunk, float32 head (not in MATLAB)",
    "numThreads": "image reading threads",
    "startEpoch": "resume at this epoch (with sessionID)",
}
_FILLED_BY_TRAINWEAKLY = {"dbTrainName", "dbValName", "backPropToLayerName", "backPropDepth",
                          "dbCheckpoint0_orig", "qCheckpoint0_orig"}


def _bool(s: str) -> bool:
    v = s.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {s!r}")


def _number(s: str):
    v = float(s)
    return int(v) if math.isfinite(v) and v.is_integer() and "." not in s and "e" not in s.lower() else v


def _value(name: str, default, raw):
    """A command-line value (string, or list of strings for list options) as the option's type."""
    if isinstance(default, list):
        items = [x for tok in raw for x in tok.split(",") if x]
        return items if name == "fixLayers" else [_number(x) for x in items]
    if isinstance(default, bool):
        return _bool(raw)
    if name == "backPropToLayer":
        return int(raw) if raw.isdigit() else raw
    if isinstance(default, (int, float)):
        return _number(raw)
    return raw


def add_arguments(p) -> None:
    from ..train.opts import TrainWeaklyOpts
    p.add_argument("--dbTrain", required=True, metavar="DATASET",
                   help="training set: pitts30k_train, tokyoTM_train, a spec .mat, vpr:ROOT:SPLIT, msls:ROOT:SPLIT")
    p.add_argument("--dbVal", required=True, metavar="DATASET", help="validation set (same forms)")
    p.add_argument("--dbRoot", help="image folder of --dbTrain (default: localPaths' for named datasets)")
    p.add_argument("--dbValRoot", help="image folder of --dbVal (default: --dbRoot)")
    p.add_argument("--specDir", help="folder of the named datasets' specs (default: localPaths' dsetSpecDir)")
    g = p.add_argument_group("trainWeakly options (MATLAB names; true/false for logicals, "
                             "space- or comma-separated lists)")
    defaults = TrainWeaklyOpts()
    for name in TrainWeaklyOpts.names():
        if name in _FILLED_BY_TRAINWEAKLY:
            continue
        d = getattr(defaults, name)
        kw = {"nargs": "+"} if isinstance(d, list) else {}
        g.add_argument(f"--{name}", dest=f"opt_{name}", metavar="V", default=None,
                       help=f"{HELP[name]} (default: {d if d not in (None, '') else 'none'})", **kw)


def options_from_args(args):
    """The TrainWeaklyOpts the command line names (unset options keep their defaults)."""
    from ..train.opts import TrainWeaklyOpts
    defaults, kw = TrainWeaklyOpts(), {}
    for name in TrainWeaklyOpts.names():
        raw = getattr(args, f"opt_{name}", None)
        if raw is not None:
            try:
                kw[name] = _value(name, getattr(defaults, name), raw)
            except ValueError as e:
                raise ValueError(f"--{name}: {e}") from None
    return TrainWeaklyOpts(**kw)


def run(args) -> int:
    from .. import distributed
    from ..datasets.named import dataset_by_name
    from ..train.train_weakly import trainWeakly
    opts = options_from_args(args)
    try:
        with distributed.process_group(opts.useGPU):
            dbTrain = dataset_by_name(args.dbTrain, args.dbRoot, args.specDir)
            dbVal = dataset_by_name(args.dbVal, args.dbValRoot or args.dbRoot, args.specDir)
            sessionID = trainWeakly(dbTrain, dbVal, opts)
            if distributed.is_rank0():
                out = opts.outPrefix or "<outPrefix>"
                print(f"trainWeakly {sessionID} done: {out}{sessionID}_latest.mat, log {out}{sessionID}.log")
    except distributed.DistributedError as e:
        print(f"matnet: error: {e}", file=sys.stderr)
        return 1
    return 0
