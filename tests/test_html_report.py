"""The HTML report in a real browser (headless Chromium; skipped, with the reason, only
where none is installed -- .ci/run installs Debian's chromium): opened from the file
system, the rendered DOM shows the JSON record's recalls, the wrong-at-1 filter (driven
by its button and through the URL fragment the page reads) leaves exactly the queries
wrong at 1, no request leaves the file system (every request the page makes, recorded
through DevTools' Network events, is file: or data:; a control page with a remote image
shows the record sees one), and a screenshot is not blank.  Without a
browser: 10,000 queries x N = 10 stay well under 10 MB."""
import csv
import json
import re

import numpy as np
import pytest
from PIL import Image

from helpers.browser import Chromium, find_chromium
from helpers.report_data import N_Q, tiny_net_file, tokyo_like
from matnet.cli import main as cli
from matnet.html_report import write_report
from matnet.predictions import Predictions

N = 5
BROWSER = find_chromium()
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no chromium installed (Debian: apt-get install "
                                   "chromium; .ci/run installs it); the HTML report is then untested in a browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    tokyo_like(tmp / "Tokyo247", tmp / "specs")
    net = tiny_net_file(tmp / "tiny.mat")
    out = tmp / "out"
    assert cli(["evaluate", "--net", str(net), "--dataset", f"spec:{tmp / 'specs' / 'tokyo247.mat'}", "--root",
                str(tmp / "Tokyo247"), "--out", str(out), "--device", "cpu", "--save-predictions", str(N)]) == 0
    rec = json.loads(next(out.glob("*_recall.json")).read_text())
    with open(out / rec["predictions_csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    return tmp, out / rec["results"][0]["report_html"], rec, rows


def rows_shown(b):
    return sorted(b.eval("[...document.querySelectorAll('#rows tr')].map(t => +t.dataset.qid)"))


@needs_browser
def test_report_in_chromium(report):
    tmp, page, rec, rows = report
    with Chromium(BROWSER, tmp / "profile") as b:
        b.open(page.as_uri())
        dom = b.dom()
        for n, r in zip(rec["recallNs"], rec["results"][0]["recall"]):
            m = re.search(rf'<td id="recall-0-{n}"[^>]*>([^<]*)</td>', dom)
            assert m and m.group(1) == f"{100 * r:.2f}", n
        assert rows_shown(b) == list(range(N_Q))
        assert b.eval("document.getElementById('count').textContent") == f"{N_Q} of {N_Q} queries"
        panels = re.findall(r'<img class="panel" loading="lazy" src="([^"]+)"', dom)
        assert len(panels) == N_Q and all((page.parent / p).is_file() for p in panels)

        wrong = sorted({int(r["query_id"]) for r in rows if r["rank"] == "1" and r["correct"] == "0"})
        assert 0 < len(wrong) < N_Q
        b.eval("document.querySelector('#filters button[data-filter=wrong1]').click()")  # the button
        assert rows_shown(b) == wrong and "filter=wrong1" in b.eval("location.hash")
        b.open(page.as_uri() + "#filter=all")
        b.open(page.as_uri() + "#filter=wrong1")  # a link to the filtered view
        assert rows_shown(b) == wrong
        assert b.eval("document.querySelector('#filters .on').dataset.filter") == "wrong1"
        b.open(page.as_uri() + "#filter=nopos")
        assert rows_shown(b) == [N_Q - 1]  # the query 1 km away
        b.open(page.as_uri() + "#filter=cond:night&sort=first0&text=0000")
        assert rows_shown(b) == [q for q in range(N_Q) if (q + 1) % 3 == 0]
        b.open(page.as_uri())
        shot = tmp / "shot.png"
        b.screenshot(shot)
        assert b.requests and all(u.startswith(("file:", "data:")) for u in b.requests), b.requests
        # a page that fetches from the network shows up in the same record
        control = tmp / "control.html"
        control.write_text('<html><body><img src="http://example.invalid/x.png"></body></html>')
        b.open(control.as_uri())
        assert any(u.startswith("http://example.invalid") for u in b.requests)
    im = np.asarray(Image.open(shot).convert("RGB"))
    assert im.shape[:2] == (900, 1100)
    nonwhite = (im < 230).any(2).mean()
    colours = len(np.unique(im.reshape(-1, 3)[::7], axis=0))
    assert nonwhite > 0.03 and colours > 50 and im.std() > 20, (nonwhite, colours, im.std())


def test_report_size_10000_queries(tmp_path):
    """10,000 queries x N = 10 (distinct database names): well under 10 MB, no URL with a scheme."""
    rng = np.random.default_rng(0)
    nq, n = 10_000, 10
    ids = rng.integers(0, 80_000, (nq, n))
    pred = Predictions(np.arange(nq), ids, rng.random((nq, n)).astype(np.float32), rng.random((nq, n)) * 500,
                       rng.random((nq, n)) < 0.3, rng.random(nq) < 0.95,
                       [f"queries_real/{q // 1000:03d}/{q:06d}_pitch1_yaw{q % 12}.jpg" for q in range(nq)],
                       {int(i): f"images/{i // 1000:03d}/{i:06d}_pitch1_yaw{i % 12}.jpg" for i in np.unique(ids)},
                       np.array(["day", "sunset", "night"])[np.arange(nq) % 3], str(tmp_path))
    page = write_report(tmp_path / "r.html", pred, [1, 5, 10], [0.5, 0.7, 0.8], "big", {"queries": nq},
                        tmp_path / "panels", {r: f"{r:06d}.jpg" for r in range(nq)})
    size = page.stat().st_size
    assert size < 6 * 2**20, size
    text = page.read_text()
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:|//)', text)
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
