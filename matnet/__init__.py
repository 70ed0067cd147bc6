"""matnet: a faithful PyTorch port of NetVLAD (Arandjelovic et al.) and MatConvNet's SimpleNN.

MATLAB names of mirrored functions are the public names; activations are torch
N x C x H x W and weights keep MatConvNet shapes (see :mod:`matnet.layout`).
Image/query ids are 0-based here (1-based in MATLAB).
"""
from .layers import Layer, LayerError, layer_from_struct
from .layout import matlab_to_torch, torch_to_matlab
from .nettools import (cropToLayer, layerNames, layerTypes, netOutputDim, netPrepareForTest,
                       netPrepareForTrain, swapLayersForEfficiency, whichLayer)
from .simplenn import SimpleNN, vl_simplenn

__version__ = "0.1.0"

__all__ = ["SimpleNN", "vl_simplenn", "Layer", "LayerError", "layer_from_struct",
           "matlab_to_torch", "torch_to_matlab", "layerNames", "layerTypes", "whichLayer",
           "cropToLayer", "swapLayersForEfficiency", "netOutputDim", "netPrepareForTest",
           "netPrepareForTrain"]
