"""The ``matnet`` command (also ``python -m matnet``).

Each subcommand lives in its own module under :mod:`matnet.commands` and exposes
``add_arguments(parser)`` and ``run(args) -> int``; register it in ``COMMANDS``.
Expected failures (a missing or malformed file, a bad option value: ``OSError`` and
``ValueError``, which ``MatFileError``, ``LayerError``, ``DbStructError``... derive
from) print ``matnet: error: <message>`` on stderr and exit with status 1, without a
traceback; argparse's usage errors exit with status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "selftest": ("matnet.commands.selftest", "build a small VGG-like SimpleNN, run it end to end, print its layer table"),
    "convert": ("matnet.commands.convert", "convert a network between .mat (v7.3, struct variant, v5) and native .safetensors"),
    "inspect": ("matnet.commands.inspect", "print a network file's layer table (name, type/class, weights, output size)"),
    "reference": ("matnet.commands.reference", "run a released network on a real dataset and compare with the published recall"),
    "evaluate": ("matnet.commands.evaluate", "evaluate a network on a VPR-folder, MSLS or dbStruct dataset: recall@N table, JSON record, plot"),
    "dataset": ("matnet.commands.dataset", "import a VPR-folder or MSLS dataset as dbStruct specs, or export a spec as a VPR folder"),
    "export": ("matnet.commands.export", "write a network as ONNX, TorchScript, or the weight files of Patch-NetVLAD/pytorch-NetVlad and hloc"),
    "train": ("matnet.commands.train", "trainWeakly with every option under its MATLAB name (also under torchrun)"),
    "features": ("matnet.commands.features", "serialAllFeats: a dataset's or a list's image representations to a .bin (also under torchrun)"),
    "report": ("matnet.commands.report", "compare two evaluations query by query: fixed/broken queries, McNemar's test, HTML"),
    "demo": ("matnet.commands.demo", "train and evaluate NetVLAD end to end on a synthetic dataset, offline, on the CPU"),
}

DESCRIPTION = """\
matnet: NetVLAD (Arandjelovic et al.) and MatConvNet's SimpleNN in PyTorch, without MATLAB.
Reads and writes the authors' released .mat networks, trains and evaluates with the
original's options and file formats."""

EPILOG = """\
examples:
  matnet demo --out runs/demo               # the whole pipeline on synthetic data, offline
  matnet inspect vd16_pitts30k_conv5_3_vlad_preL2_intra_white.mat
  matnet convert released.mat released.safetensors
  matnet export released.mat --format onnx netvlad.onnx --dims 4096
  matnet <command> --help                   # the options of one command

In Python: net = matnet.load_net(path) reads any of these network files."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="matnet", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"matnet {__version__}",
                        help="print matnet's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>", title="commands")
    for name, (module, help_) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip().replace("``", ""),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(_module=module)
        mod.add_arguments(p)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (OSError, ValueError) as e:
        print(f"matnet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("matnet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
