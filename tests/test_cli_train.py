"""`matnet train` and `matnet features`: options under their MATLAB names, datasets by
name or spec file (the multi-process runs of both are in test_distributed.py)."""
import math

import numpy as np
import pytest

from converters.bin_features import read_bin
from matnet.cli import build_parser, main
from matnet.commands.train import HELP, options_from_args
from matnet.datasets.local_paths import env_name
from matnet.datasets.named import dataset_by_name
from matnet.synthetic import make_places, save_tiny_net
from matnet.train.checkpoint import load_checkpoint
from matnet.train.opts import TrainWeaklyOpts


def _opts(*argv):
    return options_from_args(build_parser().parse_args(["train", "--dbTrain", "a", "--dbVal", "b", *argv]))


def test_every_option_by_its_matlab_name():
    o = _opts("--batchSize", "3", "--learningRate", "1e-3", "--jitterFlip", "true", "--test0", "0",
              "--recallNs", "1,5", "10", "--fixLayers", "conv1", "conv2", "--backPropToLayer", "conv2",
              "--saveFrequency", "inf", "--jitterScale", "0.5,1", "--sessionID", "abc", "--lrDownFactor", "2.5")
    assert (o.batchSize, o.learningRate, o.jitterFlip, o.test0) == (3, 1e-3, True, False)
    assert o.recallNs == [1, 5, 10] and o.fixLayers == ["conv1", "conv2"] and o.jitterScale == [0.5, 1]
    assert o.backPropToLayer == "conv2" and math.isinf(o.saveFrequency) and o.sessionID == "abc"
    assert o.lrDownFactor == 2.5
    assert _opts("--backPropToLayer", "7").backPropToLayer == 7
    assert _opts().to_dict() == TrainWeaklyOpts().to_dict()  # nothing given: MATLAB's defaults
    filled = {"dbTrainName", "dbValName", "backPropToLayerName", "backPropDepth", "dbCheckpoint0_orig",
              "qCheckpoint0_orig"}
    assert set(HELP) == set(TrainWeaklyOpts.names()) - filled


def test_bad_option_values_are_named(capsys):
    with pytest.raises(ValueError, match="--jitterFlip: expected true or false"):
        _opts("--jitterFlip", "maybe")
    with pytest.raises(ValueError, match="batchSize"):
        _opts("--batchSize", "0")
    assert main(["train", "--dbTrain", "pitts31k_train", "--dbVal", "x"]) == 1
    assert "unknown dataset 'pitts31k_train'" in capsys.readouterr().err


def test_train_and_features_commands_on_spec_files(tmp_path, monkeypatch, capsys):
    make_places(tmp_path / "data", numImages=16, numQueries=8, imSize=(32, 40), splits=("train", "val"))
    pre = save_tiny_net(tmp_path / "pre", [120, 120, 120], imSize=(32, 40))
    monkeypatch.setenv(env_name("pretrainedCNNs"), str(tmp_path / "pre"))
    spec, images = tmp_path / "data" / "datasets" / "synth_{}.mat", str(tmp_path / "data" / "images")
    db = dataset_by_name(str(spec).format("train"), images)
    assert (db.name, db.numImages, db.numQueries) == ("synth_train", 16, 8)
    out = str(tmp_path / "out") + "/"
    assert main(["train", "--dbTrain", str(spec).format("train"), "--dbVal", str(spec).format("val"),
                 "--dbRoot", images, "--netID", "tiny", "--layerName", "conv3", "--method", "max", "--nEpoch", "1",
                 "--batchSize", "4", "--nNegChoice", "6", "--nNegCap", "2", "--margin", "0.5", "--useGPU", "false",
                 "--numThreads", "1", "--nTestRankSample", "8", "--recallNs", "1", "5", "--sessionID", "cli",
                 "--outPrefix", out, "--test0", "false"]) == 0
    ck = load_checkpoint(tmp_path / "out" / "cli_latest.mat")
    assert ck["opts"].method == "max" and ck["opts"].recallNs == [1, 5] and ck["opts"].dbTrainName == "synth_train"
    assert ck["obj"]["train"]["loss"].size == 2 and ck["obj"]["val"]["recall"].shape == (2, 1)
    assert "trainWeakly cli done" in capsys.readouterr().out
    assert "epoch 1 batch 2/2 loss" in (tmp_path / "out" / "cli.log").read_text()
    # features of a list of images: one row per listed image, equal to the dataset's rows
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(db.qImageFns[:3]) + "\n")
    assert main(["features", "--net", str(pre), "--spec", str(spec).format("train"), "--dbRoot", images,
                 "--which", "q", "--out", str(tmp_path / "q.bin"), "--useGPU", "false"]) == 0
    assert main(["features", "--net", str(pre), "--images", str(lst), "--imPath", images,
                 "--out", str(tmp_path / "l.bin"), "--useGPU", "false"]) == 0
    q, l = read_bin(tmp_path / "q.bin", n=8), read_bin(tmp_path / "l.bin", n=3)
    np.testing.assert_array_equal(q[:3], l)


def test_datasets_by_matlab_name_spec_file_or_folder_format(tmp_path):
    import shutil
    make_places(tmp_path / "data", numImages=8, numQueries=4, imSize=(32, 40), splits=("train",))
    specs = tmp_path / "specs"
    specs.mkdir()
    shutil.copy(tmp_path / "data" / "datasets" / "synth_train.mat", specs / "pitts30k_val.mat")
    db = dataset_by_name("pitts30k_val", dbRoot=tmp_path / "Pitts", specDir=specs)
    assert type(db).__name__ == "dbPitts" and db.name == "pitts30k_val" and db.numImages == 8
    assert db.dbPath == str(tmp_path / "Pitts" / "images") + "/" and db.qPath == str(tmp_path / "Pitts" / "queries") + "/"
    db = dataset_by_name(str(specs / "pitts30k_val.mat"), dbRoot=tmp_path / "Pitts")  # a released spec's rules
    assert type(db).__name__ == "dbPitts" and db.qPath.endswith("/queries/")
    with pytest.raises(ValueError, match="give the folder its image names are relative to"):
        dataset_by_name(str(tmp_path / "data" / "datasets" / "synth_train.mat"))
    with pytest.raises(ValueError, match="expected vpr:ROOT:SPLIT"):
        dataset_by_name("vpr:/data/x")
    with pytest.raises(ValueError, match="unknown dataset 'pitts30k_training'"):
        dataset_by_name("pitts30k_training")
