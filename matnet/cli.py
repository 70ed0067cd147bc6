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
import os
import sys

from . import __version__

# group -> {subcommand: (module, one-line help)}, in the order `matnet --help` lists them
GROUPS: dict[str, dict[str, tuple[str, str]]] = {
    "use": {
        "demo": ("matnet.commands.demo", "train and evaluate NetVLAD on synthetic data, offline, on the CPU"),
        "evaluate": ("matnet.commands.evaluate", "recall@N of a network on a dataset: table, JSON record, plot"),
        "features": ("matnet.commands.features", "serialAllFeats: image representations to a .bin (also torchrun)"),
        "report": ("matnet.commands.report", "compare two evaluations query by query (fixed, broken, McNemar)"),
    },
    "data": {
        "dataset": ("matnet.commands.dataset", "import VPR-folder or MSLS datasets as specs; export one as a VPR folder"),
    },
    "train": {
        "train": ("matnet.commands.train", "trainWeakly with every MATLAB option (also under torchrun)"),
    },
    "inspect/convert/export": {
        "inspect": ("matnet.commands.inspect", "a network file's layer table (name, type, weights, output size)"),
        "convert": ("matnet.commands.convert", "a network between .mat (v7.3, struct, v5) and .safetensors"),
        "export": ("matnet.commands.export", "a network as ONNX, TorchScript, Patch-NetVLAD/pytorch-NetVlad or hloc"),
    },
    "check": {
        "selftest": ("matnet.commands.selftest", "build a small SimpleNN and run it end to end (no data needed)"),
        "reference": ("matnet.commands.reference", "a released network on a real dataset vs the published recall"),
    },
}
# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {name: v for group in GROUPS.values() for name, v in group.items()}

DESCRIPTION = """\
matnet: NetVLAD (Arandjelovic et al.) and MatConvNet's SimpleNN in PyTorch, without MATLAB.
Reads and writes the authors' released .mat networks, trains and evaluates with the
original's options and file formats."""


def _command_list() -> str:
    width = max(map(len, COMMANDS)) + 2
    lines = ["commands:"]
    for group, commands in GROUPS.items():
        lines.append(f"  {group}:")
        lines += [f"    {name:<{width}}{help_}" for name, (_, help_) in commands.items()]
    return "\n".join(lines)


EPILOG = """\
examples:
  matnet demo --out runs/demo               # the whole pipeline on synthetic data, offline
  matnet inspect vd16_pitts30k_conv5_3_vlad_preL2_intra_white.mat
  matnet evaluate --net released.mat --dataset pitts30k_test --root ~/Databases/Pittsburgh
  matnet export released.mat --format onnx netvlad.onnx --dims 4096
  matnet <command> --help                   # the options of one command

Every command and flag: README, section "Commands", and docs/commands.md.
In Python: net = matnet.load_net(path) reads any of these network files."""


def build_parser() -> argparse.ArgumentParser:
    """The whole parser.  Imports each command module for its ``add_arguments``: these
    import nothing heavy at module level (torch, numpy and matnet's pipeline load when a
    command runs), so ``--help`` answers at once."""
    parser = argparse.ArgumentParser(prog="matnet", usage="%(prog)s [-h] [--version] <command> ...",
                                     description=DESCRIPTION + "\n\n" + _command_list(),
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"matnet {__version__}",
                        help="print matnet's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>",
                                help=argparse.SUPPRESS)  # listed by group in the description
    for name, (module, help_) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, prog=f"matnet {name}", description=(mod.__doc__ or help_).strip().replace("``", ""),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(_module=module)
        mod.add_arguments(p)
    return parser


def under_torchrun() -> bool:
    """A rank of a multi-process torchrun job (torchrun sets these variables)."""
    return "TORCHELASTIC_RUN_ID" in os.environ and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def _first_failure() -> bool:
    """Under torchrun: whether this rank is the first of its machine's ranks to fail.
    The ranks share their parent, torchrun's agent, and the first to create the marker
    file ``<tmp>/matnet-error-<agent pid>-<run id>`` wins; a marker older than the agent
    (left by another job) is replaced."""
    import tempfile
    ppid = os.getppid()
    marker = os.path.join(tempfile.gettempdir(), f"matnet-error-{ppid}-{os.environ.get('TORCHELASTIC_RUN_ID')}-"
                          f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}")
    for _ in range(2):
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return True
        except FileExistsError:
            try:
                stale = os.stat(marker).st_mtime < os.stat(f"/proc/{ppid}").st_ctime
            except OSError:
                stale = False
            if not stale:
                return False
            try:
                os.remove(marker)
            except OSError:
                return False
        except OSError:
            return True  # no temporary folder: print rather than stay silent
    return False


def report_error(error) -> None:
    """``matnet: error: <message>`` on stderr.  Under torchrun only the first rank of the
    machine that fails prints it: the other ranks' errors are consequences (a peer died,
    a collective failed on rank 0, the same bad input seen by every rank), so the cause
    is the last line, alone, before torchrun's own report of the failed job."""
    if under_torchrun() and not _first_failure():
        return
    print(f"matnet: error: {error}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    """Run one command; expected failures (OSError, ValueError, matnet.distributed's
    DistributedError) are reported by :func:`report_error` with exit status 1."""
    args = build_parser().parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (OSError, ValueError) as e:
        report_error(e)
        return 1
    except RuntimeError as e:
        distributed = sys.modules.get("matnet.distributed")
        if distributed is None or not isinstance(e, distributed.DistributedError):
            raise
        report_error(e)
        return 1
    except KeyboardInterrupt:
        print("matnet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
