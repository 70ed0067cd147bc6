"""addLayers: append NetVLAD's aggregation head to a cropped base network."""
from __future__ import annotations

import math
import os

import numpy as np

from converters.artefacts import read_train_descs

from .datasets.local_paths import localPaths
from .get_clusters import check_centres, getClusters
from .layers.heads import layerTotalAvgPool, layerTotalMaxPool, layerWholeL2Normalize
from .layers.normalize import Normalize
from .layers.vlad import layerVLAD, layerVLADv2
from .nettools import netOutputDim
from .option import opt
from .simplenn import SimpleNN

K_CLUSTERS = 64


def parse_method(method: str) -> tuple[bool, str, bool]:
    """addLayers' reading of ``opts.method`` ('_'-separated options) -> (preL2, core, intra),
    core one of 'max', 'avg', 'vlad', 'vladv2'.  Raises MATLAB's errors: 'Unsupported
    method "..."' without a core, 'Unsupported options (method=...): ...' for leftovers
    (e.g. 'intra' with max/avg).  Repeated options count once, as removeOpt removes all."""
    left = method.split("_")

    def take(o: str) -> bool:
        nonlocal left
        found = o in left
        left = [x for x in left if x != o]
        return found

    preL2 = take("preL2")
    intra = False
    if take("max"):
        core = "max"
    elif take("avg"):
        core = "avg"
    elif "vlad" in left or "vladv2" in left:
        core = "vladv2" if take("vladv2") else "vlad"
        take(core)
        intra = take("intra")
    else:
        raise ValueError(f'Unsupported method "{method}"')
    if left:
        raise ValueError(f"Unsupported options (method={method}): {', '.join(left)}")
    return preL2, core, intra


def head_layer_names(method: str) -> list[str]:
    """The names of the layers addLayers appends for ``method``, known before any
    clustering (so options naming layers can be checked first)."""
    preL2, core, intra = parse_method(method)
    return ["preL2"] * preL2 + ["vlad:core" if core.startswith("vlad") else f"{core}:core"] + ["vlad:intranorm"] * intra + ["postL2"]


def l2normalize_col(x: np.ndarray) -> np.ndarray:
    """relja_l2normalize_col: every column divided by (its L2 norm + 1e-12)."""
    return x / (np.sqrt((x.astype(np.float64) ** 2).sum(0, keepdims=True)) + 1e-12).astype(x.dtype)


def vlad_alpha(clsts: np.ndarray, trainDescs: np.ndarray) -> float:
    """addLayers' alpha for layerVLAD: -log(0.01) / mean over descriptors of
    (largest - second largest) dot product with the L2-normalised centres."""
    dots = l2normalize_col(clsts).T @ trainDescs                     # K x N
    top2 = -np.partition(-dots, 1, axis=0)[:2]
    return -math.log(0.01) / float(np.mean(top2[0].astype(np.float64) - top2[1]))


def vladv2_alpha(clsts: np.ndarray, trainDescs: np.ndarray) -> float:
    """addLayers' alpha for layerVLADv2 (yael_nn(clsts, trainDescs, 2)): -log(0.01) / mean
    over descriptors of (2nd smallest - smallest) squared distance to the centres."""
    c = clsts.astype(np.float64)
    x = trainDescs.astype(np.float64)
    dsq = (c ** 2).sum(0)[:, None] - 2 * c.T @ x + (x ** 2).sum(0)[None, :]   # K x N
    two = np.partition(dsq, 1, axis=0)[:2]
    return -math.log(0.01) / float(np.mean(two[1] - two[0]))


def cluster_file_names(opts, dbTrain, preL2: bool, k: int = K_CLUSTERS) -> tuple[str, str]:
    """(trainDescFn, clstFn) as addLayers names them under localPaths' initData:
    ``<db>_<netID>_<layerName>[_preL2]_traindescs.mat`` and ``..._k064_clst.mat``."""
    init = localPaths()["initData"]
    which = f"{opt(opts, 'netID')}_{opt(opts, 'layerName')}{'_preL2' if preL2 else ''}"
    return (os.path.join(init, f"{dbTrain.name}_{which}_traindescs.mat"),
            os.path.join(init, f"{dbTrain.name}_{which}_k{k:03d}_clst.mat"))


def addLayers(net: SimpleNN, opts, dbTrain) -> SimpleNN:
    """addLayers.m: append the head named by ``opts.method`` ('vlad_preL2_intra' is the
    default of trainWeakly; also vladv2, with or without preL2/intra, max, avg, e.g.
    'vlad_preL2', 'max', 'preL2_avg') and end with layerWholeL2Normalize('postL2').

    Layers: [preL2 (normalize [2D 1e-12 1 0.5])], then 'max:core' | 'avg:core' |
    'vlad:core' (+ 'vlad:intranorm' with intra), then 'postL2'.  For VLAD the K=64 centres
    come from :func:`~matnet.get_clusters.getClusters` (files under localPaths' initData,
    MATLAB's names, so the authors' released files are used as they are) and alpha from the
    training descriptors (see :func:`vlad_alpha`, :func:`vladv2_alpha`).
    ``meta.sessionID`` gets '_<db name>' (VLAD only) and '_<method>'; ``meta.epoch`` = 0.
    ``opts`` needs method, netID, layerName, useGPU (attributes or dict keys).  ``net`` is
    modified in place and returned; an unsupported method raises before anything is done.
    """
    method = opt(opts, "method")
    preL2, core, intra = parse_method(method)
    if "sessionID" not in net.meta:
        raise ValueError("addLayers: net.meta has no 'sessionID' (networks from loadNet have one)")
    _, (_, _, d) = netOutputDim(net)
    norm = [2 * d, 1e-12, 1, 0.5]
    if preL2:
        net.layers.append(Normalize("preL2", norm))
    if core == "max":
        net.layers.append(layerTotalMaxPool("max:core"))
    elif core == "avg":
        net.layers.append(layerTotalAvgPool("avg:core"))
    else:
        trainDescFn, clstFn = cluster_file_names(opts, dbTrain, preL2)
        getClusters(net, opts, clstFn, K_CLUSTERS, dbTrain, trainDescFn)
        if not os.path.isfile(trainDescFn):
            raise FileNotFoundError(f"addLayers: {trainDescFn} (training descriptors, needed for "
                                    f"alpha) does not exist next to the cluster file {clstFn}")
        trainDescs = np.asarray(read_train_descs(trainDescFn), dtype=np.float32)
        clsts = check_centres(clstFn, K_CLUSTERS, d)
        if trainDescs.shape[0] != d:
            raise ValueError(f"{trainDescFn}: training descriptors have D={trainDescs.shape[0]}, "
                             f"the network's output has D={d}")
        net.meta["sessionID"] = f"{net.meta['sessionID']}_{dbTrain.name}"
        if core == "vladv2":
            alpha = vladv2_alpha(clsts, trainDescs)
            layer = layerVLADv2("vlad:core").constructor(
                [alpha * 2 * clsts, -alpha * (clsts.astype(np.float64) ** 2).sum(0, keepdims=True), -clsts])
        else:
            alpha = vlad_alpha(clsts, trainDescs)
            layer = layerVLAD("vlad:core").constructor([alpha * l2normalize_col(clsts), clsts])
        net.layers.append(layer)
        if intra:
            net.layers.append(Normalize("vlad:intranorm", norm))
    net.layers.append(layerWholeL2Normalize("postL2"))
    net.meta["sessionID"] = f"{net.meta['sessionID']}_{method}"
    net.meta["epoch"] = 0
    return net
