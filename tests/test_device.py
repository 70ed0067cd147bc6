"""matnet.device.compute_device: the one CPU/GPU policy (useGPU None/bool, --device
auto/cpu/cuda, MATLAB's true/false), the CPU with one warning when a GPU is asked for and
absent; every module that picks a device uses it."""
import re
import warnings
from pathlib import Path

import pytest
import torch

from matnet import device as device_mod
from matnet.device import compute_device, uses_gpu

GPU = torch.cuda.is_available()


@pytest.mark.parametrize("useGPU", [False, "false", "cpu", "CPU", torch.device("cpu")])
def test_cpu_asked(useGPU):
    assert compute_device(useGPU) == torch.device("cpu") and not uses_gpu(useGPU)


@pytest.mark.parametrize("useGPU", [None, "auto"])
def test_auto_takes_a_gpu_when_present(useGPU):
    assert compute_device(useGPU).type == ("cuda" if GPU else "cpu")


def test_bad_text_names_the_option():
    with pytest.raises(ValueError, match="useGPU/--device 'tpu-ish'"):
        compute_device("tpu-ish")


@pytest.mark.skipif(GPU, reason="the fallback needs a machine without CUDA")
def test_gpu_asked_and_absent_warns_once(monkeypatch):
    monkeypatch.setattr(device_mod, "_WARNED", False)
    with pytest.warns(UserWarning, match="no CUDA device"):
        assert compute_device(True) == torch.device("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for asked in ("cuda", "true", "gpu", torch.device("cuda"), True):
            assert compute_device(asked) == torch.device("cpu")


@pytest.mark.skipif(not GPU, reason="needs CUDA")
def test_gpu_asked_and_present():
    assert compute_device(True).type == "cuda" and compute_device("cuda:0") == torch.device("cuda", 0)


def test_no_other_module_decides_the_device():
    """torch.cuda.is_available() is read in matnet/device.py only (the GPU suite and the
    selftest command, which check for a GPU to report its absence, excepted)."""
    root = Path(__file__).resolve().parents[1]
    allowed = {"matnet/device.py", "matnet/commands/selftest.py"}
    found = [f"{f.relative_to(root)}:{i}" for pkg in ("matnet", "converters", "reference")
             for f in (root / pkg).rglob("*.py") if str(f.relative_to(root)) not in allowed
             and not str(f.relative_to(root)).startswith("matnet/gpu_suite/")
             for i, line in enumerate(f.read_text().splitlines(), 1)
             if re.search(r"cuda\.is_available\(\)", line)]
    assert not found, found
