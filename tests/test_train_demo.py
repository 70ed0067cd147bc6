"""`matnet demo` on a very small synthetic set (the full demo runs in benchmarks/CI time)."""
import argparse
import json

from matnet.commands import demo
from matnet import plots
from matnet.plots import plot_recall_at_n


def test_demo_chain_runs(tmp_path, capsys, monkeypatch):
    for k in list(__import__("os").environ):
        if k.startswith("MATNET_"):
            monkeypatch.delenv(k)
    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    args = p.parse_args(["--out", str(tmp_path / "d"), "--n-epoch", "1", "--num-images", "40", "--num-queries", "16",
                         "--pca-dim", "16"])
    monkeypatch.setattr(demo, "_DEMO_OPTS", {**demo._DEMO_OPTS, "nTestRankSample": 16, "nNegChoice": 20})
    plotted = {}

    def keep(path, curves, title):
        plotted.update(curves=curves, title=title)
        return plot_recall_at_n(path, curves, title)

    monkeypatch.setattr(plots, "plot_recall_at_n", keep)
    assert demo.run(args) == 0
    out = capsys.readouterr().out
    assert f"writing everything under {tmp_path / 'd'}" in out.splitlines()[0]
    rows = {}
    for line in out.splitlines():
        for name in ("off-the-shelf", "trained (epoch 1)", "trained + WPCA 16"):
            if line.startswith(name + " "):
                rows[name] = [float(x) for x in line[len(name):].split()]
    assert list(rows) == ["off-the-shelf", "trained (epoch 1)", "trained + WPCA 16"]
    # the recall plot is of the test street, whose numbers are printed: same curves, same values
    assert "test street" in plotted["title"] and list(plotted["curves"]) == list(rows)
    for name, printed in rows.items():
        ns, recall = plotted["curves"][name]
        assert printed == [round(float(recall[list(ns).index(n)]), 3) for n in (1, 5, 10)]
    # one file per plot: the training curves and the test recall, nothing else
    pngs = sorted(p.name for p in (tmp_path / "d" / "output").glob("*.png"))
    assert len(pngs) == 2 and pngs[0].endswith("_test_recall.png") and pngs[1].endswith("_training.png")
    assert (tmp_path / "d" / "data" / "datasets" / "synth_test.mat").is_file()
    # it ends with matnet report's comparison of off-the-shelf and trained on the test street
    cmp = json.loads((tmp_path / "d" / "report.json").read_text())
    for n, i in ((1, 0), (5, 1), (10, 2)):
        assert round(cmp["by_n"][str(n)]["recall_a"], 3) == rows["off-the-shelf"][i]
        assert round(cmp["by_n"][str(n)]["recall_b"], 3) == rows["trained (epoch 1)"][i]
    assert f"{cmp['mcnemar']['fixed']} fixed, {cmp['mcnemar']['broken']} broken at N = 1)" in out
    assert (tmp_path / "d" / "report.html").stat().st_size > 1000
    # the trained networks are network files, their paths printed; load_net, inspect, export
    # and evaluate take them
    import re

    from converters.network import load_net
    from matnet.cli import main
    best = re.search(r"\[demo\] trained network \(epoch 1\): (\S+_best\.mat)$", out, re.M)
    wpca = re.search(r"\[demo\] with WPCA 16: (\S+_best_wpca16\.mat)$", out, re.M)
    assert best and wpca, out
    assert "pickBestNet: the network of epoch 1 is " + best.group(1) in out
    net = load_net(best.group(1))
    assert net.meta["epoch"] == 1 and net.layers[-1].class_name == "layerWholeL2Normalize"
    net_w = load_net(wpca.group(1))
    assert [l.name for l in net_w.layers[-2:]] == ["WPCA", "finalL2"]
    for f in (best.group(1), wpca.group(1)):
        assert main(["inspect", f]) == 0
    assert main(["export", wpca.group(1), "--format", "torchscript", str(tmp_path / "w.pt")]) == 0
    data = tmp_path / "d" / "data"
    assert main(["evaluate", "--net", wpca.group(1), "--dataset", f"spec:{data / 'datasets' / 'synth_test.mat'}",
                 "--root", str(data / "images"), "--out", str(tmp_path / "ev"), "--device", "cpu"]) == 0
    assert list((tmp_path / "ev").glob("*_best_wpca16_synth_test_*.json"))
