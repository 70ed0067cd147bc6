"""Prediction panels of `matnet evaluate --save-predictions N`: one JPEG per query (or per
query wrong at 1 with --only-wrong), each the query tile then one tile per result, the
frames' colours (sampled from the pixels) blue / green for correct / red for wrong as the
CSV says; a rerun reuses finished panels and redraws a changed one."""
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from helpers.report_data import N_Q, tiny_net_file, tokyo_like
from matnet.cli import main as cli
from matnet.panels import CORRECT_COLOUR, FRAME, QUERY_COLOUR, WRONG_COLOUR, panel_name

N = 5
COLOURS = {"query": QUERY_COLOUR, "correct": CORRECT_COLOUR, "wrong": WRONG_COLOUR}


def tiles(path):
    """The frame colour of each tile, left to right, from the row of pixels inside the top
    frame (tiles are separated by white)."""
    px = np.asarray(Image.open(path).convert("RGB"), np.int32)[FRAME // 2]
    white = (px > 235).all(1)
    runs, start = [], None
    for x, w in enumerate(list(white) + [True]):
        if not w and start is None:
            start = x
        elif w and start is not None:
            runs.append(px[start:x].mean(0))
            start = None
    return [min(COLOURS, key=lambda k: np.abs(np.array(COLOURS[k]) - c).sum()) for c in runs], runs


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("panels")
    tokyo_like(tmp / "Tokyo247", tmp / "specs")
    return tmp, tiny_net_file(tmp / "tiny.mat")


def run(data, out, *extra):
    tmp, net = data
    assert cli(["evaluate", "--net", str(net), "--dataset", f"spec:{tmp / 'specs' / 'tokyo247.mat'}", "--root",
                str(tmp / "Tokyo247"), "--out", str(out), "--device", "cpu", "--save-predictions", str(N), *extra]) == 0
    rec = json.loads(next(out.glob("*_recall.json")).read_text())
    with open(out / rec["predictions_csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    return rec, rows


def test_panels_tiles_and_colours(data, capsys):
    out = data[0] / "all"
    rec, rows = run(data, out)
    folder = out / rec["results"][0]["predictions_panels"]
    files = sorted(folder.glob("*.jpg"))
    assert len(files) == N_Q
    assert not list(folder.glob("*.matnet-tmp"))
    for q in range(N_Q):
        mine = [r for r in rows if int(r["query_id"]) == q]
        path = folder / panel_name(q, mine[0]["query"])
        got, means = tiles(path)
        want = ["query"] + ["correct" if r["correct"] == "1" else "wrong" for r in mine]
        assert got == want, (q, got, want)
        assert len(got) == len(mine) + 1 and len(mine) == 4  # Tokyo NMS: one result per panorama (4 < N)
        for name, c in zip(got, means):
            assert np.abs(np.array(COLOURS[name]) - c).max() < 40
    assert {"correct", "wrong"} <= {t for f in files for t in tiles(f)[0]}
    h = Image.open(files[0]).height
    assert h == 200 + 2 * FRAME
    # a rerun reuses every panel; a changed one is redrawn
    stamps = {f: f.stat().st_mtime_ns for f in files}
    capsys.readouterr()
    Image.new("RGB", (10, 10)).save(files[0])  # stale content (no signature)
    run(data, out)
    assert f"panels: 1 written, {N_Q - 1} reused" in capsys.readouterr().out
    assert all(f.stat().st_mtime_ns == stamps[f] for f in files[1:])
    assert tiles(files[0])[0][0] == "query"
    # an image replaced under the same name (here: only its modification time) redraws every
    # panel that shows it, and only those
    shown = rows[0]["db_image"]
    showing = {int(r["query_id"]) for r in rows if r["db_image"] == shown}
    img = data[0] / "Tokyo247" / shown
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    capsys.readouterr()
    run(data, out)
    assert f"panels: {len(showing)} written, {N_Q - len(showing)} reused" in capsys.readouterr().out
    assert {int(f.name[:6]) for f in files if f.stat().st_mtime_ns != stamps[f]} - {0} == showing - {0}


def test_only_wrong_and_no_images(data):
    out = data[0] / "wrong"
    rec, rows = run(data, out, "--only-wrong")
    wrong = {int(r["query_id"]) for r in rows if r["rank"] == "1" and r["correct"] == "0"}
    assert 0 < len(wrong) < N_Q
    files = sorted((out / rec["results"][0]["predictions_panels"]).glob("*.jpg"))
    assert [int(f.name[:6]) for f in files] == sorted(wrong)
    assert {int(r["query_id"]) for r in rows} == set(range(N_Q))  # the CSV keeps every query
    out = data[0] / "vpr"  # no NMS: N results, N + 1 tiles
    rec, rows = run(data, out, "--protocol", "vpr")
    for f in sorted((out / rec["results"][0]["predictions_panels"]).glob("*.jpg")):
        q = int(f.name[:6])
        assert tiles(f)[0] == ["query"] + ["correct" if r["correct"] == "1" else "wrong"
                                           for r in rows if int(r["query_id"]) == q]
        assert len(tiles(f)[0]) == N + 1
    out = data[0] / "none"
    rec, _ = run(data, out, "--no-save-predictions-images")
    assert "predictions_panels" not in rec["results"][0] and not list(out.glob("*_predictions"))
