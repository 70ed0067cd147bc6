"""The checkpoint Patch-NetVLAD and pytorch-NetVlad load, from a matnet network.

Follows QVPR/Patch-NetVLAD at 39ab4e45725b1e7558dc9b108d31a7f3ce900614
(``patchnetvlad/models/models_generic.py``, ``models/netvlad.py``,
``feature_extract.py``) and Nanne/pytorch-NetVlad at
def998ec105b7acde44c83a40364564c72cc7d72 (``main.py``, ``netvlad.py``).  Their model is
an ``nn.Module`` with ``encoder`` = torchvision ``vgg16().features[:-2]`` (conv1_1 ..
conv5_3), ``pool`` = their NetVLAD (``pool.conv.weight`` K x D x 1 x 1, ``pool.conv.bias``
with vladv2, ``pool.centroids`` K x D; always preL2, intra-normalisation and L2) and,
in Patch-NetVLAD with ``num_pcs``, ``WPCA`` = ``Sequential(Conv2d(K*D, num_pcs, 1),
Flatten, L2)``.  Their loaders take the checkpoint's ``'state_dict'`` entry (pytorch-NetVlad also
'epoch' and 'best_score', written here as the network's epoch and 0).

Differences handled:

* Descriptor order: their NetVLAD flattens K x D, element (k, d) at d + D*k, not
  MATLAB's k + K*d; the WPCA input columns are permuted to match, so with WPCA the
  descriptors are the same; without it they are the same values in that order.
* Input: they feed ``(x/255 - m) / s`` (ImageNet m, s), MatConvNet ``x - averageImage``.
  Since x - avg = 255 s (x/255 - m)/s + (255 m - avg), conv1_1's filters are scaled by
  255 s per input channel and its biases get sum(W (255 m - avg)).  This is exact where
  the 3x3 window lies inside the image.  At the border their zero padding is a zero of
  the *normalised* image, i.e. the value 255 m - avg of the mean-subtracted one, where
  MatConvNet pads with 0: conv1_1's outputs on the one-pixel frame differ by the sum of
  W (255 m - avg) over the window's taps outside the image.  The descriptors agree
  exactly (to rounding) when averageImage(1,1,:) = 255 m = (123.675, 116.28, 103.53).
  MatConvNet's VGG16 mean (123.68, 116.779, 103.939) is within half a grey level of it,
  so the difference, confined to that frame's first-layer values, is small but not zero
  (a full-size VGG16 NetVLAD with random weights and a mean about one level off gave
  3e-4 relative in the descriptor, against 6e-6 with 255 m).
* Their resize (Patch-NetVLAD: 480 x 640 by default) is theirs to choose; MATLAB
  NetVLAD runs on the images as they are.

pytorch-NetVlad has no WPCA: it loads files of networks without one.  With a
layerVLADv2 network set ``vladv2 = True`` in Patch-NetVLAD's config / ``--vladv2``.
Patch-NetVLAD reads ``<resumePath><num_pcs>.pth.tar``: name the file that way and set
``num_pcs`` to the WPCA size (``dims``).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..layout import conv_filters_to_torch
from ..nn import NetVLAD
from ..simplenn import SimpleNN
from .graph import write_atomically
from .vgg16_layout import VGG16_WIDTHS, parse_vgg16_netvlad, wpca_rows

TARGET = "patchnetvlad"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def fold_preprocessing(filters: torch.Tensor, biases: torch.Tensor, average_colour) -> tuple:
    """conv1_1 (torch Cout x 3 x h x w, Cout) for input (x/255 - m)/s instead of x - avg."""
    w = filters.double()
    s = torch.tensor(IMAGENET_STD, dtype=torch.float64).reshape(1, 3, 1, 1)
    shift = 255 * torch.tensor(IMAGENET_MEAN, dtype=torch.float64) - torch.as_tensor(
        np.asarray(average_colour, np.float64))
    b = biases.double() + (w * shift.reshape(1, 3, 1, 1)).sum((1, 2, 3))
    return (w * 255 * s).float(), b.float()


def patchnetvlad_state_dict(net: SimpleNN, dims: int | None = None) -> dict:
    """The ``state_dict`` of their model, plain float32 tensors by their key names."""
    p = parse_vgg16_netvlad(net, TARGET)
    if p.widths != VGG16_WIDTHS or p.vlad.D != 512:
        warnings.warn(f"{TARGET}: the trunk's widths {p.widths} are not torchvision VGG16's; the file "
                      f"loads only into a model built with these widths")
    sd = {}
    for n, (conv, idx) in enumerate(zip(p.convs, p.conv_index)):
        w = conv_filters_to_torch(conv.weights[0].detach())
        b = conv.weights[1].detach().reshape(-1)
        if n == 0:
            w, b = fold_preprocessing(w, b, p.mean)
        sd[f"encoder.{idx}.weight"], sd[f"encoder.{idx}.bias"] = w, b
    head = NetVLAD.from_layer(p.vlad, order="K")
    sd.update({f"pool.{k}": v for k, v in head.state_dict().items()})
    if p.wpca is not None:
        w, b = wpca_rows(p.wpca, dims, TARGET)
        k, d = p.vlad.K, p.vlad.D
        w = w.reshape(-1, d, k).transpose(1, 2).reshape(-1, k * d)  # input (k, d): k + K*d -> d + D*k
        sd["WPCA.0.weight"], sd["WPCA.0.bias"] = w[:, :, None, None], b
    elif dims is not None:
        raise ValueError(f"{TARGET}: dims needs a network with WPCA (their NetVLAD output has no cropToDim)")
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in sd.items()}


def export_patchnetvlad(net: SimpleNN, out, dims: int | None = None):
    """Write ``{'epoch', 'best_score', 'state_dict'}`` with ``torch.save`` (what their
    ``torch.load`` reads; plain tensors and numbers only).  Returns the path."""
    epoch = np.asarray(net.meta.get("epoch", 0), dtype=np.float64).reshape(-1)
    ckpt = {"epoch": int(epoch[0]) if epoch.size else 0, "best_score": 0.0,
            "state_dict": patchnetvlad_state_dict(net, dims)}
    return write_atomically(out, lambda tmp: torch.save(ckpt, tmp))
