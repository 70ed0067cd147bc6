"""`matnet evaluate` end to end on datasets written here: the recall in its JSON record
equals a brute-force recall computed in the test from the same features, under both
protocols (matlab: Tokyo 24/7's panorama NMS; vpr: plain kNN within 25 m)."""
import json

import numpy as np
import pytest

from converters.bin_features import read_bin
from converters.dbstruct import dbstruct_fields, save_dbstruct
from converters.network import save_net
from helpers.dataset_makers import tiny_jpeg
from helpers.report_data import first_per_panorama
from matnet.cli import main as cli
from matnet.datasets import parse_dataset
from matnet.recall_at_n import RECALL_NS, sample_queries
from helpers.released_format import OUT, released_format_net

N_PANO, N_Q = 4, 7


def tokyo_like(root, specs):
    """tokyo247.mat with 4 panoramas x 12 cutouts 10 m apart and 7 queries (one 1 km away)."""
    rng = np.random.default_rng(11)
    db_fns, utm_db = [], []
    for p in range(N_PANO):
        for t in range(12):
            fn = f"03814/p{p}/{'P' * 20}{p:02d}_012_{30 * t:03d}.jpg"
            tiny_jpeg(root / "images" / fn, 100 * p + t, size=(16, 20))
            db_fns.append(fn)
            utm_db.append((381000 + 10.0 * p, 3946000.0))
    q_fns = [f"{j:05d}.jpg" for j in range(N_Q)]
    for j, fn in enumerate(q_fns):
        tiny_jpeg(root / "query" / fn, 1000 + j, size=(16, 20))
    utm_db = np.array(utm_db).T
    utm_q = np.stack([381000 + rng.uniform(-5, 35, N_Q), np.full(N_Q, 3946000.0)])
    utm_q[1, -1] += 1000
    specs.mkdir()
    save_dbstruct(specs / "tokyo247.mat", dbstruct_fields("test", db_fns, utm_db, q_fns, utm_q))
    return utm_db, utm_q


def brute_force_recall(dbF, qF, utm_db, utm_q, ns, panorama=None):
    """Rank every database image by squared L2 (stable); with ``panorama``, keep only the
    first image of each panorama; recall@N = a positive (<= 25 m) among the first N."""
    hits = np.zeros(len(ns))
    for j in range(len(qF)):
        order = list(np.argsort(((dbF - qF[j]) ** 2).sum(1), kind="stable"))
        if panorama is not None:
            order = first_per_panorama(order, panorama)
        pos = ((utm_db[:, order] - utm_q[:, [j]]) ** 2).sum(0) <= 625
        first = np.flatnonzero(pos)
        hits += [first.size > 0 and first[0] < n for n in ns]
    return hits / len(qF)


def test_evaluate_both_protocols_equal_brute_force(tmp_path, capsys):
    root, specs, out = tmp_path / "Tokyo247", tmp_path / "specs", tmp_path / "out"
    utm_db, utm_q = tokyo_like(root, specs)
    net_file = save_net(released_format_net().eval(), tmp_path / "tiny.mat")
    spec = f"spec:{specs / 'tokyo247.mat'}"
    pano = np.arange(N_PANO * 12) // 12
    seen = {}
    for protocol in ("matlab", "vpr"):
        assert cli(["evaluate", "--net", str(net_file), "--dataset", spec, "--root", str(root), "--out", str(out),
                    "--protocol", protocol, "--dims", str(OUT), "--dims", "5", "--cpu", "--batch-size", "4"]) == 0
        printed = capsys.readouterr().out
        rec = json.loads((out / f"tiny_tokyo247_{protocol}_recall.json").read_text())
        assert rec["protocol"] == protocol and rec["recallNs"] == RECALL_NS and rec["num_queries"] == N_Q
        assert (out / f"tiny_tokyo247_{protocol}_recall.png").stat().st_size > 1000
        dbF, qF = read_bin(out / "tiny_tokyo247_db.bin", D=OUT), read_bin(out / "tiny_tokyo247_q.bin", D=OUT)
        for res, crop in zip(rec["results"], (0, 5)):
            d, q = (dbF, qF) if not crop else (dbF[:, :5] / np.linalg.norm(dbF[:, :5], axis=1, keepdims=True),
                                               qF[:, :5] / np.linalg.norm(qF[:, :5], axis=1, keepdims=True))
            want = brute_force_recall(d, q, utm_db, utm_q, RECALL_NS, pano if protocol == "matlab" else None)
            np.testing.assert_allclose(res["recall"], want, atol=1e-12)
            assert res["cropToDim"] == crop
            seen[protocol, crop] = want
        assert "reused" in printed if protocol == "vpr" else "estimated extraction time" in printed
        assert "   N  recall %  queries" in printed and "\n  20 " in printed
    assert any(not np.array_equal(seen["matlab", c], seen["vpr", c]) for c in (0, 5))  # the NMS mattered
    # the same set as a VPR folder, through the export: the vpr protocol gives the same numbers
    assert cli(["dataset", "export", "--dataset", f"spec:{specs / 'tokyo247.mat'}", "--root", str(root),
                "--out", str(tmp_path / "vpr")]) == 0
    assert cli(["evaluate", "--net", str(net_file), "--dataset", f"vpr:{tmp_path / 'vpr'}:test", "--out", str(out),
                "--protocol", "vpr", "--dims", "5", "--device", "cpu"]) == 0
    rec = json.loads((out / "tiny_vpr_test_vpr_recall.json").read_text())
    np.testing.assert_allclose(rec["results"][0]["recall"], seen["vpr", 5], atol=1e-12)
    # ... and with the panorama ids of its names, the matlab protocol gives Tokyo 24/7's numbers
    assert cli(["evaluate", "--net", str(net_file), "--dataset", f"vpr:{tmp_path / 'vpr'}:test", "--out", str(out),
                "--panorama-nms", "--dims", "5", "--device", "cpu"]) == 0
    rec = json.loads((out / "tiny_vpr_test_matlab_recall.json").read_text())
    assert rec["protocol"] == "matlab" and rec["search_postprocess"] == "dbVPR"
    np.testing.assert_allclose(rec["results"][0]["recall"], seen["matlab", 5], atol=1e-12)


def test_evaluate_bad_inputs(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown dataset; expected .*spec:FILE.mat, vpr:ROOT"):
        parse_dataset("folder/without/kind")
    with pytest.raises(ValueError, match="give --root"):
        parse_dataset("spec:x.mat")
    with pytest.raises(ValueError, match="apply to vpr: datasets only"):
        parse_dataset("msls:/nowhere", panoramaNMS=True)
    root, specs = tmp_path / "Tokyo247", tmp_path / "specs"
    tokyo_like(root, specs)
    (root / "query" / "00003.jpg").unlink()
    net_file = save_net(released_format_net().eval(), tmp_path / "tiny.mat")
    assert cli(["evaluate", "--net", str(net_file), "--dataset", f"spec:{specs / 'tokyo247.mat'}", "--root",
                str(root), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "0 database and 1 query images of tokyo247 are missing" in err and "00003.jpg" in err
    assert not (tmp_path / "o" / "tiny_tokyo247_db.bin").exists()


def test_evaluate_search_methods_report_their_check(tmp_path, capsys):
    """--search-method flat is exact; ivfpq and an index_factory string report their recall
    next to exact search's on a query sample, which equals a brute-force recall; features
    are extracted once and reused."""
    root, specs, out = tmp_path / "Tokyo247", tmp_path / "specs", tmp_path / "out"
    utm_db, utm_q = tokyo_like(root, specs)
    net_file = save_net(released_format_net().eval(), tmp_path / "tiny.mat")
    base = ["evaluate", "--net", str(net_file), "--dataset", f"spec:{specs / 'tokyo247.mat'}", "--root", str(root),
            "--out", str(out), "--device", "cpu", "--batchSize", "8"]
    assert cli(base) == 0
    exact = json.loads((out / "tiny_tokyo247_matlab_recall.json").read_text())
    assert exact["search_method"] == "exact" and "search_check" not in exact["results"][0]
    dbF, qF = read_bin(out / "tiny_tokyo247_db.bin", D=OUT), read_bin(out / "tiny_tokyo247_q.bin", D=OUT)
    pano = np.arange(N_PANO * 12) // 12
    np.testing.assert_allclose(exact["results"][0]["recall"],
                               brute_force_recall(dbF, qF, utm_db, utm_q, RECALL_NS, pano), atol=1e-12)
    capsys.readouterr()

    assert cli(base + ["--search-method", "flat", "--search-check-sample", "5"]) == 0
    printed = capsys.readouterr().out
    assert "reused" in printed and "search Flat vs exact on 5 sampled queries" in printed
    flat = json.loads((out / "tiny_tokyo247_matlab_flat_recall.json").read_text())
    assert flat["search_method"] == "flat" and flat["search_params"] == {}
    np.testing.assert_allclose(flat["results"][0]["recall"], exact["results"][0]["recall"], atol=1e-12)
    check = flat["results"][0]["search_check"]
    assert check["index"] == "Flat" and check["queries"] == 5 and check["recallNs"] == RECALL_NS
    assert check["approximate"] == check["exact"]
    sample = sample_queries(N_Q, 5)
    np.testing.assert_allclose(check["exact"], brute_force_recall(dbF, qF[sample], utm_db, utm_q[:, sample],
                                                                  RECALL_NS, pano), atol=1e-12)
    assert (out / "tiny_tokyo247_matlab_flat_recall.png").stat().st_size > 1000
    assert json.loads((out / "tiny_tokyo247_matlab_recall.json").read_text()) == exact  # the exact record is kept

    for method, params, index, name in (("ivfpq", "nlist=4, m=3,nbits=4,nprobe=1", "IVF4,PQ3x4", "ivfpq"),
                                        ("IVF2,Flat", "nprobe=2", "IVF2,Flat", "IVF2-Flat")):
        assert cli(base + ["--search-method", method, "--search-params", params]) == 0
        rec = json.loads((out / f"tiny_tokyo247_matlab_{name}_recall.json").read_text())
        check = rec["results"][0]["search_check"]
        assert check["index"] == index and check["queries"] == N_Q  # default 1000: every query
        assert check["exact"] == exact["results"][0]["recall"]
        np.testing.assert_allclose(check["approximate"], rec["results"][0]["recall"], atol=1e-12)
        if method == "IVF2,Flat":  # both cells probed: exhaustive
            assert check["approximate"] == check["exact"]
    assert "search ivfpq, 12-D: faiss index IVF4,PQ3x4" in capsys.readouterr().out


@pytest.mark.parametrize("options,message", [
    (["--search-method", "IVF4,PQ5"], "searchMethod 'IVF4,PQ5': faiss cannot build index 'IVF4,PQ5' for 12-D"),
    (["--search-method", "Nonsense"], "searchMethod 'Nonsense'"),
    (["--search-method", "ivfpq", "--search-params", "nlist=100,nbits=4"],
     "index 'IVF100,PQ1x4' trains k-means of 100 IVF cells (nlist) on 48 database vectors"),
    (["--search-method", "HNSW8", "--search-params", "nprobe=4"], "nprobe does not apply to index 'HNSW8'"),
    (["--search-method", "ivfpq", "--search-params", "nlist=abc"], "'nlist=abc': nlist must be an integer, got 'abc'"),
    (["--search-method", "ivfpq", "--search-params", "nprob=3"], "unknown parameter 'nprob'"),
    (["--search-method", "ivfpq", "--search-params", "nlist"], "'nlist' is not NAME=INTEGER"),
    (["--search-method", "flat", "--search-check-sample", "-1"], "--search-check-sample -1: must be >= 0"),
    (["--search-params", "nprobe=4"], "not to exact search"),
])
def test_evaluate_bad_search_options_fail_before_extraction(tmp_path, capsys, options, message):
    root, specs, out = tmp_path / "Tokyo247", tmp_path / "specs", tmp_path / "out"
    tokyo_like(root, specs)
    net_file = save_net(released_format_net().eval(), tmp_path / "tiny.mat")
    assert cli(["evaluate", "--net", str(net_file), "--dataset", f"spec:{specs / 'tokyo247.mat'}", "--root",
                str(root), "--out", str(out), "--device", "cpu"] + options) == 1
    err = capsys.readouterr().err
    assert err.startswith("matnet: error: ") and message in err
    assert not out.exists() or not list(out.glob("*.bin"))  # nothing extracted
