"""`matnet evaluate --save-predictions N`: the per-query CSV equals a top-N computed here by
brute force from the .bin files and the UTM positions (ids, distances, metres, correct
flags, the no-positive mark, Tokyo 24/7's conditions), under both protocols, with Tokyo
24/7's panorama NMS and TokyoTM's time filter; the recall recomputed from the CSV is the
JSON record's; too many predictions are refused before any extraction."""
import csv
import json

import numpy as np
import pytest

from helpers.report_data import N_PANO, N_Q, brute_force_top, tiny_net_file, tokyo_like, vpr_timed
from matnet.cli import main as cli
from matnet.datasets import dbVPR
from matnet.datasets.tokyo247 import TIME_OF_DAY
from matnet.recall_at_n import RECALL_NS, testFromFn

N = 5


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def evaluate(net, dataset, out, *extra, root=None):
    args = ["evaluate", "--net", str(net), "--dataset", dataset, "--out", str(out), "--device", "cpu",
            "--batch-size", "4", "--save-predictions", str(N), "--no-save-predictions-images", *extra]
    assert cli(args + (["--root", str(root)] if root else [])) == 0
    recs = sorted(out.glob("*_recall.json"))
    assert len(recs) == 1
    rec = json.loads(recs[0].read_text())
    return rec, out / rec["predictions_csv"]


def assert_csv_equals(rows, want, extra_check=None):
    by_q = {}
    for r in rows:
        by_q.setdefault(int(r["query_id"]), []).append(r)
    assert sorted(by_q) == list(range(len(want)))
    for q, top in enumerate(want):
        got = by_q[q]
        assert [int(r["rank"]) for r in got] == list(range(1, len(top) + 1))
        assert [int(r["db_id"]) for r in got] == [t[0] for t in top], q
        np.testing.assert_allclose([float(r["distance"]) for r in got], [t[1] for t in top], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose([float(r["meters"]) for r in got], [t[2] for t in top], atol=1e-3)
        assert [int(r["correct"]) for r in got] == [int(t[3]) for t in top], q
        if extra_check:
            extra_check(q, got)


def recall_from_csv(rows, nQ, ns):
    first = {}
    for r in rows:
        q = int(r["query_id"])
        if int(r["correct"]) and q not in first:
            first[q] = int(r["rank"])
    return [sum(1 for v in first.values() if v <= n) / nQ for n in ns]


@pytest.fixture(scope="module")
def tokyo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tokyo")
    utm_db, utm_q = tokyo_like(tmp / "Tokyo247", tmp / "specs")
    return tmp, utm_db, utm_q, tiny_net_file(tmp / "tiny.mat")


@pytest.mark.parametrize("protocol", ["matlab", "vpr"])
def test_csv_equals_brute_force_tokyo(tokyo, protocol):
    tmp, utm_db, utm_q, net = tokyo
    out = tmp / f"out_{protocol}"
    rec, csvFn = evaluate(net, f"spec:{tmp / 'specs' / 'tokyo247.mat'}", out, "--protocol", protocol,
                          root=tmp / "Tokyo247")
    rows = read_rows(csvFn)
    assert list(rows[0]) == ["query_id", "query", "rank", "db_id", "db_image", "distance", "meters", "correct",
                             "has_positive", "condition"]
    bins = sorted(out.glob("*_db.bin"))[0], sorted(out.glob("*_q.bin"))[0]
    pano = np.arange(N_PANO * 12) // 12
    want = brute_force_top(*bins, utm_db, utm_q, N, panorama=pano if protocol == "matlab" else None)
    if protocol == "matlab":
        assert len(want[0]) == N_PANO < N  # the NMS leaves one result per panorama

    def check(q, got):
        assert {r["query"] for r in got} == {f"query/{q:05d}.jpg"}
        assert all(r["db_image"] == f"images/03814/p{int(r['db_id']) // 12}/{'P' * 20}{int(r['db_id']) // 12:02d}_012_"
                   f"{30 * (int(r['db_id']) % 12):03d}.jpg" for r in got)
        assert {r["has_positive"] for r in got} == {"0" if q == N_Q - 1 else "1"}  # the query 1 km away
        assert {r["condition"] for r in got} == {TIME_OF_DAY[(q + 1) % 3]}
    assert_csv_equals(rows, want, check)
    assert not any(int(r["correct"]) for r in rows if int(r["query_id"]) == N_Q - 1)
    ns = [n for n in RECALL_NS if n <= N]
    np.testing.assert_allclose(recall_from_csv(rows, N_Q, ns), rec["results"][0]["recall"][:len(ns)], atol=1e-12)
    assert not any(out.glob("*_predictions")) and (out / rec["results"][0]["report_html"]).is_file()


def test_csv_time_filter_and_faiss_search(tmp_path):
    """TokyoTM's rule on a VPR folder with time stamps (matlab protocol): results taken at
    the query's month are dropped before the top-N; faiss' flat search records the same."""
    vpr_timed(tmp_path / "vpr")
    db = dbVPR(tmp_path / "vpr", "test", timeFilter=True)
    net = tiny_net_file(tmp_path / "tiny.mat")
    rec, csvFn = evaluate(net, f"vpr:{tmp_path / 'vpr'}:test", tmp_path / "o", "--time-filter")
    rows = read_rows(csvFn)
    bins = sorted((tmp_path / "o").glob("*_db.bin"))[0], sorted((tmp_path / "o").glob("*_q.bin"))[0]
    want = brute_force_top(*bins, db.utmDb, db.utmQ, N, t_db=db.dbTimeStamp, t_q=db.qTimeStamp)
    assert any(t != [] and db.dbTimeStamp[t[0][0]] != db.qTimeStamp[q] for q, t in enumerate(want))
    assert_csv_equals(rows, want)
    assert "condition" not in rows[0]
    far = np.sqrt(((db.utmQ[:, :, None] - db.utmDb[:, None, :]) ** 2).sum(0)).min(1) > 25
    assert far.sum() == 1  # the query 1 km away (ids follow the sorted names)
    assert all(r["has_positive"] == str(int(not far[int(r["query_id"])])) for r in rows)
    ns = [n for n in RECALL_NS if n <= N]
    np.testing.assert_allclose(recall_from_csv(rows, db.numQueries, ns), rec["results"][0]["recall"][:len(ns)])
    # the faiss method's own search is the one recorded (flat = exact here)
    rec2, csv2 = evaluate(net, f"vpr:{tmp_path / 'vpr'}:test", tmp_path / "o2", "--time-filter",
                          "--search-method", "flat")
    assert [r["db_id"] for r in read_rows(csv2)] == [r["db_id"] for r in rows]
    # Python: testFromFn(savePredictions=N) returns the same ids
    _, _, _, opts = testFromFn(db, str(bins[0]), str(bins[1]), savePredictions=N, verbose=False)
    ids = opts["predictions"]["ids"]
    assert [str(i) for i in ids[ids >= 0]] == [r["db_id"] for r in rows if r["db_id"]]


def test_too_many_predictions_refused_before_extraction(tokyo, capsys):
    tmp, _, _, net = tokyo
    out = tmp / "refused"
    assert cli(["evaluate", "--net", str(net), "--dataset", f"spec:{tmp / 'specs' / 'tokyo247.mat'}", "--root",
                str(tmp / "Tokyo247"), "--out", str(out), "--device", "cpu", "--num_preds_to_save", "101"]) == 1
    assert "--save-predictions" in capsys.readouterr().err
    assert not list(out.glob("*.bin"))
    assert cli(["evaluate", "--net", str(net), "--dataset", "vpr:/nowhere", "--only-wrong"]) == 1
    assert "--only-wrong applies to --save-predictions" in capsys.readouterr().err


def test_msls_night_flag_is_the_condition():
    """MSLS queries carry a night flag: the CSV's condition is day / night."""
    import types
    from matnet.predictions import build_predictions
    db = types.SimpleNamespace(utmDb=np.array([[0.0, 10, 100], [0, 0, 0]]), utmQ=np.array([[1.0, 99], [0, 0]]),
                               numImages=3, numQueries=2, dbPath="/r/db/", qPath="/r/q/",
                               dbImageFns=["a.jpg", "b.jpg", "c.jpg"], qImageFns=["x.jpg", "y.jpg"],
                               qNight=np.array([False, True]))
    db.isPosQ = lambda q, i: ((db.utmQ[:, q] - db.utmDb[:, i]) ** 2).sum(0) <= 625
    p = build_predictions(db, db, [0, 1], [[0, 2], [1, 2]], [[0.1, 0.2], [0.3, 0.4]])
    assert p.condition.tolist() == ["day", "night"]
    assert p.query_names == ["q/x.jpg", "q/y.jpg"] and p.db_names == {0: "db/a.jpg", 1: "db/b.jpg", 2: "db/c.jpg"}
    assert p.correct.tolist() == [[True, False], [False, True]]
    np.testing.assert_allclose(p.meters, [[1, 99], [89, 1]])
