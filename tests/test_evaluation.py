"""evaluate_dataset's records (issue 24): result names carry the protocol and the search,
two networks with one file name never share files, --dims and --memory-cap refused before
any extraction, the time estimate from a measured batch (none on reuse), images_per_second
null on reuse, the record written last."""
import json
import shutil

import numpy as np
import pytest

from converters.network import load_net
from helpers.report_data import tiny_net_file, vpr_timed
from matnet import evaluation
from matnet.datasets import dbVPR
from matnet.evaluation import EvaluationError, evaluate_dataset, network_name, result_stem
from matnet.search import SearchOptions


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    vpr_timed(root / "vpr", n_db=12, n_q=4)
    tiny_net_file(root / "a" / "net.mat")
    return root


def run(data, out, netFile=None, log=None, **kw):
    netFile = netFile or data / "a" / "net.mat"
    lines = []
    rec = evaluate_dataset(load_net(netFile), dbVPR(data / "vpr", "test"), out, netFile.stem, netFile=netFile,
                           useGPU=False, batchSize=4, log=lines.append if log is None else log, **kw)
    return rec, "\n".join(map(str, lines))


def test_result_stem():
    assert result_stem("net", "tokyo247", "matlab") == "net_tokyo247_matlab"
    assert result_stem("net", "tokyo247", "vpr", "IVF64,PQ8") == "net_tokyo247_vpr_IVF64-PQ8"
    assert result_stem("net", "tokyo247", "matlab", "flat", "fast") == "net_tokyo247_fast_matlab_flat"
    with pytest.raises(EvaluationError, match="unknown protocol 'x'"):
        result_stem("net", "d", "x")


def test_protocols_and_methods_keep_their_own_records(data, tmp_path):
    """A vpr run then a matlab run (then a faiss one) into one --out: three records, the
    features computed once."""
    out = tmp_path / "out"
    a, printed = run(data, out, protocol="vpr")
    assert "estimated extraction time" in printed and "measured on a batch of 4" in printed
    b, printed = run(data, out, protocol="matlab")
    assert "estimated extraction time" not in printed  # both feature files reused
    run(data, out, protocol="matlab", search=SearchOptions("flat"))
    names = sorted(p.name for p in out.glob("*_recall.json"))
    assert names == ["net_vpr_test_matlab_flat_recall.json", "net_vpr_test_matlab_recall.json",
                     "net_vpr_test_vpr_recall.json"]
    assert json.loads((out / "net_vpr_test_vpr_recall.json").read_text())["protocol"] == "vpr"
    assert sorted(p.name for p in out.glob("*.bin")) == ["net_vpr_test_db.bin", "net_vpr_test_q.bin"]
    # case 10: speed only from an extraction actually run
    assert a["images_per_second"] > 0 and a["images_extracted"] == 16 and not a["features_reused"]
    assert b["images_per_second"] is None and b["extract_seconds"] is None and b["features_reused"]


def test_two_networks_with_one_file_name(data, tmp_path):
    """Cases 11 and 1 (one --out): a/net.mat and b/net.mat overwrote each other's features
    and results; now the second is named net-<hash> and both keep theirs."""
    out = tmp_path / "out"
    other = tiny_net_file(tmp_path / "b" / "net.mat")
    net_b = load_net(other)
    for l in net_b.layers:  # a different network under the same file name
        for w in l.weights:
            w.data.mul_(-1.0) if w.ndim > 1 else None
    from converters.network import save_net
    save_net(net_b, other)
    ra, _ = run(data, out)
    rb, printed = run(data, out, netFile=other)
    assert ra["network"] == "net" and rb["network"].startswith("net-") and len(rb["network"]) == 12
    assert "another network file named net" in printed
    assert (out / f"{rb['network']}_vpr_test_matlab_recall.json").is_file()
    assert (out / "net_vpr_test_matlab_recall.json").is_file()
    fa = np.fromfile(out / "net_vpr_test_q.bin", "<f4")
    fb = np.fromfile(out / f"{rb['network']}_vpr_test_q.bin", "<f4")
    assert fa.shape == fb.shape and not np.allclose(fa, fb)
    # each finds its own name (and features) again
    again, printed = run(data, out)
    assert again["network"] == "net" and again["features_reused"]
    assert network_name(out, "net", other) == rb["network"]


@pytest.mark.parametrize("dims", [[-5], [0], [33], [4096], [8, 40]])
def test_dims_outside_the_descriptor_refused_before_extraction(data, tmp_path, dims):
    """Case 5 and the records item: the tiny network gives 32 values."""
    out = tmp_path / "out"
    bad = next(d for d in dims if not 1 <= d <= 32)
    with pytest.raises(EvaluationError, match=rf"--dims {bad}: must be between 1 and 32, the length of net's "
                                              r"descriptor \(32 values\)"):
        run(data, out, dims=dims)
    assert not list(out.glob("*.bin*")) and not list(out.glob("*_recall.*"))


def test_dims_full_and_cropped_recorded_as_run(data, tmp_path):
    rec, printed = run(data, tmp_path / "out", dims=[32, 8])
    assert [(r["dims"], r["cropToDim"]) for r in rec["results"]] == [(32, 0), (8, 8)]
    assert "32-D (full)" in printed and "8-D (cropToDim 8)" in printed


@pytest.mark.parametrize("cap, message", [
    ("0", r"--memory-cap 0: memory size must be positive"),
    ("-1GB", r"--memory-cap -1GB: cannot read memory size"),
    ("lots", r"--memory-cap lots: cannot read memory size 'lots'"),
    ("1", r"--memory-cap 1: too small to search 4 queries of 32 values: .*needs at least"),
])
def test_memory_cap_validated_before_extraction(data, tmp_path, cap, message):
    """Case 13: refused only after the whole extraction (or a MemoryError traceback)."""
    out = tmp_path / "out"
    with pytest.raises(EvaluationError, match=message):
        run(data, out, search=SearchOptions(memoryCap=cap))
    assert not list(out.glob("*.bin*"))


def test_record_written_last(data, tmp_path, monkeypatch):
    """Case 9: killed between the record and the plot, the new record stood beside the
    previous run's plot.  Now the plot (and predictions) come first and the previous
    record is removed before them: an interrupted run leaves no record."""
    out = tmp_path / "out"
    run(data, out)
    rec_fn = out / "net_vpr_test_matlab_recall.json"
    assert rec_fn.is_file()

    def killed(*a, **k):
        raise KeyboardInterrupt("killed while plotting")
    monkeypatch.setattr(evaluation, "plot_recall_at_n", killed)
    with pytest.raises(KeyboardInterrupt):
        run(data, out, dims=[8])
    assert not rec_fn.exists()
    monkeypatch.undo()
    rec, _ = run(data, out, dims=[8])
    assert json.loads(rec_fn.read_text())["results"][0]["dims"] == 8
    assert rec_fn.stat().st_mtime_ns >= (out / "net_vpr_test_matlab_recall.png").stat().st_mtime_ns


def test_options_object_or_keywords(tmp_path):
    """evaluate_dataset takes EvaluationOptions or its fields as keywords; an unknown
    keyword is refused, naming it, before anything runs."""
    from matnet.evaluation import EvaluationOptions
    o = EvaluationOptions(protocol="vpr").replace(savePredictions=5)
    assert (o.protocol, o.savePredictions, o.batchSize) == ("vpr", 5, 16)
    with pytest.raises(TypeError, match="unknown option.*savePrediction\\b"):
        evaluate_dataset(None, None, tmp_path, "net", savePrediction=5)
    assert not any(tmp_path.iterdir())
def test_changed_images_are_not_reused(data, tmp_path):
    """Case 2 through evaluate: an image replaced under its name (new size and time) makes
    the features be computed again, and the log says what reuse checks."""
    import os
    root = tmp_path / "copy"
    shutil.copytree(data / "vpr", root)
    out = tmp_path / "out"

    def go():
        netFile = data / "a" / "net.mat"
        lines = []
        rec = evaluate_dataset(load_net(netFile), dbVPR(root, "test"), out, "net", netFile=netFile,
                               useGPU=False, batchSize=4, log=lines.append)
        return rec, "\n".join(map(str, lines))
    go()
    rec, printed = go()
    assert rec["features_reused"] and "(names, sizes, modification times), reused" in printed
    first = sorted((root / "images" / "test" / "queries").iterdir())[0]
    from PIL import Image
    Image.new("RGB", (64, 48), (200, 10, 10)).save(first, format="JPEG", quality=80)
    st = os.stat(first)
    os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    rec, printed = go()
    assert not rec["features_reused"] and rec["images_extracted"] == 4  # the queries' file again


@pytest.mark.parametrize("flags, message", [
    (["--dims", "4096"], "--dims 4096: must be between 1 and 32"),
    (["--dims", "-5"], "--dims -5: must be between 1 and 32"),
    (["--memory-cap", "lots"], "--memory-cap lots: cannot read memory size"),
])
def test_the_command_refuses_before_extraction(data, tmp_path, capsys, flags, message):
    """The same checks through `matnet evaluate`: exit 1, the option named, nothing extracted."""
    from matnet.cli import main
    out = tmp_path / "out"
    rc = main(["evaluate", "--net", str(data / "a" / "net.mat"), "--dataset", f"vpr:{data / 'vpr'}:test",
               "--out", str(out), "--device", "cpu", *flags])
    assert rc == 1 and message in capsys.readouterr().err
    assert not list(out.glob("*.bin*"))
