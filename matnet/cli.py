"""The ``matnet`` command.  Each subcommand lives in its own module and exposes
``add_arguments(parser)`` and ``run(args) -> int``; register it in ``COMMANDS``."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "selftest": ("matnet.commands.selftest", "build a small VGG-like SimpleNN, run it end to end, print its layer table"),
    "convert": ("matnet.commands.convert", "convert a network between .mat (v5/v7.3) and native .safetensors"),
    "inspect": ("matnet.commands.inspect", "print a network file's layer table (name, type/class, weights, output size)"),
    "reference": ("matnet.commands.reference", "run a released network on a real dataset and compare with the published recall"),
    "demo": ("matnet.commands.demo", "train and evaluate NetVLAD end to end on a synthetic dataset, offline (< 5 min on 2 cores)"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="matnet", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
