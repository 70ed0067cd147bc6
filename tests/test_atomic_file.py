"""converters.atomic_file: a target is replaced whole or left as it was; one temporary
pattern (``<name>.<pid>-<token>.matnet-tmp``), removed on error, found by one glob."""
import os
import re

import pytest

from converters import atomic_file
from converters.atomic_file import (GLOB, atomic_path, atomic_write, remove_stale_temporaries, temporary_name,
                                    temporary_regex, write_text)


def test_success_fsyncs_and_replaces(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    synced = []
    real = os.fsync
    monkeypatch.setattr(atomic_file.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    with atomic_write(target) as f:
        f.write(b"new content")
        tmp = f.name
        assert re.fullmatch(rf"out\.bin\.{os.getpid()}-[0-9a-f]+\.matnet-tmp", os.path.basename(tmp))
        assert target.read_bytes() == b"old"  # nothing visible before the block ends
    assert target.read_bytes() == b"new content" and synced
    assert not list(tmp_path.glob(GLOB))


@pytest.mark.parametrize("writer", ["file", "path"])
def test_error_leaves_target_untouched_and_no_temporary(tmp_path, writer):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        if writer == "file":
            with atomic_write(target, "w") as f:
                f.write("half")
                raise RuntimeError("disk full")
        else:
            with atomic_path(target) as tmp:
                tmp.write_text("half")
                raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert not list(tmp_path.glob(GLOB))


def test_path_writer_and_text(tmp_path):
    with atomic_path(tmp_path / "a.txt") as tmp:
        assert tmp.parent == tmp_path and not tmp.exists()
        tmp.write_text("via path")
    write_text(tmp_path / "b.txt", "via text")
    assert (tmp_path / "a.txt").read_text() == "via path" and (tmp_path / "b.txt").read_text() == "via text"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "a.txt", "ab"):
            pass


def test_remove_stale_temporaries_only_of_that_output(tmp_path):
    target = tmp_path / "net[1].mat"  # glob's special characters taken literally
    stale = [temporary_name(target), target.with_name("net[1].mat.999-deadbeef.matnet-tmp")]
    others = [temporary_name(tmp_path / "net[1].mat.partial"), temporary_name(tmp_path / "other.mat"),
              tmp_path / "net[1].mat", tmp_path / "net[1].mat.tmp"]
    for p in stale + others:
        p.write_bytes(b"x")
    assert sorted(remove_stale_temporaries(target)) == sorted(stale)
    assert all(p.exists() for p in others) and not any(p.exists() for p in stale)
    assert re.fullmatch(temporary_regex(r"a\.bin(\.partial)?"), "a.bin.partial.12-0f.matnet-tmp")
    assert not re.fullmatch(temporary_regex(r"a\.bin"), "a.bin.partial.12-0f.matnet-tmp")


def test_no_hand_written_temporaries_left():
    """Every temp-then-rename write goes through atomic_file (no other temporary names, no
    os.replace/rename of a temporary outside it)."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for pkg in ("matnet", "converters", "reference"):
        for f in (root / pkg).rglob("*.py"):
            if f.name == "atomic_file.py":
                continue
            for i, line in enumerate(f.read_text().splitlines(), 1):
                if re.search(r"""\.tmp\b["'.]|mkstemp|NamedTemporaryFile|\bunique_tmp\b""", line):
                    offenders.append(f"{f.relative_to(root)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_atomic_write_without_replace_never_replaces(tmp_path):
    """replace=False (issue 24, case 6): a file that exists, or appears while writing, is
    kept; FileExistsError names it and no temporary is left."""
    from converters.atomic_file import atomic_write
    target = tmp_path / "spec.mat"
    with pytest.raises(FileExistsError, match="spec.mat: the file already exists"):
        with atomic_write(target, replace=False) as f:
            f.write(b"mine")
            target.write_bytes(b"theirs")  # another run, meanwhile
    assert target.read_bytes() == b"theirs" and not list(tmp_path.glob("*.matnet-tmp"))
    target.unlink()
    with atomic_write(target, replace=False) as f:
        f.write(b"mine")
    assert target.read_bytes() == b"mine"
