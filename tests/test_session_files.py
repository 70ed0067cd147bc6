"""matnet.train.session_files: a checkpoint0 file is computed under its lock after the
leftovers of killed runs' writes of it are removed; an existing one is reused."""
from converters.atomic_file import GLOB as TEMPORARIES
from matnet.train import session_files
from matnet.train.opts import TrainWeaklyOpts


def test_checkpoint0_removes_stale_temporaries_then_computes(tmp_path, monkeypatch):
    out = tmp_path / "c0" / "train_q.bin"
    out.parent.mkdir()
    stale = out.with_name("train_q.bin.4242-deadbeef.matnet-tmp")
    stale.write_bytes(b"half a file")
    other = out.with_name("other.bin.4242-deadbeef.matnet-tmp")  # another output's: kept
    other.write_bytes(b"x")
    calls = []
    monkeypatch.setattr(session_files, "serial_feats", lambda net, p, fns, fn, o: (calls.append(fn),
                                                                                   out.write_bytes(b"\0" * 8)))
    session_files.checkpoint0_feats(None, "root/", ["a.jpg"], str(out), TrainWeaklyOpts())
    assert calls == [str(out)] and not stale.exists() and other.exists()
    session_files.checkpoint0_feats(None, "root/", ["a.jpg"], str(out), TrainWeaklyOpts())
    assert calls == [str(out)]  # complete: reused
    assert sorted(p.name for p in out.parent.glob(TEMPORARIES)) == [other.name]
