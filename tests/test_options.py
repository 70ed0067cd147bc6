"""The command line's grammar (matnet/commands/options.py and every command's options):
kebab-case flags, MATLAB spellings only for MATLAB options, one flag per concept across
commands, every old spelling still read with a message naming the new one, and
``--help`` / ``--version`` answering without importing torch or numpy."""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from matnet.cli import build_parser, main
from matnet.commands.options import CONCEPTS, Deprecated, kebab
from matnet.train.opts import TrainWeaklyOpts

ROOT = Path(__file__).resolve().parents[1]
KEBAB = re.compile(r"^--[a-z0-9]+(-[a-z0-9]+)*$")
# MATLAB option names a flag may also be spelled as (trainWeakly's options and arguments,
# serialAllFeats' batchSize/useGPU/numThreads, testFromFn's memoryCap, addPCA's pcaDim,
# localPaths' pretrainedCNNs)
MATLAB = set(TrainWeaklyOpts.names()) | {"dbTrain", "dbVal", "batchSize", "useGPU", "numThreads", "memoryCap",
                                         "pcaDim", "pretrainedCNNs", "nEpoch", "learningRate"}
# spellings of the peers' scripts (VPR-methods-evaluation), kept as aliases by issue 21
PEER = {"--num_preds_to_save", "--save_only_wrong_preds"}


def parsers():
    """(command name, parser) of every command and sub-command."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        yield name, p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                yield from ((f"{name} {n}", q) for n, q in a.choices.items())


def visible(p):
    return [a for a in p._actions if a.option_strings and not isinstance(a, (argparse._HelpAction, Deprecated))]


def test_every_flag_follows_the_rule():
    for name, p in parsers():
        flags = {s for a in visible(p) for s in a.option_strings}
        for a in visible(p):
            first, *others = a.option_strings
            if a.option_strings == ["--useGPU"]:  # the MATLAB spelling of --device (values true/false/auto)
                assert a.dest == "device" and "--device" in flags, name
                continue
            assert KEBAB.match(first), f"matnet {name} {first}: not kebab-case"
            for other in others:
                if other in PEER or other == f"--no-{first[2:]}":  # BooleanOptionalAction's negative
                    continue
                assert other[2:] in MATLAB, f"matnet {name} {other}: an alias that is not a MATLAB option"
                assert kebab(other[2:]) == first[2:], (name, other)
        helps = p.format_help()
        for a in visible(p):  # help shows both spellings
            assert all(s in helps for s in a.option_strings), (name, a.option_strings)


def test_one_flag_per_concept_across_commands():
    """A concept of CONCEPTS has the same flags in every command that has it, and a dest
    (what the option sets) is spelled the same in every command."""
    by_flag = {flag: c for c, (flag, _) in CONCEPTS.items()}
    spellings = {}
    for name, p in parsers():
        per_dest = {}
        for a in visible(p):
            per_dest.setdefault(a.dest, set()).update(a.option_strings)
            concept = by_flag.get(a.option_strings[0])
            if concept is not None:
                flag, matlab = CONCEPTS[concept]
                assert set(a.option_strings) <= {flag, matlab}, (name, a.option_strings)
                if matlab and concept != "device":
                    assert matlab in a.option_strings, f"matnet {name} {flag}: without its MATLAB spelling {matlab}"
        for dest, flags in per_dest.items():
            if dest.startswith("opt_"):
                dest = kebab(dest[4:]).replace("-", "_")
            spellings.setdefault(dest, {})[name] = frozenset(flags)
    for dest, by_command in spellings.items():
        assert len(set(by_command.values())) == 1, f"{dest} spelled differently: {by_command}"
    # the concepts every dataset command shares
    for command in ("features", "evaluate", "reference", "train", "dataset export"):
        flags = {s for a in visible(dict(parsers())[command]) for s in a.option_strings}
        assert {"--root", "--spec-dir"} <= flags, command


# (argv, dest, value): every spelling that disappeared is still read, with a message naming the new one
OLD = [
    (["features", "--net", "n", "--out", "o", "--spec", "d"], "dataset", "d", "--dataset"),
    (["features", "--net", "n", "--dataset", "d", "--out", "o", "--dbRoot", "r"], "root", "r", "--root"),
    (["features", "--net", "n", "--images", "l", "--out", "o", "--imPath", "r"], "root", "r", "--root"),
    (["features", "--net", "n", "--dataset", "d", "--out", "o", "--specDir", "s"], "spec_dir", "s", "--spec-dir"),
    (["evaluate", "--net", "n", "--dataset", "d", "--cpu"], "device", "cpu", "--device cpu"),
    (["reference", "--net", "n", "--dataset", "d", "--db-root", "r"], "root", "r", "--root"),
    (["train", "--db-train", "a", "--db-val", "b", "--dbRoot", "r"], "root", "r", "--root"),
    (["train", "--db-train", "a", "--db-val", "b", "--specDir", "s"], "spec_dir", "s", "--spec-dir"),
    (["train", "--db-train", "a", "--db-val", "b", "--dbValRoot", "v"], "val_root", "v", "--val-root"),
    (["dataset", "export", "--out", "o", "--spec", "s.mat"], "dataset", "s.mat", "--dataset"),
    (["demo", "--threads", "3"], "num_threads", 3, "--num-threads"),
    (["demo", "--epochs", "3"], "n_epoch", 3, "--n-epoch"),
    (["demo", "--images", "30"], "num_images", 30, "--num-images"),
    (["demo", "--queries", "9"], "num_queries", 9, "--num-queries"),
    (["demo", "--lr", "0.5"], "learning_rate", 0.5, "--learning-rate"),
    (["selftest", "--height", "50"], "height", 50, "--size H W"),
    (["selftest", "--width", "60"], "width", 60, "--size H W"),
]


@pytest.mark.parametrize("argv,dest,value,new", OLD, ids=[" ".join(o[0][:1] + o[0][-2:]) for o in OLD])
def test_old_spellings_still_work_with_a_message(argv, dest, value, new, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    old = argv[-1] if argv[-1].startswith("--") else argv[-2]
    assert f"matnet: deprecated: {old}: use {new}" in capsys.readouterr().err


def test_matlab_spellings_and_device():
    p = build_parser()
    a = p.parse_args(["features", "--net", "n", "--dataset", "d", "--out", "o", "--batchSize", "3", "--numThreads",
                      "2", "--useGPU", "false"])
    b = p.parse_args(["features", "--net", "n", "--dataset", "d", "--out", "o", "--batch-size", "3",
                      "--num-threads", "2", "--device", "cpu"])
    assert vars(a) == vars(b)
    for v, device in (("true", "cuda"), ("false", "cpu"), ("auto", "auto")):
        assert p.parse_args(["evaluate", "--net", "n", "--dataset", "d", "--useGPU", v]).device == device
    assert p.parse_args(["evaluate", "--net", "n", "--dataset", "d"]).device == "auto"


def test_export_format_names_match_the_writers():
    from matnet.commands.export import FORMAT_NAMES
    from matnet.export import FORMATS
    assert sorted(FORMATS) == list(FORMAT_NAMES)


def _matnet(*argv):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "matnet", *argv], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=60)
    return r, time.perf_counter() - t


def test_help_and_version_answer_at_once():
    """The parser imports neither torch nor numpy; --help, --version and every command's
    --help answer in under 0.5 s (median of 3 after a warm-up; the package alone takes
    several seconds to import torch)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = ("import sys; from matnet.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy', 'scipy', 'PIL', 'h5py') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
    _matnet("--version")  # warm-up (file system caches)
    for argv in (["--help"], ["--version"], *([c, "--help"] for c in dict(parsers()) if " " not in c)):
        runs = [_matnet(*argv) for _ in range(3)]
        assert all(r.returncode == 0 for r, _ in runs), runs[0][0].stderr
        assert statistics.median(t for _, t in runs) < 0.5, (argv, [t for _, t in runs])


def test_docs_commands_lists_every_flag():
    """docs/commands.md has a section per command listing each of its flags."""
    text = (ROOT / "docs" / "commands.md").read_text()
    for name, p in parsers():
        if name == "dataset":
            continue  # its sections are the sub-commands'
        head = f"### `matnet {name}` ("
        assert head in text, name
        section = text.split(head, 1)[1].split("\n### ", 1)[0]
        for a in visible(p):
            for flag in a.option_strings:
                assert f"`{flag}" in section, f"docs/commands.md: matnet {name} {flag}"
