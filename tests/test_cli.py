"""The ``matnet`` command: ``python -m matnet``, --version, help text, errors on stderr with exit codes."""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import matnet
from converters.matfile import savemat
from matnet.cli import COMMANDS, GROUPS, build_parser, main
from matnet.commands.options import Deprecated
from helpers.released_net import released_net

ROOT = Path(__file__).resolve().parents[1]


def _run(*argv):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "matnet", *argv], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_python_m_matnet_version_and_errors(tmp_path):
    r = _run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"matnet {matnet.__version__}"
    bad = tmp_path / "broken.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 20)  # a MAT header cut short
    r = _run("inspect", str(bad))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith(f"matnet: error: {bad}") and "Traceback" not in r.stderr


def test_errors_exit_codes_in_process(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "absent.mat"), str(tmp_path / "o.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err == f"matnet: error: {tmp_path / 'absent.mat'}: no such file\n"
    src = savemat(tmp_path / "n.mat", {"net": released_net()})
    assert main(["convert", str(src), str(tmp_path / "o.onnx")]) == 1
    assert "unknown network file extension" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # usage errors: argparse's status 2
        main(["convert", str(src)])
    assert e.value.code == 2 and "the following arguments are required: OUT" in capsys.readouterr().err
    assert not (tmp_path / "o.onnx").exists()


def test_convert_chain_keeps_the_network(tmp_path, capsys):
    src = savemat(tmp_path / "n.mat", {"net": released_net()})
    ref = matnet.load_net(src)
    for out in ("a.safetensors", "b_struct.mat", "c.mat"):
        assert main(["convert", str(src), str(tmp_path / out)]) == 0
        back = matnet.load_net(tmp_path / out)
        for la, lb in zip(ref.layers, back.layers):
            assert la.name == lb.name and all((a == b).all() for a, b in zip(la.weights, lb.weights))
        src = tmp_path / out
    assert "-> " in capsys.readouterr().out


def test_every_command_and_option_has_help():
    parser = build_parser()
    assert "NetVLAD" in parser.description and "load_net" in parser.epilog
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(COMMANDS) == set(sub.choices)
    for name, p in sub.choices.items():
        assert COMMANDS[name][1], name
        assert p.description and not p.description.startswith('"""'), name
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, Deprecated)):
                continue
            assert action.help and action.help != argparse.SUPPRESS, f"matnet {name} {action.dest}: no help text"


def test_matnet_help_groups_the_commands():
    text = build_parser().format_help()
    assert list(GROUPS) == ["use", "data", "train", "inspect/convert/export", "check"]
    at = [text.index(f"  {g}:\n") for g in GROUPS]
    assert at == sorted(at)  # the groups in order, each command listed once, under its group, with one line
    for group, commands in GROUPS.items():
        for name, (_, line) in commands.items():
            rows = [r for r in text.splitlines() if r.startswith(f"    {name} ")]
            assert len(rows) == 1 and rows[0].split(None, 1)[1] == line
            assert at[list(GROUPS).index(group)] < text.index(rows[0])
    assert 'README, section "Commands"' in text and "docs/commands.md" in text


def test_under_torchrun_only_the_first_failing_rank_reports(tmp_path, monkeypatch, capsys):
    """report_error: every rank of a torchrun job shares its parent (the agent); the first
    to fail prints ``matnet: error: ...``, the others (whose errors follow from it) stay
    silent; outside torchrun every error is printed."""
    from matnet import cli
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    cli.report_error("alone")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test-run")
    monkeypatch.setenv("WORLD_SIZE", "2")
    cli.report_error("the cause")
    cli.report_error("rank 1: 'x' failed on rank 0: the cause")  # a second rank of the same job
    assert capsys.readouterr().err == "matnet: error: alone\nmatnet: error: the cause\n"
    assert len(list(tmp_path.glob("matnet-error-*"))) == 1


def test_torchrun_prints_the_error_once_before_its_report(tmp_path):
    """2 processes on gloo (CPU): both ranks fail on the same missing network; one line
    ``matnet: error: ...``, no worker traceback, then torchrun's own report."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TMPDIR=str(tmp_path), OMP_NUM_THREADS="1")
    (tmp_path / "list.txt").write_text("a.jpg\n")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "matnet", "features", "--net", str(tmp_path / "absent.mat"), "--images",
                        str(tmp_path / "list.txt"), "--out", str(tmp_path / "o.bin"), "--device", "cpu"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode != 0
    lines = r.stderr.splitlines()
    errors = [i for i, l in enumerate(lines) if l.startswith("matnet: error: ")]
    assert len(errors) == 1 and "absent.mat" in lines[errors[0]], r.stderr[-3000:]
    assert "Traceback" not in "\n".join(lines[:errors[0]])
    report = next(i for i, l in enumerate(lines) if "ChildFailedError" in l or "Root Cause" in l)
    assert errors[0] < report
