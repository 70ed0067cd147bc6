"""matnet: a faithful PyTorch port of NetVLAD (Arandjelovic et al.) and MatConvNet's SimpleNN.

MATLAB names of mirrored functions are the public names; activations are torch
N x C x H x W and weights keep MatConvNet shapes (see :mod:`matnet.layout`).
Image/query ids are 0-based here (1-based in MATLAB).
"""
from .layers import (Layer, LayerError, layer_from_struct, layerTotalAvgPool, layerTotalMaxPool,
                     layerVLAD, layerVLADv2, layerWholeL2Normalize)
from .layout import matlab_to_torch, torch_to_matlab
from .nettools import (cropToLayer, layerNames, layerTypes, netOutputDim, netPrepareForTest,
                       netPrepareForTrain, swapLayersForEfficiency, whichLayer)
from .simplenn import SimpleNN, vl_simplenn
from .add_layers import addLayers
from .get_clusters import getClusters
from .images import vl_imreadjpeg
from .datasets import (closePosition, dbBase, dbPitts, dbTiny, dbTokyo247, dbTokyoTimeMachine,
                       localPaths)
from .extract import computeRepresentation, serialAllFeats
from .evaluate import rawNnSearch, recallAtN, testCore, testCoreRank, testFromFn
from .pca import addPCA, relja_PCA
from .pick_best import getBestEpoch, pickBestNet
from .load_net import loadNet
from .plot_results import plotResults
from .train.opts import TrainWeaklyOpts
from .train.train_weakly import trainWeakly
from .train.checkpoint import saveNet

__version__ = "0.1.0"

__all__ = [
    "SimpleNN", "vl_simplenn", "Layer", "LayerError", "layer_from_struct", "matlab_to_torch", "torch_to_matlab",
    "layerNames", "layerTypes", "whichLayer", "cropToLayer", "swapLayersForEfficiency", "netOutputDim",
    "netPrepareForTest", "netPrepareForTrain",
    "layerVLAD", "layerVLADv2", "layerWholeL2Normalize", "layerTotalMaxPool", "layerTotalAvgPool",
    "addLayers", "getClusters", "vl_imreadjpeg",
    "dbBase", "dbPitts", "dbTokyo247", "dbTokyoTimeMachine", "dbTiny", "closePosition", "localPaths",
    "serialAllFeats", "computeRepresentation", "testFromFn", "testCore", "testCoreRank", "recallAtN",
    "rawNnSearch", "addPCA", "relja_PCA", "getBestEpoch", "pickBestNet", "loadNet", "plotResults",
    "TrainWeaklyOpts", "trainWeakly", "saveNet",
]
