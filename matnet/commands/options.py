"""The command line's shared options: one function per concept, one flag per concept.

Rule (docs/commands.md): every flag is kebab-case; a flag that is a MATLAB option
(``batchSize``, ``useGPU``, ``numThreads``, ``memoryCap``, trainWeakly's options) also
takes its MATLAB spelling (``--batch-size`` and ``--batchSize`` are one option, help
shows both).  Spellings of earlier releases keep working for one release: they are
hidden from the help and print ``matnet: deprecated: OLD: use NEW`` on stderr
(:func:`deprecated`).  :data:`CONCEPTS` is the table the grammar test checks every
command against.

This module imports argparse only: building a parser must not import torch or numpy
(``matnet --help`` answers at once).
"""
from __future__ import annotations

import argparse
import re
import sys

from ..datasets.named import DATASET_FORMS

# concept -> (flag, MATLAB spelling or None): the one name of each concept in every command
CONCEPTS: dict[str, tuple[str, str | None]] = {
    "net": ("--net", None),
    "dataset": ("--dataset", None),
    "db_train": ("--db-train", "--dbTrain"),
    "db_val": ("--db-val", "--dbVal"),
    "root": ("--root", None),
    "spec_dir": ("--spec-dir", None),
    "out": ("--out", None),
    "batch_size": ("--batch-size", "--batchSize"),
    "device": ("--device", "--useGPU"),
    "num_threads": ("--num-threads", "--numThreads"),
    "precision": ("--precision", None),
    "memory_cap": ("--memory-cap", "--memoryCap"),
    "dims": ("--dims", None),
    "size": ("--size", None),
}

DEVICES = ("auto", "cpu", "cuda")
_USE_GPU = {"true": "cuda", "false": "cpu", "auto": "auto"}


def kebab(name: str) -> str:
    """A MATLAB option name as a flag word: ``batchSize`` -> ``batch-size``, ``netID`` ->
    ``net-id``, ``nNegChoice`` -> ``n-neg-choice``, ``dbCheckpoint0val`` -> ``db-checkpoint0val``,
    ``pretrainedCNNs`` -> ``pretrained-cnns``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", name.replace("CNNs", "Cnns")).lower()


def warn_deprecated(old: str, new: str) -> None:
    """The one message an old spelling prints (stderr), naming the new one."""
    print(f"matnet: deprecated: {old}: use {new} (the old spelling goes in the next release)", file=sys.stderr)


class Deprecated(argparse.Action):
    """An old flag kept for one release: warns naming ``new``, then stores its value
    (or ``value`` for a flag without argument) to the new flag's ``dest``."""

    def __init__(self, option_strings, dest, new: str = "", value=None, **kw):
        self.new, self.value = new, value
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        warn_deprecated(option_string, self.new)
        setattr(namespace, self.dest, self.value if self.nargs == 0 else values)


def deprecated(p, old: str, new: str, dest: str, value=None, **kw) -> None:
    """Register ``old`` as a hidden spelling of ``new`` (same ``dest``); ``value`` set:
    a flag without argument that stores it."""
    if value is not None:
        kw["nargs"] = 0
    p.add_argument(old, action=Deprecated, new=new, dest=dest, value=value, help=argparse.SUPPRESS,
                   default=argparse.SUPPRESS, **kw)


class _UseGPU(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, _USE_GPU[values])


def add_net(p, help: str = "network file (anything matnet.load_net reads: .mat released/checkpoint/MatConvNet, "
                           ".safetensors)", required: bool = True) -> None:
    p.add_argument("--net", required=required, metavar="FILE", help=help)


def add_dataset(p, required: bool = True, help: str | None = None, flag: str = "--dataset",
                matlab: str | None = None, dest: str = "dataset", old: tuple[str, ...] = ()) -> None:
    """A dataset in one of the forms :func:`matnet.datasets.parse_dataset` reads; ``old``:
    deprecated spellings (a required flag and its old spellings form a required group,
    so that either satisfies it)."""
    flags = [flag] + ([matlab] if matlab else [])
    if required and old:
        p, required = p.add_mutually_exclusive_group(required=True), False
    p.add_argument(*flags, dest=dest, required=required, metavar="DATASET",
                   help=(help or "dataset") + f": {DATASET_FORMS}")
    for o in old:
        deprecated(p, o, flag, dest)


def add_root(p, help: str = "image root of a MATLAB-named or spec: dataset (default: localPaths' folder "
                            "of that dataset)", old: tuple[str, ...] = ("--dbRoot", "--db-root")) -> None:
    p.add_argument("--root", metavar="DIR", help=help)
    for o in old:
        deprecated(p, o, "--root", "root")


def add_spec_dir(p, help: str = "folder of the MATLAB-named datasets' specs (default: localPaths' dsetSpecDir)",
                 required: bool = False, old: tuple[str, ...] = ("--specDir",)) -> None:
    p.add_argument("--spec-dir", dest="spec_dir", metavar="DIR", required=required, help=help)
    for o in old:
        deprecated(p, o, "--spec-dir", "spec_dir")


def add_out(p, help: str, required: bool = False, default=None, metavar: str = "DIR") -> None:
    p.add_argument("--out", required=required, default=default, metavar=metavar, help=help)


def add_batch_size(p, default: int, help: str = "images per network batch") -> None:
    p.add_argument("--batch-size", "--batchSize", dest="batch_size", type=int, default=default, metavar="N",
                   help=f"{help} (default: %(default)s)")


def add_device(p, default: str | None = "auto", help: str = "where the network runs: auto (the GPU when one "
                                                             "exists), cpu or cuda") -> None:
    """``--device auto|cpu|cuda`` and its MATLAB spelling ``--useGPU true|false|auto``;
    the old ``--cpu`` flag means ``--device cpu``.  :func:`use_gpu` reads it."""
    shown = f" (default: {default})" if default else ""
    p.add_argument("--device", choices=DEVICES, default=default, help=f"{help}{shown}")
    p.add_argument("--useGPU", dest="device", choices=sorted(_USE_GPU), action=_UseGPU, default=argparse.SUPPRESS,
                   help="MATLAB spelling of --device: true = cuda, false = cpu, auto")
    deprecated(p, "--cpu", "--device cpu", "device", value="cpu")


def use_gpu(args):
    """``useGPU`` of the functions (None: auto, True, False) from ``--device``."""
    return {"auto": None, "cuda": True, "cpu": False, None: None}[getattr(args, "device", None)]


def add_num_threads(p, default: int | None = None, help: str = "image decoding threads",
                    old: tuple[str, ...] = ()) -> None:
    shown = f"default: {default}" if default is not None else "default: this process's share of the cores"
    p.add_argument("--num-threads", "--numThreads", dest="num_threads", type=int, default=default, metavar="N",
                   help=f"{help} ({shown})")
    for o in old:
        deprecated(p, o, "--num-threads", "num_threads", type=int)


def add_precision(p) -> None:
    p.add_argument("--precision", choices=["exact", "fast"], default="exact",
                   help="exact: float32 as MatConvNet (default); fast: bf16 trunk, float32 head (not in MATLAB)")


def add_memory_cap(p) -> None:
    p.add_argument("--memory-cap", "--memoryCap", dest="memory_cap", metavar="SIZE",
                   help="stream a database feature file larger than this (e.g. 8GB) instead of loading it "
                        "(default: when larger than half the available memory)")


def add_dims(p, help: str = "dimensionality to evaluate (repeatable; fewer than the network's output: "
                            "cropToDim + L2). Default: the full output", repeat: bool = True) -> None:
    p.add_argument("--dims", type=int, action="append" if repeat else "store", metavar="D", help=help)


def add_image_size(p, default: tuple[int, int], help: str) -> None:
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=default,
                   help=f"{help} (default: {default[0]} {default[1]})")
