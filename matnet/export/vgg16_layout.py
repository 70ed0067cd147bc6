"""The released networks' layout that the PyTorch ports hard-code: torchvision's VGG16
``features`` up to conv5_3, then NetVLAD's head, optionally WPCA.

The SimpleNN must be (0-based positions): 0-28 the VGG16 trunk cropped at conv5_3
(3x3 convolutions with pad 1 and biases, relu, 2x2/2 max pools; a relu and the pool
after it may be in either order, as loadNet's swapLayersForEfficiency leaves them),
29 preL2 (normalize [>=2D 1e-12 1 0.5]), 30 layerVLAD or layerVLADv2, 31 the intra
normalisation (same normalize), 32 layerWholeL2Normalize, and optionally 33 a 1x1 conv
(WPCA) and 34 layerWholeL2Normalize.  :func:`parse_vgg16_netvlad` checks it and names
the first layer that differs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..descriptor_net import average_colour
from ..layers.conv import Conv
from ..layers.elementwise import ReLU
from ..layers.heads import layerWholeL2Normalize
from ..layers.normalize import Normalize
from ..layers.pool import Pool
from ..layers.vlad import layerVLAD, layerVLADv2
from ..simplenn import SimpleNN

# torchvision's vgg16().features[:-2]: C conv, R relu, P max pool
VGG16_TRUNK = "CRCRP" "CRCRP" "CRCRCRP" "CRCRCRP" "CRCRC"
VGG16_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
TRUNK_LEN = len(VGG16_TRUNK)  # 29
VLAD_POS, WPCA_POS = TRUNK_LEN + 1, TRUNK_LEN + 4


@dataclass
class VGG16NetVLAD:
    """The parts of a network with the released layout."""
    convs: list           # the 13 Conv layers, in order
    conv_index: list      # their positions in torchvision's features (0, 2, 5, ...)
    vlad: object          # layerVLAD or layerVLADv2
    wpca: Conv | None
    mean: np.ndarray      # averageImage(1,1,:), 3 values

    @property
    def widths(self) -> tuple:
        return tuple(int(c.weights[0].shape[3]) for c in self.convs)


class LayoutError(ValueError):
    """The network does not have the layout a peer's code expects."""


def _trunk_order(layers) -> list:
    """Layer positions reordered so that every pool follows its relu (undoing swapLayersForEfficiency)."""
    order = list(range(len(layers)))
    i = 0
    while i < len(order) - 1:
        if isinstance(layers[order[i]], Pool) and isinstance(layers[order[i + 1]], ReLU):
            order[i], order[i + 1] = order[i + 1], order[i]
            i += 2
        else:
            i += 1
    return order


def _is_l2_normalize(layer, d: int) -> bool:
    return isinstance(layer, Normalize) and layer.depth >= 2 * d and layer.kappa == 1e-12 \
        and layer.alpha == 1 and layer.beta == 0.5


def _check_trunk(layers, at, fail) -> tuple[list, list, int]:
    """parse_vgg16_netvlad's VGG16 trunk (conv1_1..conv5_3 with relus and pools, in the
    order :func:`_trunk_order` finds): its convolutions, their positions in VGG16_TRUNK
    and the trunk's output channels; ``at``/``fail`` give the parse's errors."""
    order = _trunk_order(layers[:TRUNK_LEN])
    convs, conv_index, cin = [], [], 3
    for j, kind in enumerate(VGG16_TRUNK):
        i = order[j] if j < len(order) else j
        layer = at(i, {"C": "a convolution", "R": "a relu", "P": "a 2x2 max pool"}[kind])
        if kind == "C":
            if not isinstance(layer, Conv):
                raise fail(i, f"expected a convolution, found {layer.class_name or layer.type}")
            w = layer.weights[0]
            if tuple(w.shape[:3]) != (3, 3, cin) or layer.stride != (1, 1) or layer.pad != (1, 1, 1, 1) \
                    or layer.dilate != (1, 1) or len(layer.weights) < 2 or layer.weights[1].numel() != w.shape[3]:
                raise fail(i, f"expected 3x3x{cin} filters with biases, stride 1, pad 1; found "
                              f"{'x'.join(map(str, w.shape))}, stride {layer.stride}, pad {layer.pad}")
            convs.append(layer)
            conv_index.append(j)
            cin = int(w.shape[3])
        elif kind == "R":
            if not isinstance(layer, ReLU) or layer.leak:
                raise fail(i, "expected a relu (leak 0)")
        elif not (isinstance(layer, Pool) and layer.method == "max" and layer.pool == (2, 2)
                  and layer.stride == (2, 2) and not any(layer.pad)):
            raise fail(i, "expected a 2x2 max pool with stride 2, no padding")
    return convs, conv_index, cin


def parse_vgg16_netvlad(net: SimpleNN, target: str) -> VGG16NetVLAD:
    """Check the layout (module doc) and return its parts; ``target`` names the peer in errors."""
    layers = list(net.layers)

    def fail(i, problem):
        name = layers[i].name if i < len(layers) else "-"
        return LayoutError(f"{target}: layer {i + 1} ('{name}'): {problem} (the {target} layout is VGG16 "
                           f"conv1_1..conv5_3, preL2, NetVLAD, intra-normalisation, L2[, WPCA, L2])")

    def at(i, expected):
        """layers[i], or the error that the network ends before it."""
        if i >= len(layers):
            last = f"layer {len(layers)} ('{layers[-1].name}')" if layers else "no layer"
            raise LayoutError(f"{target}: the network ends at {last}; layer {i + 1} should be {expected} "
                              f"(the {target} layout is VGG16 conv1_1..conv5_3, preL2, NetVLAD, "
                              f"intra-normalisation, L2[, WPCA, L2])")
        return layers[i]

    convs, conv_index, d = _check_trunk(layers, at, fail)
    if not _is_l2_normalize(at(TRUNK_LEN, "the preL2 normalisation"), d):
        raise fail(TRUNK_LEN, "expected the preL2 normalisation (normalize [2D 1e-12 1 0.5])")
    vlad = at(VLAD_POS, "layerVLAD or layerVLADv2")
    if not isinstance(vlad, (layerVLAD, layerVLADv2)) or vlad.D != d:
        raise fail(VLAD_POS, f"expected layerVLAD or layerVLADv2 on {d}-D features")
    if not _is_l2_normalize(at(VLAD_POS + 1, "the intra normalisation"), d):
        raise fail(VLAD_POS + 1, "expected the intra normalisation (normalize [2D 1e-12 1 0.5])")
    if not isinstance(at(VLAD_POS + 2, "layerWholeL2Normalize"), layerWholeL2Normalize):
        raise fail(VLAD_POS + 2, "expected layerWholeL2Normalize")
    wpca = None
    if len(layers) > WPCA_POS:
        wpca = layers[WPCA_POS]
        if not isinstance(wpca, Conv) or tuple(wpca.weights[0].shape[:3]) != (1, 1, vlad.vladDim) \
                or wpca.stride != (1, 1) or any(wpca.pad) or len(wpca.weights) < 2:
            raise fail(WPCA_POS, f"expected a 1x1x{vlad.vladDim} convolution with biases (WPCA)")
        if not isinstance(at(WPCA_POS + 1, "layerWholeL2Normalize after WPCA"), layerWholeL2Normalize):
            raise fail(WPCA_POS + 1, "expected layerWholeL2Normalize after WPCA")
    if len(layers) > WPCA_POS + 2:
        raise fail(WPCA_POS + 2, f"a layer after the final L2 normalisation (the layout ends at layer {WPCA_POS + 2})")
    return VGG16NetVLAD(convs, conv_index, vlad, wpca, average_colour(net))


def wpca_rows(wpca: Conv, dims: int | None, target: str):
    """WPCA filters as a torch-style (out x in) matrix and biases, the first ``dims``
    outputs only (cropToDim: the leading components, L2-normalised after)."""
    w = wpca.weights[0].detach().cpu().reshape(wpca.weights[0].shape[2], -1).t()  # a net on a GPU too
    b = wpca.weights[1].detach().cpu().reshape(-1)
    if dims is not None:
        if not 0 < dims <= w.shape[0]:
            raise ValueError(f"{target}: dims must be between 1 and the WPCA size {w.shape[0]}, got {dims}")
        w, b = w[:dims], b[:dims]
    return w, b
