"""file_lock: mutual exclusion between processes, no lock file left, a dead holder's file reused."""
import multiprocessing as mp
import os
import time

from matnet.train.file_lock import file_lock


def _worker(lock, log, i):
    for _ in range(3):
        with file_lock(lock):
            with open(log, "a") as f:
                f.write(f"start {i}\n")
            time.sleep(0.02)
            with open(log, "a") as f:
                f.write(f"end {i}\n")


def test_processes_hold_the_lock_one_at_a_time(tmp_path):
    lock, log = tmp_path / "x.bin.lock", tmp_path / "log"
    ctx = mp.get_context("fork")
    ps = [ctx.Process(target=_worker, args=(lock, log, i)) for i in range(3)]
    [p.start() for p in ps]
    [p.join(60) for p in ps]
    assert all(p.exitcode == 0 for p in ps)
    lines = log.read_text().split("\n")[:-1]
    assert len(lines) == 18
    for a, b in zip(lines[::2], lines[1::2]):  # every start is followed by the same process's end
        assert a.startswith("start") and b == a.replace("start", "end")
    assert not lock.exists()  # the last holder deleted it


def test_a_lock_file_left_by_a_killed_holder_is_reused(tmp_path):
    lock = tmp_path / "x.bin.lock"
    lock.write_bytes(b"")  # what SIGKILL leaves (the kernel drops the lock itself)
    with file_lock(lock):
        assert lock.exists()
    assert not lock.exists()
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)  # someone else's open descriptor does not block us
    os.close(fd)
    with file_lock(lock):
        pass
