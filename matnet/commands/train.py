"""``matnet train --db-train D --db-val D [--<option> VALUE ...]``: trainWeakly from the
command line, every option kebab-case or under its MATLAB name (``--batch-size 4`` or
``--batchSize 4``, ``--learning-rate 1e-3``, ``--back-prop-to-layer conv5_1``,
``--jitter-flip true``, ``--recall-ns 1 5 10``).

Datasets: MATLAB's names (``pitts30k_train``, ``pitts250k_val``, ``tokyoTM_train``,
``tokyoTinyTM_val``), ``spec:FILE.mat`` (with ``--root``), ``vpr:ROOT[:split]`` or
``msls:ROOT[:split][:city,city]``.  The base network is loadNet's (``--net-id``) from
localPaths' pretrainedCNNs, ``--pretrained-cnns DIR`` or ``--base-net FILE``.  Resume with
``--session-id ID --start-epoch E``.  Run unchanged under ``torchrun --nproc_per_node=N -m
matnet train ...`` to train on N processes (GPUs with ``--device cuda``): the same result
as one process.  A progress bar shows each epoch on a terminal; progress also goes to
``<outPrefix><sessionID>.log``.
"""
from __future__ import annotations

import math

from . import options as o

# filled in by trainWeakly itself: no flag
_FILLED_BY_TRAINWEAKLY = {"dbTrainName", "dbValName", "backPropToLayerName", "backPropDepth",
                          "dbCheckpoint0_orig", "qCheckpoint0_orig"}
# options with their own flag (options.py's concepts)
_OWN_FLAG = {"useGPU"}


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


def option_flags(name: str) -> list[str]:
    """The flags of trainWeakly option ``name``: kebab-case, plus the MATLAB name when it differs."""
    k = "--" + o.kebab(name)
    return [k] if k == f"--{name}" else [k, f"--{name}"]


def option_help() -> dict[str, str]:
    """Each option's help text, from TrainWeaklyOpts' fields (the one copy)."""
    import dataclasses

    from ..train.opts import TrainWeaklyOpts
    return {f.name: f.metadata["help"] for f in dataclasses.fields(TrainWeaklyOpts) if "help" in f.metadata}


_METAVARS = {"precision": "{exact,fast}", "tensorboard": "DIR", "outPrefix": "PREFIX", "method": "METHOD",
             "netID": "ID", "sessionID": "ID", "layerName": "LAYER", "backPropToLayer": "LAYER",
             "fixLayers": "LAYER", "jitterScale": "X", "dbCheckpoint0": "FILE", "qCheckpoint0": "FILE",
             "dbCheckpoint0val": "FILE", "qCheckpoint0val": "FILE"}


def _metavar(name: str, default) -> str:
    """What a trainWeakly option's value looks like in the help."""
    if name in _METAVARS:
        return _METAVARS[name]
    if isinstance(default, bool):
        return "{true,false}"
    if isinstance(default, (list, int)):
        return "N"
    if isinstance(default, float):
        return "X"
    return "TEXT"


def add_arguments(p) -> None:
    from ..train.opts import TrainWeaklyOpts
    o.add_dataset(p, flag="--db-train", matlab="--dbTrain", dest="db_train", help="training set")
    o.add_dataset(p, flag="--db-val", matlab="--dbVal", dest="db_val", help="validation set")
    o.add_root(p, help="image root of a MATLAB-named or spec: --db-train (default: localPaths' folder of that "
                       "dataset), and of --db-val unless --val-root")
    p.add_argument("--val-root", metavar="DIR", help="image root of a MATLAB-named or spec: --db-val "
                   "(default: --root)")
    o.deprecated(p, "--dbValRoot", "--val-root", "val_root")
    o.add_spec_dir(p)
    p.add_argument("--base-net", metavar="FILE", help="the base network's MatConvNet file (one of loadNet's: "
                   "imagenet-vgg-verydeep-16.mat, ...; sets --net-id when not given): instead of "
                   "<pretrainedCNNs>/<file of --net-id>")
    p.add_argument("--pretrained-cnns", "--pretrainedCNNs", dest="pretrained_cnns", metavar="DIR",
                   help="localPaths' pretrainedCNNs, the folder of loadNet's base networks (default: localPaths')")
    o.add_device(p, default=None, help="where to train: cuda (trainWeakly's useGPU true, the default: the CPU "
                                       "with a warning when there is no GPU), cpu, or auto (the GPU when one "
                                       "exists, without a warning)")
    g = p.add_argument_group("trainWeakly options (MATLAB names also accepted; true/false for logicals, "
                             "space- or comma-separated lists)")
    defaults, helps = TrainWeaklyOpts(), option_help()
    for name in TrainWeaklyOpts.names():
        if name in _FILLED_BY_TRAINWEAKLY or name in _OWN_FLAG:
            continue
        d = getattr(defaults, name)
        kw = {"nargs": "+"} if isinstance(d, list) else {}
        g.add_argument(*option_flags(name), dest=f"opt_{name}", metavar=_metavar(name, d), default=None,
                       help=f"{helps[name]} (default: {d if d not in (None, '') else 'none'})", **kw)


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
                raise ValueError(f"{option_flags(name)[0]}: {e}") from None
    device = getattr(args, "device", None)
    if device is not None:
        from ..device import uses_gpu
        kw["useGPU"] = uses_gpu(device) if device == "auto" else device == "cuda"
    return TrainWeaklyOpts(**kw)


def base_network(args, opts) -> None:
    """``--base-net FILE`` / ``--pretrained-cnns DIR``: localPaths' pretrainedCNNs for this
    process (what MATNET_PRETRAINED_CNNS sets), and netID from FILE's name.  FILE must be
    named as loadNet's files are (trainWeakly names its caches and checkpoints after
    netID); ValueError otherwise, or when FILE is absent or disagrees with --net-id."""
    import os
    from pathlib import Path

    from ..datasets.local_paths import env_name
    from ..pretrained import PRETRAINED
    folder = args.pretrained_cnns
    if args.base_net:
        fn = Path(args.base_net).expanduser()
        ids = [k for k, v in PRETRAINED.items() if v == fn.name]
        if not ids:
            raise ValueError(f"--base-net {fn}: not one of loadNet's files ("
                             + ", ".join(f"{v} = {k}" for k, v in PRETRAINED.items()) + "); name it so")
        if not fn.is_file():
            raise FileNotFoundError(f"--base-net {fn}: no such file")
        if args.opt_netID is not None and opts.netID != ids[0]:
            raise ValueError(f"--base-net {fn} is netID {ids[0]}, but --net-id is {opts.netID}")
        if folder is not None and Path(folder).expanduser().resolve() != fn.parent.resolve():
            raise ValueError(f"--base-net {fn} is not in --pretrained-cnns {folder}")
        opts.netID, folder = ids[0], str(fn.parent)
    if folder is not None:
        if not Path(folder).expanduser().is_dir():
            raise FileNotFoundError(f"--pretrained-cnns {folder}: no such folder")
        os.environ[env_name("pretrainedCNNs")] = str(Path(folder).expanduser()) + os.sep


def run(args) -> int:
    from .. import distributed
    from ..datasets import parse_dataset
    from ..datasets.named import takes_root
    from ..train.train_weakly import trainWeakly
    opts = options_from_args(args)
    base_network(args, opts)
    val_root = args.val_root or (args.root if takes_root(args.db_val) else None)
    with distributed.process_group(opts.useGPU):
        dbTrain = parse_dataset(args.db_train, args.root, args.spec_dir, what="--db-train")
        dbVal = parse_dataset(args.db_val, val_root, args.spec_dir, what="--db-val")
        sessionID = trainWeakly(dbTrain, dbVal, opts)
        if distributed.is_rank0():
            from ..datasets.local_paths import localPaths
            out = opts.outPrefix or localPaths()["outPrefix"]
            print(f"trainWeakly {sessionID} done: {out}{sessionID}_latest.mat, log {out}{sessionID}.log")
    return 0
