import numpy as np
import pytest

from matnet.train.opts import TrainWeaklyOpts


def test_defaults_match_trainWeakly():
    o = TrainWeaklyOpts()
    assert (o.netID, o.layerName, o.method) == ("caffe", "conv5", "vlad_preL2_intra")
    assert (o.batchSize, o.learningRate, o.lrDownFreq, o.lrDownFactor) == (4, 1e-4, 5, 2)
    assert (o.weightDecay, o.momentum, o.backPropToLayer, o.fixLayers) == (1e-3, 0.9, 1, [])
    assert (o.nNegChoice, o.nNegCap, o.nNegCache, o.nEpoch, o.margin) == (1000, 10, 10, 30, 0.1)
    assert (o.excludeVeryHard, o.jitterFlip, o.jitterScale) == (False, False, [])
    assert o.sessionID is None and o.outPrefix is None and o.dbCheckpoint0 is None
    assert (o.checkpoint0suffix, o.info, o.test0) == ("", "", True)
    assert (o.saveFrequency, o.compFeatsFrequency, o.computeBatchSize, o.epochTestFrequency) == (2000, 1000, 10, 1)
    assert (o.doDraw, o.printLoss, o.printBatchLoss) == (False, False, False)
    assert (o.nTestSample, o.nTestRankSample, o.useGPU, o.numThreads, o.startEpoch) == (1000, 5000, True, 12, 1)
    # [1:5, 10:5:100]
    assert o.recallNs == list(range(1, 6)) + list(range(10, 101, 5))
    assert len(o.recallNs) == 24


def test_unknown_option_lists_valid_names():
    with pytest.raises(ValueError) as e:
        TrainWeaklyOpts(batchsize=3)
    msg = str(e.value)
    assert "'batchsize'" in msg and "batchSize" in msg and "nNegCap" in msg
    with pytest.raises(ValueError):
        TrainWeaklyOpts().replace(lrdownfreq=1)


def test_defaults_not_shared_between_instances():
    a, b = TrainWeaklyOpts(), TrainWeaklyOpts()
    a.fixLayers.append("conv1")
    a.recallNs.append(1000)
    assert b.fixLayers == [] and b.recallNs[-1] == 100


def test_struct_round_trip():
    o = TrainWeaklyOpts(batchSize=2, backPropToLayer="conv5_1", fixLayers=["vlad:core"], jitterScale=[0.5, 1.5],
                        sessionID="abcd", learningRate=1e-3, excludeVeryHard=True, recallNs=[1, 5, 10])
    s = o.to_struct()
    assert s["outPrefix"].shape == (0, 0) and s["fixLayers"] == ["vlad:core"]
    assert s["jitterScale"].shape == (1, 2) and s["excludeVeryHard"] == np.bool_(True)
    back = TrainWeaklyOpts.from_struct(s)
    assert back.to_dict() == o.to_dict()
    assert isinstance(back.batchSize, int) and back.outPrefix is None and back.checkpoint0suffix == ""


def test_from_matlab_like_struct():
    # MATLAB saves numbers as doubles (1x1 arrays), strings as str, a single fixLayers name as str
    s = {"batchSize": np.array([[4.0]]), "netID": "vd16", "fixLayers": np.zeros((0, 0)),
         "recallNs": np.array([[1.0, 2.0, 5.0]]), "useGPU": np.array([[True]]), "margin": np.array([[0.2]]),
         "someFieldWeDontKnow": 3}
    o = TrainWeaklyOpts.from_struct(s)
    assert o.batchSize == 4 and o.netID == "vd16" and o.fixLayers == [] and o.recallNs == [1, 2, 5]
    assert o.useGPU is True and o.margin == 0.2


@pytest.mark.parametrize("name,value,allowed", [
    ("batchSize", "4", "integer >= 1"),
    ("batchSize", 0, "integer >= 1"),
    ("batchSize", True, "integer >= 1"),
    ("saveFrequency", 0, "integer >= 1 or inf"),
    ("learningRate", "0.001", "finite number >= 0"),
    ("learningRate", float("nan"), "finite number >= 0"),
    ("margin", "0.1", "finite number"),
    ("nEpoch", 1.5, "integer >= 1"),
    ("useGPU", "no", "true/false"),
    ("useGPU", 2, "true/false"),
    ("recallNs", [10, 5, 1], "increasing order"),
    ("recallNs", [], "non-empty"),
    ("recallNs", [1, 2.5], "integers"),
    ("momentum", 1.5, "<= 1"),
    ("lrDownFactor", 0, "> 0"),
    ("nNegCache", -1, "integer >= 0"),
    ("jitterScale", [0.5, -1], "numbers > 0"),
    ("fixLayers", [3], "layer names"),
    ("backPropToLayer", 0, "1-based layer index"),
    ("backPropToLayer", 2.5, "1-based layer index"),
    ("outPrefix", 3, "string"),
    ("netID", "", "non-empty string"),
])
def test_bad_values_name_option_value_and_what_is_allowed(name, value, allowed):
    with pytest.raises(ValueError) as e:
        TrainWeaklyOpts(**{name: value})
    msg = str(e.value)
    assert f"{name}={value!r}" in msg and allowed in msg
    with pytest.raises(ValueError, match=name):  # the same check on replace and on assignment
        TrainWeaklyOpts().replace(**{name: value})
    o = TrainWeaklyOpts()
    with pytest.raises(ValueError, match=name):
        setattr(o, name, value)


def test_matlab_forms_accepted_and_normalised():
    o = TrainWeaklyOpts(batchSize=4.0, nEpoch=np.float64(3), useGPU=0, test0=np.array([[1.0]]), doDraw=np.bool_(True),
                        learningRate=1, margin=-0.5, recallNs=np.array([[1.0, 5.0, 10.0]]), fixLayers="conv1",
                        jitterScale=0.5, saveFrequency=float("inf"), nTestSample=np.inf, backPropToLayer=3.0,
                        sessionID="", dbCheckpoint0=[])
    assert o.batchSize == 4 and type(o.batchSize) is int and o.nEpoch == 3 and type(o.nEpoch) is int
    assert o.useGPU is False and o.test0 is True and o.doDraw is True
    assert o.learningRate == 1.0 and type(o.learningRate) is float and o.margin == -0.5
    assert o.recallNs == [1, 5, 10] and all(type(n) is int for n in o.recallNs)
    assert o.fixLayers == ["conv1"] and o.jitterScale == [0.5] and o.backPropToLayer == 3
    assert o.saveFrequency == float("inf") and o.nTestSample == float("inf")
    assert o.sessionID is None and o.dbCheckpoint0 is None  # '' and [] are MATLAB's empty
    assert TrainWeaklyOpts(fixLayers=("a", "b"), recallNs=range(1, 4)).fixLayers == ["a", "b"]
    with pytest.raises(AttributeError, match="nNegCap"):
        o.nNegcap = 3


def test_bad_value_in_saved_opts_names_the_file(tmp_path):
    from converters.matfile import savemat
    from matnet.train.checkpoint import load_checkpoint
    s = TrainWeaklyOpts().to_struct()
    s["batchSize"] = np.float64(2.5)
    fn = tmp_path / "x_latest.mat"
    savemat(fn, {"opts": s})
    with pytest.raises(ValueError, match=r"x_latest\.mat.*batchSize=2\.5"):
        load_checkpoint(fn, what=("opts",))
