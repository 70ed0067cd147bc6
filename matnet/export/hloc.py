"""The network file hloc's NetVLAD extractor loads, from a matnet network.

Follows cvg/Hierarchical-Localization at c13273bd0ecc2917a35910fd843712a1c6243193
(``hloc/extractors/netvlad.py``).  hloc reads a ``*_struct.mat`` (MAT v5, classdef
layers as plain structs, as netvlad_tf_open's net_class2struct.m writes them) with
``scipy.io.loadmat(..., struct_as_record=False, squeeze_me=True)`` and builds:

* ``backbone`` = torchvision ``vgg16().features[:-2]``, each Conv2d taking
  ``net.layers{i}.weights`` of the same position (conv positions agree whatever the
  relu/pool order);
* ``netvlad`` = its NetVLADLayer: ``score_proj`` (Conv1d without bias) from
  ``layers{31}.weights{1}`` (D x K), ``centers`` = -``layers{31}.weights{2}``;
  preL2, intra-normalisation and L2 in its forward; MATLAB's descriptor order;
* ``whiten`` = Linear from ``layers{34}.weights`` (WPCA), then L2 (conf ``whiten``);
* the input mean ``meta.normalization.averageImage(1,1,:)`` subtracted from 255 x image.

So the file must have the released layout (:mod:`matnet.export.vgg16_layout`) with a
``layerVLAD`` (its score projection has no bias: no layerVLADv2).  Put it where hloc
caches its download, ``<torch.hub.get_dir()>/netvlad/VGG16-NetVLAD-Pitts30K.mat`` (or
-TokyoTM), and hloc uses it; a network without WPCA needs ``whiten: False``.
"""
from __future__ import annotations

import warnings

import numpy as np

from converters.network import save_net

from ..layers.conv import Conv
from ..layers.vlad import layerVLAD
from ..simplenn import SimpleNN
from .vgg16_layout import WPCA_POS, parse_vgg16_netvlad, wpca_rows

TARGET = "hloc"


def export_hloc(net: SimpleNN, out, dims: int | None = None):
    """Write ``net`` (WPCA cropped to its first ``dims`` outputs) as the v5 struct MAT
    file hloc parses.  ``out`` must end in ``.mat``.  Returns the path."""
    if not str(out).endswith(".mat"):
        raise ValueError(f"{out}: hloc reads a .mat file (e.g. VGG16-NetVLAD-Pitts30K.mat)")
    p = parse_vgg16_netvlad(net, TARGET)
    if not isinstance(p.vlad, layerVLAD):
        raise ValueError(f"{TARGET}: hloc's NetVLADLayer has no assignment bias; this network's "
                         f"'{p.vlad.name}' is a {p.vlad.class_name}")
    layers = list(net.layers)
    if p.wpca is None:
        if dims is not None:
            raise ValueError(f"{TARGET}: dims needs a network with WPCA")
        warnings.warn(f"{TARGET}: the network has no WPCA; use hloc's NetVLAD with conf whiten=False")
    elif dims is not None:
        w, b = wpca_rows(p.wpca, dims, TARGET)
        layers[WPCA_POS] = Conv(p.wpca.name, [w.t().reshape(1, 1, w.shape[1], -1).numpy(), b.numpy()])
    meta = dict(net.meta)
    norm = dict(meta.get("normalization", {}))
    avg = np.asarray(norm.get("averageImage"))
    if avg.ndim < 2 or min(avg.shape[:2]) < 2:
        # hloc reads averageImage[0, 0] after squeeze_me: a 1x1x3 mean would squeeze to 3 values
        size = np.asarray(norm.get("imageSize", [224, 224])).reshape(-1)[:2].astype(int)
        norm["averageImage"] = np.tile(p.mean.reshape(1, 1, 3), (size[0], size[1], 1))
    meta["normalization"] = norm
    return save_net(SimpleNN(layers, meta), out, format="5", struct=True)
