"""addLayers: layer lists, names, sessionID, alpha (against independent loops), errors."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from converters.artefacts import write_clusters, write_train_descs
from matnet.add_layers import addLayers, cluster_file_names, head_layer_names, parse_method
from matnet.layers.heads import layerTotalAvgPool, layerTotalMaxPool, layerWholeL2Normalize
from matnet.layers.normalize import Normalize
from matnet.layers.vlad import layerVLAD, layerVLADv2
from helpers.add_layers_net import D, OPTS, tiny_net

K = 64


DB = SimpleNamespace(name="fakedb", dbPath="/nonexistent/", dbImageFns=[], numImages=0)


@pytest.fixture
def cluster_files(tmp_path, monkeypatch):
    """Synthetic centres and descriptors written where addLayers looks (initData)."""
    monkeypatch.setenv("MATNET_INIT_DATA", str(tmp_path) + "/")
    rng = np.random.default_rng(5)
    clsts = rng.standard_normal((D, K)).astype(np.float32)
    descs = rng.standard_normal((D, 500)).astype(np.float32)
    for preL2 in (False, True):
        tfn, cfn = cluster_file_names(OPTS, DB, preL2)
        write_train_descs(tfn, descs)
        write_clusters(cfn, clsts)
    return clsts, descs


def ref_vlad_alpha(clsts, descs):
    c = clsts.astype(np.float64)
    c = c / (np.sqrt((c ** 2).sum(0)) + 1e-12)
    gaps = []
    for i in range(descs.shape[1]):
        s = sorted((c[:, k] @ descs[:, i] for k in range(c.shape[1])), reverse=True)
        gaps.append(s[0] - s[1])
    return -math.log(0.01) / np.mean(gaps)


def ref_vladv2_alpha(clsts, descs):
    gaps = []
    for i in range(descs.shape[1]):
        s = sorted(float(((descs[:, i].astype(np.float64) - clsts[:, k]) ** 2).sum())
                   for k in range(clsts.shape[1]))
        gaps.append(s[1] - s[0])
    return -math.log(0.01) / np.mean(gaps)


@pytest.mark.parametrize("method,names,classes", [
    ("vlad_preL2_intra", ["preL2", "vlad:core", "vlad:intranorm", "postL2"],
     [Normalize, layerVLAD, Normalize, layerWholeL2Normalize]),
    ("vladv2_preL2_intra", ["preL2", "vlad:core", "vlad:intranorm", "postL2"],
     [Normalize, layerVLADv2, Normalize, layerWholeL2Normalize]),
    ("vlad_preL2", ["preL2", "vlad:core", "postL2"], [Normalize, layerVLAD, layerWholeL2Normalize]),
    ("vlad", ["vlad:core", "postL2"], [layerVLAD, layerWholeL2Normalize]),
    ("max", ["max:core", "postL2"], [layerTotalMaxPool, layerWholeL2Normalize]),
    ("avg", ["avg:core", "postL2"], [layerTotalAvgPool, layerWholeL2Normalize]),
    ("preL2_max", ["preL2", "max:core", "postL2"], [Normalize, layerTotalMaxPool, layerWholeL2Normalize]),
])
def test_layer_list_and_session(cluster_files, method, names, classes):
    net = addLayers(tiny_net(), dict(OPTS, method=method), DB)
    added = list(net.layers)[2:]
    assert [l.name for l in added] == names
    assert head_layer_names(method) == names  # known before addLayers computes anything
    assert [type(l) for l in added] == classes
    for l in added:
        if isinstance(l, Normalize):
            assert (l.depth, l.kappa, l.alpha, l.beta) == (2 * D, 1e-12, 1, 0.5)
    suffix = "_fakedb" if "vlad" in method else ""
    assert net.meta["sessionID"] == f"tinynet{suffix}_{method}"
    assert net.meta["epoch"] == 0
    y = net(torch.rand(2, 3, 7, 5) * 255)
    assert y.shape == (2, D * K if "vlad" in method else D, 1, 1)


def test_vlad_alpha_and_weights(cluster_files):
    clsts, descs = cluster_files
    net = addLayers(tiny_net(), dict(OPTS, method="vlad_preL2_intra"), DB)
    layer = net.layers[3]
    alpha = ref_vlad_alpha(clsts, descs)
    cn = clsts / (np.sqrt((clsts.astype(np.float64) ** 2).sum(0)) + 1e-12)
    np.testing.assert_allclose(layer.weights[0].detach().numpy()[0, 0], alpha * cn, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.weights[1].detach().numpy()[0, 0], -clsts, rtol=1e-6)


def test_vladv2_alpha_and_weights(cluster_files):
    clsts, descs = cluster_files
    net = addLayers(tiny_net(), dict(OPTS, method="vladv2"), DB)
    layer = net.layers[2]
    alpha = ref_vladv2_alpha(clsts, descs)
    c = clsts.astype(np.float64)
    w = [p.detach().numpy() for p in layer.weights]
    np.testing.assert_allclose(w[0][0, 0], 2 * alpha * c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w[1][0], -alpha * (c ** 2).sum(0), rtol=1e-5)
    np.testing.assert_allclose(w[2][0, 0], -c, rtol=1e-6)


def test_file_names(monkeypatch, tmp_path):
    monkeypatch.setenv("MATNET_INIT_DATA", str(tmp_path))
    t, c = cluster_file_names(dict(netID="vd16", layerName="conv5_3"), SimpleNamespace(name="pitts30k_train"), True)
    assert t == str(tmp_path / "pitts30k_train_vd16_conv5_3_preL2_traindescs.mat")
    assert c == str(tmp_path / "pitts30k_train_vd16_conv5_3_preL2_k064_clst.mat")


@pytest.mark.parametrize("method,message", [
    ("max_intra", "Unsupported options (method=max_intra): intra"),
    ("avg_preL2_foo", "Unsupported options (method=avg_preL2_foo): foo"),
    ("vlad_vladv2", "Unsupported options (method=vlad_vladv2): vlad"),
    ("max_avg", "Unsupported options (method=max_avg): avg"),
    ("vlad_intra_x_y", "Unsupported options (method=vlad_intra_x_y): x, y"),
    ("preL2_intra", 'Unsupported method "preL2_intra"'),
    ("netvlad", 'Unsupported method "netvlad"'),
])
def test_unsupported_methods(method, message):
    with pytest.raises(ValueError) as e:
        addLayers(tiny_net(), dict(OPTS, method=method), DB)
    assert str(e.value) == message


def test_parse_method():
    assert parse_method("vlad_preL2_intra") == (True, "vlad", True)
    assert parse_method("intra_vladv2") == (False, "vladv2", True)
    assert parse_method("preL2_preL2_avg") == (True, "avg", False)


def test_wrong_k_cluster_file(tmp_path, monkeypatch, cluster_files):
    _, cfn = cluster_file_names(OPTS, DB, True)
    write_clusters(cfn, np.ones((D, 32), np.float32))
    with pytest.raises(ValueError, match=r"k064_clst\.mat: the file has 32 cluster centres, expected k=64"):
        addLayers(tiny_net(), dict(OPTS, method="vlad_preL2_intra"), DB)


def test_nan_centres(cluster_files):
    clsts, _ = cluster_files
    bad = clsts.copy()
    bad[2, 7] = np.nan
    write_clusters(cluster_file_names(OPTS, DB, True)[1], bad)
    with pytest.raises(ValueError, match="NaN"):
        addLayers(tiny_net(), dict(OPTS, method="vlad_preL2_intra"), DB)


def test_wrong_D_between_centres_and_features(cluster_files):
    with pytest.raises(ValueError, match="D=6, the network's output has D=4"):
        addLayers(tiny_net(d=4), dict(OPTS, method="vlad_preL2"), DB)


@pytest.mark.parametrize("fmt", ["7.3", "5"])
@pytest.mark.parametrize("method", ["vlad_preL2_intra", "vladv2_preL2_intra", "max"])
def test_saved_network_round_trip(cluster_files, tmp_path, method, fmt):
    """A net with a head, written as MATLAB's .mat and read back, computes the same."""
    from converters.network import load_net, save_net
    net = addLayers(tiny_net(), dict(OPTS, method=method), DB)
    save_net(net, tmp_path / "net.mat", format=fmt)
    back = load_net(tmp_path / "net.mat")
    assert [type(l) for l in back.layers] == [type(l) for l in net.layers]
    assert [l.name for l in back.layers] == [l.name for l in net.layers]
    x = torch.rand(2, 3, 6, 5) * 255
    torch.testing.assert_close(back(x), net(x))
