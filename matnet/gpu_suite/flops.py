"""Floating-point operations of a SimpleNN's forward pass, counted from its layers.

A convolution costs 2 kh kw Cin Cout Ho Wo (a multiply and an add per weight and output
pixel; biases and the elementwise layers -- relu, pooling, normalisations -- are not
counted), with MatConvNet's output size floor((H + pads - dilate (k - 1) - 1) / stride) + 1;
pooling changes the size as MatConvNet's vl_nnpool.  layerVLAD / layerVLADv2 cost 4 H W D K
(the 1x1 soft-assignment convolution and the residual aggregation) and leave a 1 x 1 map,
on which WPCA is a 1x1 convolution.  VGG16-NetVLAD(K=64)-WPCA-4096 at 480 x 640: 187.9
GFLOP in the 13 convolutions, 0.16 in NetVLAD, 0.27 in WPCA = 188.3 GFLOP per image.
"""
from __future__ import annotations

from ..layers.conv import Conv
from ..layers.pool import Pool
from ..layers.vlad import layerVLAD, layerVLADv2

PUBLISHED_GFLOP = 188.3  # VGG16-NetVLAD(K=64)-WPCA-4096, one 480 x 640 image (issue 23)


def network_flops(net, H: int, W: int, backprop_from: int | None = None) -> dict:
    """{'total': FLOPs of one H x W image, 'trainable': FLOPs of the layers from
    ``backprop_from`` (0-based; None: 0) on, 'layers': [(name, FLOPs)]}."""
    total, trainable, layers = 0.0, 0.0, []
    for i, layer in enumerate(net.layers):
        f = 0.0
        if isinstance(layer, Conv):
            kh, kw, cin, cout = (int(s) for s in layer.weights[0].shape)
            t, b, l, r = layer.pad
            H = (H + t + b - layer.dilate[0] * (kh - 1) - 1) // layer.stride[0] + 1
            W = (W + l + r - layer.dilate[1] * (kw - 1) - 1) // layer.stride[1] + 1
            f = 2.0 * kh * kw * cin * cout * H * W
        elif isinstance(layer, Pool):
            t, b, l, r = layer.pad
            H = (H + t + b - layer.pool[0]) // layer.stride[0] + 1
            W = (W + l + r - layer.pool[1]) // layer.stride[1] + 1
        elif isinstance(layer, (layerVLAD, layerVLADv2)):
            f = 4.0 * H * W * layer.D * layer.K
            H = W = 1
        total += f
        if i >= (backprop_from or 0):
            trainable += f
        if f:
            layers.append((layer.name, f))
    return {"total": total, "trainable": trainable, "layers": layers}
