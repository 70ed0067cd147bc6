"""The one CPU/GPU policy: :func:`compute_device` turns a ``useGPU`` option (MATLAB's
boolean, or the command line's ``--device auto|cpu|cuda``) into the torch device every
computation of matnet runs on."""
from __future__ import annotations

import warnings

import torch

_WARNED = False  # the fallback warning is given once per process


def compute_device(useGPU=None) -> torch.device:
    """The device for ``useGPU``:

    - None, 'auto': a GPU when one is present, else the CPU;
    - True, 'true', 'cuda', 'gpu', 'cuda:N' or a CUDA ``torch.device``: that GPU; without
      CUDA, a warning (once per process) and the CPU -- MATLAB would fail in gpuArray;
    - False, 'false', 'cpu' or a CPU ``torch.device``: the CPU.
    """
    global _WARNED
    if isinstance(useGPU, torch.device):
        want = useGPU
    elif useGPU is None or (isinstance(useGPU, str) and useGPU.lower() == "auto"):
        want = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif isinstance(useGPU, str):
        text = useGPU.lower()
        if text in ("true", "gpu"):
            text = "cuda"
        elif text == "false":
            text = "cpu"
        try:
            want = torch.device(text)
        except RuntimeError:
            raise ValueError(f"useGPU/--device {useGPU!r}: use auto, cpu or cuda (true/false)") from None
    else:
        want = torch.device("cuda" if useGPU else "cpu")
    if want.type == "cuda" and not torch.cuda.is_available():
        if not _WARNED:
            _WARNED = True
            warnings.warn("a GPU was asked for (useGPU / --device cuda) but no CUDA device is available: "
                          "running on the CPU", stacklevel=2)
        return torch.device("cpu")
    return want


def uses_gpu(useGPU=None) -> bool:
    """Whether :func:`compute_device` gives a GPU for ``useGPU``."""
    return compute_device(useGPU).type == "cuda"
