"""A miniature of the released VGG16 NetVLAD networks, for tests of the formats that
expect their layout (torch.hub, ONNX, the peers' weight files).

Layers in the released order: VGG16's conv1_1 .. conv5_3 (3x3, pad 1) with every
relu/max-pool pair swapped as loadNet leaves it, then 'preL2', 'vlad:core'
(layerVLAD, or layerVLADv2), 'vlad:intranorm', 'postL2' and, with ``pca_dim``,
'WPCA' (1x1 conv) and 'finalL2'.  Only the widths are smaller; weights are random
(He-normal convolutions, so activations keep their scale through 13 layers) but for
the centres, conv5_3 features of a random image or of given images (as getClusters
samples training images), and alpha from addLayers' rule.
"""
from __future__ import annotations

import numpy as np
import torch

from ..layers.conv import Conv
from ..layers.elementwise import ReLU
from ..layers.heads import layerWholeL2Normalize
from ..layers.pool import Pool
from ..nettools import swapLayersForEfficiency
from ..nn import NetVLAD, l2_channels
from ..simplenn import SimpleNN

VGG16_BLOCKS = (2, 2, 3, 3, 3)            # convolutions per block
VGG16_WIDTHS = (64, 128, 256, 512, 512)   # output channels per block


def vgg16_netvlad(widths=VGG16_WIDTHS, num_clusters: int = 64, pca_dim: int | None = 4096,
                  vladv2: bool = False, average_colour=(123.68, 116.779, 103.939),
                  image_size=(224, 224), seed: int = 0, centre_images=None) -> SimpleNN:
    """The network; ``meta.normalization.averageImage`` is ``image_size`` x 3 filled with
    ``average_colour`` (default MatConvNet's VGG16 mean), ``netID`` 'vd16'.
    ``centre_images``: N x 3 x H x W float images, 0..255, whose conv5_3 features give the
    centres (default: one uniform-noise image)."""
    rng = np.random.default_rng(seed)
    layers, cin = [], 3
    for b, (n, width) in enumerate(zip(VGG16_BLOCKS, widths), start=1):
        for i in range(1, n + 1):
            std = np.sqrt(2.0 / (9 * cin))
            layers.append(Conv(f"conv{b}_{i}", [(rng.standard_normal((3, 3, cin, width)) * std).astype(np.float32),
                                                (rng.standard_normal(width) * 0.1).astype(np.float32)], pad=1))
            layers.append(ReLU(f"relu{b}_{i}"))
            cin = width
        layers.append(Pool(f"pool{b}", [2, 2], stride=2))
    layers = layers[:-2]  # cropped at conv5_3: no relu5_3, no pool5
    # centres: conv5_3 features (preL2-normalised), as getClusters samples them
    with torch.no_grad():
        if centre_images is None:
            x = torch.from_numpy(rng.uniform(-128, 128, (1, 3) + tuple(image_size)).astype(np.float32))
        else:
            x = torch.as_tensor(centre_images, dtype=torch.float32) - torch.tensor(
                average_colour, dtype=torch.float32).reshape(1, 3, 1, 1)
        feats = l2_channels(SimpleNN(layers)(x)).permute(0, 2, 3, 1).reshape(-1, cin)
    head = NetVLAD(num_clusters, cin, vladv2=vladv2)
    head.init_from(feats[rng.choice(len(feats), num_clusters, replace=False)], feats)
    layers += head.to_layers()
    if pca_dim:
        d = num_clusters * cin
        layers += [Conv("WPCA", [(rng.standard_normal((1, 1, d, pca_dim)) / np.sqrt(d)).astype(np.float32),
                                 (rng.standard_normal(pca_dim) * 0.01).astype(np.float32)]),
                   layerWholeL2Normalize("finalL2")]
    meta = {"normalization": {
        "averageImage": np.tile(np.asarray(average_colour, np.float32).reshape(1, 1, 3), tuple(image_size) + (1,)),
        "imageSize": np.array([[image_size[0], image_size[1], 3]], np.float64)},
        "netID": "vd16", "sessionID": "vd16_synthetic", "epoch": 0}
    return swapLayersForEfficiency(SimpleNN(layers, meta))
