"""matnet: a faithful PyTorch port of NetVLAD (Arandjelovic et al.) and MatConvNet's SimpleNN.

MATLAB names of mirrored functions are the public names; activations are torch
N x C x H x W and weights keep MatConvNet shapes (see :mod:`matnet.layout`).
Image/query ids are 0-based here (1-based in MATLAB).

This package face imports nothing eagerly: each public name is loaded from the
module that holds it on first use (PEP 562), so the modules below it (the engine,
``converters``, the pipeline) import each other in one direction only and never
through this face.  ``load_net``/``save_net`` read and write every network file.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module holding it (dependency order: engine, converters, pipeline)
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["Layer", "LayerError", "layer_from_struct", "layerTotalAvgPool", "layerTotalMaxPool",
                     "layerVLAD", "layerVLADv2", "layerWholeL2Normalize"], "matnet.layers"),
    **dict.fromkeys(["matlab_to_torch", "torch_to_matlab"], "matnet.layout"),
    **dict.fromkeys(["SimpleNN", "vl_simplenn"], "matnet.simplenn"),
    **dict.fromkeys(["cropToLayer", "layerNames", "layerTypes", "netOutputDim", "netPrepareForTest",
                     "netPrepareForTrain", "swapLayersForEfficiency", "whichLayer"], "matnet.nettools"),
    **dict.fromkeys(["load_net", "save_net"], "converters.network"),
    "vl_imreadjpeg": "matnet.images",
    **dict.fromkeys(["closePosition", "dbBase", "dbPitts", "dbTiny", "dbTokyo247", "dbTokyoTimeMachine",
                     "dbVPR", "dbMSLS", "dbSpec", "db_from_spec", "localPaths", "parse_dataset"], "matnet.datasets"),
    "addLayers": "matnet.add_layers",
    "getClusters": "matnet.get_clusters",
    **dict.fromkeys(["computeRepresentation", "serialAllFeats"], "matnet.extract"),
    **dict.fromkeys(["rawNnSearch", "recallAtN", "testCore", "testCoreRank", "testFromFn"], "matnet.recall_at_n"),
    **dict.fromkeys(["addPCA", "relja_PCA"], "matnet.pca"),
    **dict.fromkeys(["getBestEpoch", "pickBestNet"], "matnet.pick_best"),
    "loadNet": "matnet.pretrained",
    "plotResults": "matnet.plots",
    "TrainWeaklyOpts": "matnet.train.opts",
    "trainWeakly": "matnet.train.train_weakly",
    "saveNet": "matnet.train.checkpoint",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # what editors and type checkers see; at run time __getattr__ loads each on first use
    from matnet.layers import (Layer, LayerError, layer_from_struct, layerTotalAvgPool, layerTotalMaxPool,
                               layerVLAD, layerVLADv2, layerWholeL2Normalize)
    from matnet.layout import matlab_to_torch, torch_to_matlab
    from matnet.simplenn import SimpleNN, vl_simplenn
    from matnet.nettools import (cropToLayer, layerNames, layerTypes, netOutputDim, netPrepareForTest,
                                 netPrepareForTrain, swapLayersForEfficiency, whichLayer)
    from converters.network import load_net, save_net
    from matnet.images import vl_imreadjpeg
    from matnet.datasets import (closePosition, dbBase, dbPitts, dbTiny, dbTokyo247, dbTokyoTimeMachine, dbVPR,
                                 dbMSLS, dbSpec, db_from_spec, localPaths, parse_dataset)
    from matnet.add_layers import addLayers
    from matnet.get_clusters import getClusters
    from matnet.extract import computeRepresentation, serialAllFeats
    from matnet.recall_at_n import rawNnSearch, recallAtN, testCore, testCoreRank, testFromFn
    from matnet.pca import addPCA, relja_PCA
    from matnet.pick_best import getBestEpoch, pickBestNet
    from matnet.pretrained import loadNet
    from matnet.plots import plotResults
    from matnet.train.opts import TrainWeaklyOpts
    from matnet.train.train_weakly import trainWeakly
    from matnet.train.checkpoint import saveNet
    from . import export, nn


# subpackages/modules reachable as attributes (``matnet.nn.NetVLAD`` after ``import matnet``)
_SUBMODULES = ("nn", "export")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"matnet.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'matnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))
