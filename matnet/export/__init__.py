"""A matnet network handed to other tools: a standalone ONNX or TorchScript graph, or
the weight files of the PyTorch ports (Patch-NetVLAD / pytorch-NetVlad, hloc).
``matnet export`` is the command."""
from .graph import export_onnx, export_torchscript
from .hloc import export_hloc
from .patchnetvlad import export_patchnetvlad

FORMATS = {"onnx": export_onnx, "torchscript": export_torchscript,
           "patchnetvlad": export_patchnetvlad, "hloc": export_hloc}

__all__ = ["export_onnx", "export_torchscript", "export_patchnetvlad", "export_hloc", "FORMATS"]
