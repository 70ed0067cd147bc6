"""A whole NetVLAD network (trunk, NetVLAD, normalisations, WPCA) as a standalone
ONNX or TorchScript file, for inference without matnet.

The file computes :class:`~matnet.descriptor_net.DescriptorNet`: input ``images``
N x 3 x H x W RGB float32 in 0..255 (the average colour is subtracted inside), output
``descriptors`` N x dims, L2-normalised, MATLAB order (``dims`` = cropToDim).  Batch
size and image size are dynamic.  While traced, the layers whose exact backward is a
custom autograd Function run the same forward as plain torch ops
(:func:`matnet.layers.base.exporting`).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..descriptor_net import DescriptorNet
from ..simplenn import SimpleNN

INPUT, OUTPUT = "images", "descriptors"


def example_images(net: SimpleNN, n: int = 2) -> torch.Tensor:
    """A random N x 3 x H x W batch in 0..255 of the network's nominal size: that of
    ``meta.normalization.averageImage``, or ``imageSize`` for a 1x1 average (as netOutputDim)."""
    norm = net.meta.get("normalization", {})
    avg = np.asarray(norm.get("averageImage", np.zeros((1, 1, 3))))
    h, w = (avg.shape + (1, 1))[:2]
    if (h, w) == (1, 1):
        h, w = (int(v) for v in np.asarray(norm.get("imageSize", [224, 224])).reshape(-1)[:2])
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(0)) * 255


def _atomic(out, write) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file to ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(out.with_name(f".{out.name}.{os.getpid()}.tmp"))  # created by write(): umask permissions
    try:
        write(tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def export_onnx(net: SimpleNN, out, dims: int | None = None, opset: int | None = None) -> Path:
    """Write ``net`` as an ONNX model (torch.onnx's dynamo exporter, one file: no
    external data, so up to 2 GB of weights); dynamic batch, height and width."""
    model = DescriptorNet(net, dims).eval()
    dyn = {"x": {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}}

    def write(tmp):
        with torch.no_grad():
            prog = torch.onnx.export(model, (example_images(net),), dynamo=True, input_names=[INPUT],
                                     output_names=[OUTPUT], dynamic_shapes=dyn, opset_version=opset,
                                     external_data=False, verbose=False)
        prog.save(tmp)
    return _atomic(out, write)


def export_torchscript(net: SimpleNN, out, dims: int | None = None) -> Path:
    """Write ``net`` as a traced TorchScript module (``torch.jit.load(out)``); shapes are
    traced symbolically, so batch and image size stay free."""
    model = DescriptorNet(net, dims).eval()

    def write(tmp):
        with torch.no_grad(), warnings.catch_warnings():
            # the layers' input checks read shapes as Python values; they only raise
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(model, example_images(net))
        torch.jit.save(traced, tmp)
    return _atomic(out, write)
