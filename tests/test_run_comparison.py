"""`matnet report RUN_A.json RUN_B.json`: the fixed / broken query sets at N = 1, 5, 10, each
run's recall and McNemar's exact p-value equal a hand count on runs written here; runs on
different query lists are refused naming both datasets; the HTML page has both runs per
query and its fixed / broken filters leave those queries (in headless Chromium when one
is installed)."""
import json
from math import comb

import numpy as np
import pytest

from helpers.browser import Chromium, find_chromium
from matnet.cli import main as cli
from matnet.predictions import Predictions, write_predictions_csv

NQ, N = 40, 10


def write_run(folder, name, correct, dataset="pitts30k_test", queries=None):
    """A record + predictions CSV as matnet evaluate writes them, with the given correct flags."""
    folder.mkdir(parents=True, exist_ok=True)
    q = np.arange(NQ) if queries is None else np.asarray(queries)
    rng = np.random.default_rng(len(name))
    ids = rng.permutation(1000)[:q.size * N].reshape(q.size, N)
    pred = Predictions(q, ids, np.sort(rng.random((q.size, N)), 1).astype(np.float32), rng.random((q.size, N)) * 50,
                       correct, np.ones(q.size, bool), [f"queries/{i:04d}.jpg" for i in q],
                       {int(i): f"images/{i:04d}.jpg" for i in ids.ravel()}, None, str(folder))
    csvName = f"{name}_{dataset}_predictions.csv"
    write_predictions_csv(folder / csvName, pred)
    recall = [float(correct[:, :n].any(1).mean()) for n in (1, 5, 10)]
    rec = {"network": name, "dataset": dataset, "protocol": "matlab", "recallNs": [1, 5, 10],
           "results": [{"dims": 4096, "recall": recall, "predictions_csv": csvName}], "predictions_csv": csvName}
    path = folder / f"{name}_{dataset}_recall.json"
    path.write_text(json.dumps(rec))
    return path


def first_to_flags(first):
    """Correct flags with the first correct result at rank ``first`` (0: none), others random."""
    rng = np.random.default_rng(1)
    c = np.zeros((len(first), N), bool)
    for i, f in enumerate(first):
        if f:
            c[i, f - 1] = True
            c[i, f:] = rng.random(N - f) < 0.3
    return c


def test_report_counts_and_mcnemar(tmp_path, capsys):
    rng = np.random.default_rng(7)
    firstA = rng.choice([0, 1, 1, 1, 2, 3, 6, 9], NQ)
    firstB = firstA.copy()
    firstB[:9] = 1           # queries 0..8: B right at 1
    firstB[30:33] = [0, 4, 7]  # 30..32: B loses its top-1
    firstA[30:33] = 1
    a = write_run(tmp_path / "a", "offtheshelf", first_to_flags(firstA))
    b = write_run(tmp_path / "b", "trained", first_to_flags(firstB))
    assert cli(["report", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    out = json.loads(next((tmp_path / "cmp").glob("*_comparison.json")).read_text())
    for n in (1, 5, 10):
        hitA = (firstA > 0) & (firstA <= n)
        hitB = (firstB > 0) & (firstB <= n)
        fixed = [q for q in range(NQ) if not hitA[q] and hitB[q]]
        broken = [q for q in range(NQ) if hitA[q] and not hitB[q]]
        got = out["by_n"][str(n)]
        assert got["fixed"] == fixed and got["broken"] == broken, n
        assert got["recall_a"] == pytest.approx(hitA.mean()) and got["recall_b"] == pytest.approx(hitB.mean())
        assert f"{n:>4} {100 * hitA.mean():11.2f} {100 * hitB.mean():11.2f} {len(fixed):11d} {len(broken):12d}" \
            in printed
    k = len(out["by_n"]["1"]["fixed"])
    m = k + len(out["by_n"]["1"]["broken"])
    assert k > 0 and m - k == 3
    tail = sum(comb(m, i) for i in range(min(k, m - k) + 1)) / 2 ** m   # exact two-sided, hand count
    assert out["mcnemar"] == {"n": 1, "fixed": k, "broken": m - k, "p_value": pytest.approx(min(1.0, 2 * tail))}
    assert f"p = {min(1.0, 2 * tail):.4g}" in printed
    page = next((tmp_path / "cmp").glob("*_comparison.html")).read_text()
    assert "A: offtheshelf_pitts30k_test" in page and "B: trained_pitts30k_test" in page
    assert f"<td id='fixed-1'>{k}</td>" in page and '"key":"broken1"' in page
    browser = find_chromium()
    if browser is None:
        return  # the page in a browser: tests/test_html_report.py says why it skips
    html = next((tmp_path / "cmp").glob("*_comparison.html"))
    with Chromium(browser, tmp_path / "profile") as b:
        for what in ("fixed", "broken"):
            b.open(html.as_uri() + f"#filter={what}1&per=100")
            shown = sorted(b.eval("[...document.querySelectorAll('#rows tr')].map(t => +t.dataset.qid)"))
            assert shown == out["by_n"]["1"][what]
            assert b.eval("document.querySelectorAll('#rows tr')[0].querySelectorAll('.run').length") == 2
        assert all(u.startswith("file:") for u in b.requests)


def test_report_refuses_other_queries(tmp_path, capsys):
    a = write_run(tmp_path / "a", "netA", first_to_flags(np.ones(NQ, int)))
    b = write_run(tmp_path / "b", "netB", first_to_flags(np.ones(NQ - 1, int)), dataset="tokyo247",
                  queries=np.arange(NQ - 1))
    assert cli(["report", str(a), str(b)]) == 1
    err = capsys.readouterr().err
    assert "different query lists" in err and "pitts30k_test" in err and "tokyo247" in err
    rec = json.loads(a.read_text())
    del rec["results"][0]["predictions_csv"]
    a.write_text(json.dumps(rec))
    assert cli(["report", str(a), str(b)]) == 1
    assert "names no predictions CSV" in capsys.readouterr().err
