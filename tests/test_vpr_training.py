"""trainWeakly runs unchanged on dbVPR: a synthetic street exported to the VPR folder format
trains to the same weights as the original spec (same images in the same order, UTM
within 0.005 m)."""

import numpy as np
import torch

from matnet.datasets import dbVPR
from matnet.datasets.vpr_export import export_vpr
from matnet.synthetic import dbSynthetic, make_places, save_tiny_net
from matnet.train import train_weakly as tw
from matnet.train.checkpoint import load_checkpoint
from helpers.train_driver import OPTS, training_env


def test_trainWeakly_same_on_exported_vpr_folder(tmp_path, monkeypatch):
    data = tmp_path / "data"
    make_places(data, numImages=24, numQueries=12, imSize=(32, 40), splits=("train", "val"))
    save_tiny_net(tmp_path / "pre", [120, 120, 120], imSize=(32, 40))
    training_env(monkeypatch, tmp_path / "pre", tmp_path / "out")
    for split in ("train", "val"):
        export_vpr(data / "datasets" / f"synth_{split}.mat", data / "images", tmp_path / "vpr", log=lambda *a: None)
    orig = [dbSynthetic(s, data) for s in ("train", "val")]
    vpr = [dbVPR(tmp_path / "vpr", s) for s in ("train", "val")]
    assert vpr[0].numImages == 24 and np.abs(vpr[0].utmDb - orig[0].utmDb).max() <= 0.005 + 1e-9
    for (dbT, dbV), sid in ((orig, "orig"), (vpr, "vpr")):
        tw.trainWeakly(dbT, dbV, sessionID=sid, nEpoch=1, test0=False, **OPTS)
    a, b = (load_checkpoint(tmp_path / "out" / f"{s}_latest.mat")["net"] for s in ("orig", "vpr"))
    assert len(a.layers) == len(b.layers)
    for la, lb in zip(a.layers, b.layers):
        for wa, wb in zip(la.weights, lb.weights):
            torch.testing.assert_close(wa, wb, rtol=0, atol=0)
