"""A whole NetVLAD network (trunk, NetVLAD, normalisations, WPCA) as a standalone
ONNX or TorchScript file, for inference without matnet.

The file computes :class:`~matnet.descriptor_net.DescriptorNet`: input ``images``
N x 3 x H x W RGB float32 in 0..255 (the average colour is subtracted inside), output
``descriptors`` N x dims, L2-normalised, MATLAB order (``dims`` = cropToDim).  Batch
size and image size are dynamic.  While traced, the layers whose exact backward is a
custom autograd Function run the same forward as plain torch ops
(:func:`matnet.layers.base.exporting`).

:func:`export_graph` verifies what it wrote before giving it the final name: it runs the
file (onnxruntime / torch.jit.load) and matnet on two images (noise, and a flat grey one
that leaves most clusters without assignment) at two sizes other than the traced one,
and refuses the file above :data:`PROBE_TOLERANCE` relative error.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from converters.atomic_file import atomic_path
from converters.file_lock import output_lock

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


PROBE_TOLERANCE = 1e-4  # relative, per descriptor: what ``matnet export`` accepts


class ExportMismatch(ValueError):
    """The written graph does not compute matnet's descriptors (the file is not kept)."""


@dataclass
class Verification:
    """What :func:`verify_export` measured: the worst relative error ||e - m|| / ||m||
    over the probe descriptors (``inf`` for a NaN where matnet has none), which
    descriptor it was (``worst``), and the probe sizes (H, W)."""
    error: float
    worst: str
    sizes: list

    def __str__(self) -> str:
        sizes = " and ".join(f"{h}x{w}" for h, w in self.sizes)
        return f"worst relative error {self.error:.1e} ({self.worst}) at {sizes}, limit {PROBE_TOLERANCE:.0e}"


def probe_sizes(net: SimpleNN) -> list[tuple[int, int]]:
    """Two image sizes other than the traced (nominal) one, both larger, odd-shaped:
    what :func:`verify_export` runs."""
    h, w = example_images(net, 1).shape[2:]
    return [(h + h // 4 + 1, w + w // 8 + 3), (h + h // 2 + 3, w + w // 4 + 1)]


def probe_batch(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Two images 0..255: uniform noise, and a flat grey one (every pixel alike, so that
    most clusters receive no assignment and the epsilons of the normalisations decide)."""
    noise = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 255
    return torch.cat([noise, torch.full((1, 3, h, w), 128.0)])


def relative_errors(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """||got - want|| / ||want|| per row (inf where got has a NaN or Inf that want has not)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise ExportMismatch(f"the exported graph gives {got.shape} descriptors, matnet {want.shape}")
    err = np.linalg.norm(got - want, axis=1) / np.maximum(np.linalg.norm(want, axis=1), 1e-30)
    bad = ~np.isfinite(got).all(1) & np.isfinite(want).all(1)
    err[bad] = np.inf
    return err


def graph_runner(path, fmt: str):
    """A function images (N x 3 x H x W float32 tensor) -> descriptors (numpy) that runs
    the written file the way a user would: onnxruntime (all its graph optimisations on)
    or ``torch.jit.load``."""
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise OSError("verifying an ONNX file needs onnxruntime (pip install 'matnet[export]'); "
                          "--no-verify skips the check") from e
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: sess.run(None, {INPUT: x.numpy()})[0]
    if fmt == "torchscript":
        module = torch.jit.load(str(path), map_location="cpu")

        def run(x):
            with torch.no_grad():
                return module(x).numpy()
        return run
    raise ValueError(f"cannot verify format {fmt!r} (onnx or torchscript)")


def verify_export(path, fmt: str, net: SimpleNN, dims: int | None = None,
                  tolerance: float = PROBE_TOLERANCE) -> Verification:
    """Run the written file and matnet on :func:`probe_batch` at the two
    :func:`probe_sizes`; raise :class:`ExportMismatch` naming the worst descriptor when
    it differs by more than ``tolerance`` (relative) or has a NaN."""
    run = graph_runner(path, fmt)
    model = DescriptorNet(net, dims).eval()
    worst, where, sizes = -1.0, "", probe_sizes(net)
    for h, w in sizes:
        x = probe_batch(h, w)
        with torch.no_grad():
            want = model(x).numpy()
        err = relative_errors(run(x), want)
        i = int(np.argmax(err))
        if err[i] > worst:
            worst, where = float(err[i]), f"the {('noise', 'flat grey')[i]} image at {h}x{w}"
    v = Verification(worst, where, sizes)
    if not worst <= tolerance:
        raise ExportMismatch(f"the {fmt} graph does not compute matnet's descriptors: {v}"
                             + (" (NaN or Inf in its output)" if np.isinf(worst) else ""))
    return v


def write_atomically(out, write, check=None) -> Path:
    """Call ``write(tmp_path)`` (a str), then ``check(tmp_path)`` (which raises to refuse the
    file), then rename the temporary file to ``out`` (its folder created when missing); on
    any error nothing is left (:func:`converters.atomic_file.atomic_path`)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(out), atomic_path(out) as tmp:  # a killed export's temporary removed first
        write(str(tmp))
        if check is not None:
            check(str(tmp))
    return out


def _write_onnx(net: SimpleNN, dims, opset):
    model = DescriptorNet(net, dims).eval()
    dyn = {"x": {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}}

    def write(tmp):
        with torch.no_grad():
            prog = torch.onnx.export(model, (example_images(net),), dynamo=True, input_names=[INPUT],
                                     output_names=[OUTPUT], dynamic_shapes=dyn, opset_version=opset,
                                     external_data=False, verbose=False)
        prog.save(tmp)
    return write


def _write_torchscript(net: SimpleNN, dims, opset=None):
    model = DescriptorNet(net, dims).eval()

    def write(tmp):
        with torch.no_grad(), warnings.catch_warnings():
            # the layers' input checks read shapes as Python values; they only raise
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(model, example_images(net))
        torch.jit.save(traced, tmp)
    return write


WRITERS = {"onnx": _write_onnx, "torchscript": _write_torchscript}


def export_graph(net: SimpleNN, out, fmt: str, dims: int | None = None, opset: int | None = None,
                 verify: bool = True) -> tuple[Path, Verification | None]:
    """Write ``net`` as ``fmt`` ('onnx' or 'torchscript') to ``out``; with ``verify``
    (the default) the written file is first run against matnet (:func:`verify_export`)
    and refused, never renamed to ``out``, when it differs.  Returns the path and the
    verification (None without)."""
    if fmt not in WRITERS:
        raise ValueError(f"unknown graph format {fmt!r} (onnx or torchscript)")
    DescriptorNet(net, dims)  # refuse a bad network or dims before tracing
    found = []

    def check(tmp):
        found.append(verify_export(tmp, fmt, net, dims))
    path = write_atomically(out, WRITERS[fmt](net, dims, opset), check if verify else None)
    return path, (found[0] if found else None)


def export_onnx(net: SimpleNN, out, dims: int | None = None, opset: int | None = None,
                verify: bool = True) -> Path:
    """Write ``net`` as an ONNX model (torch.onnx's dynamo exporter with its graph
    optimiser on, one file: no external data, so up to 2 GB of weights); dynamic batch,
    height and width.  MATLAB's epsilons (the 1e-12 of the L2 normalisations, a
    normalize's kappa) are written so that the optimiser cannot fold them away
    (:func:`matnet.layers.base.add_epsilon`).  ``verify``: see :func:`export_graph`."""
    return export_graph(net, out, "onnx", dims, opset, verify)[0]


def export_torchscript(net: SimpleNN, out, dims: int | None = None, verify: bool = True) -> Path:
    """Write ``net`` as a traced TorchScript module (``torch.jit.load(out)``); shapes are
    traced symbolically, so batch and image size stay free.  ``verify``: see
    :func:`export_graph`."""
    return export_graph(net, out, "torchscript", dims, verify=verify)[0]
