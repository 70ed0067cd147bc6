"""`matnet train` and `matnet features`: options under their MATLAB names, datasets by
name or spec file (the multi-process runs of both are in test_distributed.py)."""
import math
import re

import numpy as np
import pytest

from converters.bin_features import read_bin
from matnet.cli import build_parser, main
from matnet.commands import train as train_command
from matnet.commands.train import option_help, options_from_args
from matnet.datasets.local_paths import env_name
from matnet.datasets import parse_dataset
from matnet.synthetic import make_places, save_tiny_net
from matnet.train.checkpoint import load_checkpoint
from matnet.train.opts import TrainWeaklyOpts


def _opts(*argv):
    return options_from_args(build_parser().parse_args(["train", "--db-train", "a", "--db-val", "b", *argv]))


def test_every_option_by_its_matlab_name():
    o = _opts("--batchSize", "3", "--learningRate", "1e-3", "--jitterFlip", "true", "--test0", "0",
              "--recallNs", "1,5", "10", "--fixLayers", "conv1", "conv2", "--backPropToLayer", "conv2",
              "--saveFrequency", "inf", "--jitterScale", "0.5,1", "--sessionID", "abc", "--lrDownFactor", "2.5")
    k = _opts("--batch-size", "3", "--learning-rate", "1e-3", "--jitter-flip", "true", "--test0", "0",
              "--recall-ns", "1,5", "10", "--fix-layers", "conv1", "conv2", "--back-prop-to-layer", "conv2",
              "--save-frequency", "inf", "--jitter-scale", "0.5,1", "--session-id", "abc", "--lr-down-factor", "2.5")
    assert k.to_dict() == o.to_dict()  # kebab-case and MATLAB spellings are one option
    assert (o.batchSize, o.learningRate, o.jitterFlip, o.test0) == (3, 1e-3, True, False)
    assert o.recallNs == [1, 5, 10] and o.fixLayers == ["conv1", "conv2"] and o.jitterScale == [0.5, 1]
    assert o.backPropToLayer == "conv2" and math.isinf(o.saveFrequency) and o.sessionID == "abc"
    assert o.lrDownFactor == 2.5
    assert _opts("--backPropToLayer", "7").backPropToLayer == 7
    assert _opts().to_dict() == TrainWeaklyOpts().to_dict()  # nothing given: MATLAB's defaults
    filled = {"dbTrainName", "dbValName", "backPropToLayerName", "backPropDepth", "dbCheckpoint0_orig",
              "qCheckpoint0_orig"}
    assert set(option_help()) == set(TrainWeaklyOpts.names()) - filled
    assert _opts("--useGPU", "false").useGPU is False and _opts("--device", "cuda").useGPU is True


def test_bad_option_values_are_named(capsys):
    with pytest.raises(ValueError, match="--jitter-flip: expected true or false"):
        _opts("--jitterFlip", "maybe")
    with pytest.raises(ValueError, match="batchSize"):
        _opts("--batchSize", "0")
    assert main(["train", "--db-train", "pitts31k_train", "--db-val", "x"]) == 1
    err = capsys.readouterr().err
    assert "--db-train 'pitts31k_train': unknown dataset; expected a MATLAB name" in err and "msls:ROOT" in err


def test_train_and_features_commands_on_spec_files(tmp_path, monkeypatch, capsys):
    make_places(tmp_path / "data", numImages=16, numQueries=8, imSize=(32, 40), splits=("train", "val"))
    pre = save_tiny_net(tmp_path / "pre", [120, 120, 120], imSize=(32, 40))
    monkeypatch.setenv(env_name("pretrainedCNNs"), str(tmp_path / "pre"))
    spec, images = tmp_path / "data" / "datasets" / "synth_{}.mat", str(tmp_path / "data" / "images")
    db = parse_dataset("spec:" + str(spec).format("train"), images)
    assert (db.name, db.numImages, db.numQueries) == ("synth_train", 16, 8)
    out = str(tmp_path / "out") + "/"
    assert main(["train", "--db-train", "spec:" + str(spec).format("train"), "--db-val",
                 "spec:" + str(spec).format("val"), "--root", images, "--net-id", "tiny", "--layer-name", "conv3",
                 "--method", "max", "--n-epoch", "1", "--batch-size", "4", "--n-neg-choice", "6", "--n-neg-cap", "2",
                 "--margin", "0.5", "--device", "cpu", "--num-threads", "1", "--n-test-rank-sample", "8",
                 "--recall-ns", "1", "5", "--session-id", "cli", "--out-prefix", out, "--test0", "false",
                 "--do-draw", "true"]) == 0
    ck = load_checkpoint(tmp_path / "out" / "cli_latest.mat")
    assert ck["opts"].method == "max" and ck["opts"].recallNs == [1, 5] and ck["opts"].dbTrainName == "synth_train"
    assert ck["obj"]["train"]["loss"].size == 2 and ck["obj"]["val"]["recall"].shape == (2, 1)
    assert "trainWeakly cli done" in capsys.readouterr().out
    assert "epoch 1 batch 2/2 loss" in (tmp_path / "out" / "cli.log").read_text()
    # every file a help text promises (<outPrefix><sessionID>...) is one this run wrote
    helps = " ".join(option_help().values()) + " " + train_command.__doc__
    promised = set(re.findall(r"<outPrefix><sessionID>([\w.]+)", helps))
    assert "_training.png" in promised and ".log" in promised
    for suffix in promised:
        assert (tmp_path / "out" / f"cli{suffix}").is_file(), suffix
    # features of a list of images: one row per listed image, equal to the dataset's rows
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(db.qImageFns[:3]) + "\n")
    assert main(["features", "--net", str(pre), "--dataset", "spec:" + str(spec).format("train"), "--root", images,
                 "--which", "q", "--out", str(tmp_path / "q.bin"), "--useGPU", "false"]) == 0
    assert main(["features", "--net", str(pre), "--images", str(lst), "--root", images,
                 "--out", str(tmp_path / "new" / "l.bin"), "--device", "cpu"]) == 0  # --out's folder made
    q, l = read_bin(tmp_path / "q.bin", n=8), read_bin(tmp_path / "new" / "l.bin", n=3)
    np.testing.assert_array_equal(q[:3], l)


def test_datasets_by_matlab_name_spec_file_or_folder_format(tmp_path):
    import shutil
    make_places(tmp_path / "data", numImages=8, numQueries=4, imSize=(32, 40), splits=("train",))
    specs = tmp_path / "specs"
    specs.mkdir()
    shutil.copy(tmp_path / "data" / "datasets" / "synth_train.mat", specs / "pitts30k_val.mat")
    db = parse_dataset("pitts30k_val", root=tmp_path / "Pitts", spec_dir=specs)
    assert type(db).__name__ == "dbPitts" and db.name == "pitts30k_val" and db.numImages == 8
    assert db.dbPath == str(tmp_path / "Pitts" / "images") + "/" and db.qPath == str(tmp_path / "Pitts" / "queries") + "/"
    db = parse_dataset(f"spec:{specs / 'pitts30k_val.mat'}", root=tmp_path / "Pitts")  # a released spec's rules
    assert type(db).__name__ == "dbPitts" and db.qPath.endswith("/queries/")
    with pytest.raises(ValueError, match="give --root, the folder the spec's image names are relative to"):
        parse_dataset(f"spec:{tmp_path / 'data' / 'datasets' / 'synth_train.mat'}")
    with pytest.raises(ValueError, match="'pitts30k_training': unknown dataset; expected a MATLAB name"):
        parse_dataset("pitts30k_training")


def test_train_done_message_names_the_real_prefix(tmp_path, monkeypatch, capsys):
    """Without --outPrefix the closing line names localPaths' outPrefix, never '<outPrefix>'."""
    import matnet.datasets as datasets
    import matnet.train.train_weakly as tw
    monkeypatch.setenv(env_name("outPrefix"), str(tmp_path / "runs") + "/")
    monkeypatch.setattr(datasets, "parse_dataset", lambda *a, **k: object())
    monkeypatch.setattr(tw, "trainWeakly", lambda dbTrain, dbVal, opts: "sid")  # leaves opts.outPrefix empty
    assert main(["train", "--db-train", "spec:a.mat", "--db-val", "spec:b.mat", "--root", str(tmp_path),
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"trainWeakly sid done: {tmp_path / 'runs'}/sid_latest.mat, log {tmp_path / 'runs'}/sid.log" in out
    assert "<" not in out


def test_base_net_and_pretrained_cnns_flags(tmp_path, monkeypatch, capsys):
    import matnet.train.train_weakly
    from matnet.pretrained import loadNet
    make_places(tmp_path / "data", numImages=8, numQueries=4, imSize=(32, 40), splits=("train",))
    pre = save_tiny_net(tmp_path / "pre", [120, 120, 120], imSize=(32, 40))
    monkeypatch.delenv(env_name("pretrainedCNNs"), raising=False)
    seen = []
    monkeypatch.setattr(matnet.train.train_weakly, "trainWeakly", lambda a, b, opts: seen.append(opts) or "s")
    spec = f"spec:{tmp_path / 'data' / 'datasets' / 'synth_train.mat'}"
    base = ["train", "--db-train", spec, "--db-val", spec, "--root", str(tmp_path / "data" / "images"),
            "--device", "cpu", "--out-prefix", str(tmp_path / "o") + "/"]
    assert main(base + ["--base-net", str(pre)]) == 0
    assert seen[-1].netID == "tiny"  # from the file's name
    assert loadNet(seen[-1].netID, "conv3").meta["netID"] == "tiny"  # found where --base-net is
    monkeypatch.delenv(env_name("pretrainedCNNs"))
    assert main(base + ["--net-id", "tiny", "--pretrained-cnns", str(tmp_path / "pre")]) == 0
    assert loadNet("tiny").meta["netID"] == "tiny"
    capsys.readouterr()
    renamed = tmp_path / "mine.mat"
    pre.rename(renamed)
    for extra, message in ((["--base-net", str(renamed)],
                            "not one of loadNet's files (imagenet-vgg-verydeep-16.mat = vd16"),
                           (["--base-net", str(tmp_path / "x" / "matnet-tiny.mat")], "no such file"),
                           (["--pretrained-cnns", str(tmp_path / "nowhere")], "no such folder")):
        assert main(base + extra) == 1
        assert message in capsys.readouterr().err
    renamed.rename(pre)
    assert main(base + ["--base-net", str(pre), "--net-id", "vd16"]) == 1
    assert "is netID tiny, but --net-id is vd16" in capsys.readouterr().err


def test_a_failed_run_leaves_no_home_folder(tmp_path, monkeypatch, capsys):
    """localPaths' defaults are under ~: a run that fails before writing creates none of them."""
    import os
    for k in list(os.environ):
        if k.startswith("MATNET_"):
            monkeypatch.delenv(k)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    make_places(tmp_path / "data", numImages=16, numQueries=8, imSize=(32, 40), splits=("train",))
    spec = f"spec:{tmp_path / 'data' / 'datasets' / 'synth_train.mat'}"
    assert main(["train", "--db-train", spec, "--db-val", spec, "--root", str(tmp_path / "data" / "images"),
                 "--net-id", "vd16", "--device", "cpu", "--n-neg-choice", "2"]) == 1  # no ~/Data/pretrained
    assert "imagenet-vgg-verydeep-16.mat: pretrained network not found" in capsys.readouterr().err
    assert main(["features", "--net", str(tmp_path / "absent.mat"), "--dataset", "pitts30k_test",
                 "--out", str(tmp_path / "o.bin")]) == 1
    assert list(home.iterdir()) == []
