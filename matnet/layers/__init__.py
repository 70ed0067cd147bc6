"""SimpleNN layer types with MatConvNet semantics (see :mod:`matnet.layers.base`)."""
from .base import (CUSTOM_CLASSES, STRUCT_TYPES, Layer, LayerError, layer_from_struct,
                   register_class, register_type)
from .conv import Conv
from .elementwise import Dropout, ReLU, Softmax
from .normalize import Normalize
from .pool import Pool
from .heads import layerTotalAvgPool, layerTotalMaxPool, layerWholeL2Normalize
from .vlad import layerVLAD, layerVLADv2

__all__ = ["Layer", "LayerError", "layer_from_struct", "register_type", "register_class",
           "STRUCT_TYPES", "CUSTOM_CLASSES", "Conv", "Pool", "Normalize", "ReLU", "Dropout", "Softmax",
           "layerVLAD", "layerVLADv2", "layerWholeL2Normalize", "layerTotalMaxPool", "layerTotalAvgPool"]
