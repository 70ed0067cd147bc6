"""`matnet demo` on a very small synthetic set (the full demo runs in benchmarks/CI time)."""
import argparse

from matnet.commands import demo


def test_demo_chain_runs(tmp_path, capsys, monkeypatch):
    for k in list(__import__("os").environ):
        if k.startswith("MATNET_"):
            monkeypatch.delenv(k)
    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    args = p.parse_args(["--out", str(tmp_path / "d"), "--epochs", "1", "--images", "40", "--queries", "16",
                         "--pca-dim", "16"])
    monkeypatch.setattr(demo, "_DEMO_OPTS", {**demo._DEMO_OPTS, "nTestRankSample": 16, "nNegChoice": 20})
    assert demo.run(args) == 0
    out = capsys.readouterr().out
    assert "off-the-shelf" in out and "trained (epoch 1)" in out and "trained + WPCA 16" in out
    pngs = sorted(p.name for p in (tmp_path / "d" / "output").glob("*.png"))
    assert any(n.endswith("_training.png") for n in pngs) and any(n.endswith("_recall.png") for n in pngs)
    assert (tmp_path / "d" / "data" / "datasets" / "synth_test.mat").is_file()
