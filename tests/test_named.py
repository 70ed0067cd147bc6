"""matnet.datasets.parse_dataset (matnet/datasets/named.py): every form of dataset text,
its errors, and every form through every command that takes a dataset (train,
features, evaluate, reference, dataset export) on small datasets written here."""
import shutil
import zlib

import numpy as np
import pytest
from PIL import Image

import matnet.evaluation
import matnet.train.train_weakly
from converters.bin_features import read_bin
from helpers.dataset_makers import make_msls_part
from matnet.cli import main
from matnet.datasets import dbMSLS, dbPitts, dbSpec, dbVPR, parse_dataset
from matnet.datasets.named import DATASET_FORMS, MATLAB_NAMES
from matnet.datasets.vpr_export import export_vpr
from matnet.synthetic import dbSynthetic, make_places, save_tiny_net


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """One small street as each form: a MATLAB name (pitts30k_test), a spec file, a VPR
    folder, and an MSLS root with the val city cph."""
    root = tmp_path_factory.mktemp("forms")
    make_places(root / "synth", numImages=8, numQueries=4, imSize=(32, 40), splits=("test",))
    specs, pitts = root / "specs", root / "Pittsburgh"
    specs.mkdir()
    shutil.copy(root / "synth" / "datasets" / "synth_test.mat", specs / "pitts30k_test.mat")
    pitts.mkdir()
    for sub in ("images", "queries"):  # dbPitts: database under images/, queries under queries/
        (pitts / sub).symlink_to(root / "synth" / "images")
    export_vpr(dbSynthetic("test", root / "synth"), None, root / "vpr", log=lambda *_: None)
    grid = np.stack([np.arange(6) * 20.0 + 350000, np.full(6, 6170000.0)])
    base = root / "msls" / "train_val" / "cph"
    make_msls_part(base / "database", [f"db{i}" for i in range(6)], grid, subtask_all=[True] * 6)
    make_msls_part(base / "query", [f"q{i}" for i in range(3)], grid[:, :3] + 3, subtask_all=[True] * 3)
    rng = np.random.default_rng(0)
    for jpg in base.rglob("*.jpg"):  # images large enough for the tiny network
        Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(jpg)
    net = save_tiny_net(root / "pre", [120, 120, 120], imSize=(32, 40))
    return root, net


def forms(root):
    """form -> (extra arguments, expected class, name, numImages, numQueries)."""
    return {
        "matlab": (["pitts30k_test", "--spec-dir", str(root / "specs"), "--root", str(root / "Pittsburgh")],
                   dbPitts, "pitts30k_test", 8, 4),
        "spec": ([f"spec:{root / 'synth' / 'datasets' / 'synth_test.mat'}", "--root", str(root / "synth" / "images")],
                 dbSpec, "synth_test", 8, 4),
        "vpr": ([f"vpr:{root / 'vpr'}:test"], dbVPR, "vpr_test", 8, 4),
        "msls": ([f"msls:{root / 'msls'}:val:cph"], dbMSLS, "msls_val", 6, 3),
    }


def test_every_form_parses(data):
    root, _ = data
    for form, (argv, cls, name, n_db, n_q) in forms(root).items():
        kw = dict(zip(argv[1::2], argv[2::2]))
        db = parse_dataset(argv[0], root=kw.get("--root"), spec_dir=kw.get("--spec-dir"))
        assert (type(db), db.name, db.numImages, db.numQueries) == (cls, name, n_db, n_q), form
    # defaults: vpr split test, msls split val with its official cities (cph present, sf absent here)
    assert parse_dataset(f"vpr:{root / 'vpr'}").whichSet == "test"
    assert parse_dataset(f"msls:{root / 'msls'}::cph").cities == ["cph"]
    assert len(MATLAB_NAMES) == 11 and "tokyoTinyTM_val" in MATLAB_NAMES


def test_old_bare_spec_file_still_reads_with_a_deprecation(data, capsys):
    root, _ = data
    db = parse_dataset(str(root / "synth" / "datasets" / "synth_test.mat"), root=root / "synth" / "images")
    assert db.name == "synth_test"
    assert "matnet: deprecated: --dataset" in capsys.readouterr().err


@pytest.mark.parametrize("text,kw,message", [
    ("folder/without/kind", {}, "unknown dataset; expected " + DATASET_FORMS),
    ("pitts30k_training", {}, "unknown dataset"),
    ("vpr:", {}, "expected a MATLAB name"),
    ("vpr:/data/x:", {}, "expected a MATLAB name"),
    ("vpr:/data/x", {"root": "/r"}, "--root applies to MATLAB names and spec: files"),
    ("msls:/data/x:val:", {}, "no city after the split"),
    ("msls:/data/x", {"panoramaNMS": True}, "apply to vpr: datasets only"),
    ("spec:/data/mine.mat", {}, "give --root"),
])
def test_errors_list_the_forms(text, kw, message):
    with pytest.raises(ValueError) as e:
        parse_dataset(text, what="--db-train", **kw)
    assert message in str(e.value) and str(e.value).startswith("--db-train ")


@pytest.mark.parametrize("form", ["matlab", "spec", "vpr", "msls"])
def test_each_form_through_each_command(data, form, tmp_path, monkeypatch, capsys):
    """features and dataset export run for real; evaluate, reference and train up to
    their compute (evaluate_dataset, trainWeakly), which receives the dataset."""
    root, net = data
    argv, cls, name, n_db, n_q = forms(root)[form]
    text, extra = argv[0], argv[1:]
    out = tmp_path / "f" / "q.bin"
    assert main(["features", "--net", str(net), "--dataset", text, *extra, "--which", "q", "--out", str(out),
                 "--device", "cpu", "--num-threads", "1"]) == 0
    assert read_bin(out, n=n_q).shape[0] == n_q
    assert main(["dataset", "export", "--dataset", text, *extra, "--out", str(tmp_path / "exp")]) == 0
    assert len(list((tmp_path / "exp" / "images").glob("*/queries/*.jpg"))) == n_q

    seen = []
    monkeypatch.setattr(matnet.evaluation, "evaluate_dataset", lambda net, db, *a, **k: seen.append(db) or {})
    monkeypatch.setattr(matnet.train.train_weakly, "trainWeakly",
                        lambda dbTrain, dbVal, opts: seen.extend([dbTrain, dbVal]) or "s")
    assert main(["evaluate", "--net", str(net), "--dataset", text, *extra, "--out", str(tmp_path / "e"),
                 "--device", "cpu"]) == 0
    assert main(["reference", "--net", str(net), "--dataset", text, *extra, "--out", str(tmp_path / "r"),
                 "--device", "cpu"]) == 0
    assert main(["train", "--db-train", text, "--db-val", text, *extra, "--device", "cpu",
                 "--out-prefix", str(tmp_path / "t") + "/"]) == 0
    assert [(type(db), db.name, db.numImages, db.numQueries) for db in seen] == [(cls, name, n_db, n_q)] * 4
    assert "matnet: deprecated" not in capsys.readouterr().err
