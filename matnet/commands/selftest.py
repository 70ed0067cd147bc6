"""``matnet selftest``: build a small VGG-like SimpleNN from MATLAB-style layer structs,
swap relu/max-pool as loadNet does, run one random image through ``vl_simplenn`` and
print the layer table.  Needs no data and no network access.

``matnet selftest --gpu [--out DIR] [--device cuda|cpu] [--small]``: the GPU suite
(:mod:`matnet.gpu_suite`): exactness of the GPU path against the CPU, extraction,
training and search throughput, torchrun; ``gpu_report.json`` and ``gpu_report.md``
under --out (about 8 minutes on one H100).  Without CUDA and without --device it says
so and exits with status 2; ``--device cpu --small`` is the CI run."""
from __future__ import annotations

import time

from . import options as o


def tiny_vgg_structs(seed: int = 0) -> list[dict]:
    import numpy as np
    rng = np.random.default_rng(seed)
    layers, cin = [], 3
    for block, (cout, convs) in enumerate([(16, 2), (32, 2), (64, 3)], start=1):
        for j in range(1, convs + 1):
            std = np.sqrt(2.0 / (9 * cin))
            layers.append(dict(name=f"conv{block}_{j}", type="conv", stride=[1, 1], pad=[1, 1, 1, 1],
                               weights=[(rng.standard_normal((3, 3, cin, cout)) * std).astype(np.float32),
                                        np.zeros((1, cout), np.float32)]))
            layers.append(dict(name=f"relu{block}_{j}", type="relu"))
            cin = cout
        if block < 3:
            layers.append(dict(name=f"pool{block}", type="pool", method="max", pool=[2, 2], stride=[2, 2]))
    layers.append(dict(name="preL2", type="normalize", param=[2 * cin, 1e-12, 1, 0.5]))
    return layers


def add_arguments(p) -> None:
    o.add_image_size(p, (120, 160), help="test image size")
    o.deprecated(p, "--height", "--size H W", "height", type=int)
    o.deprecated(p, "--width", "--size H W", "width", type=int)
    g = p.add_argument_group("GPU suite")
    g.add_argument("--gpu", action="store_true", help="run the GPU suite (exactness and throughput of the GPU path)")
    g.add_argument("--out", metavar="DIR", default="gpu_suite",
                   help="folder of gpu_report.json and gpu_report.md (default: %(default)s)")
    o.add_device(g, default=None, help="where the suite runs: cuda (auto is cuda) or cpu (default: cuda, exit "
                                       "status 2 without it)")
    g.add_argument("--small", action="store_true",
                   help="small sizes: a VGG16-shaped network with fewer channels, 64x80 images (the CPU run of CI)")


def run_gpu_suite(args) -> int:
    import sys

    import torch
    device = "cuda" if args.device in (None, "auto") else args.device
    if device == "cuda" and not torch.cuda.is_available():
        print(f"matnet selftest --gpu: no CUDA device is visible to torch {torch.__version__} (CUDA build: "
              f"{torch.version.cuda or 'none'}); run `matnet selftest --gpu --device cpu --small` for the CPU "
              f"checks", file=sys.stderr)
        return 2
    from ..gpu_suite import run_suite
    rec = run_suite(args.out, device, small=args.small)
    return 0 if rec.ok else 1


def run(args) -> int:
    if getattr(args, "gpu", False):
        return run_gpu_suite(args)
    import numpy as np
    import torch

    from ..nettools import swapLayersForEfficiency
    from ..simplenn import SimpleNN, vl_simplenn
    net = SimpleNN.from_structs(tiny_vgg_structs(),
                                meta={"normalization": {"averageImage": np.array([[[123.68, 116.779, 103.939]]],
                                                                                 np.float32)}})
    net = swapLayersForEfficiency(net).eval()
    height, width = args.size
    height, width = getattr(args, "height", height), getattr(args, "width", width)
    im = torch.rand(1, 3, height, width) * 255
    im -= torch.as_tensor(net.meta["normalization"]["averageImage"]).reshape(1, 3, 1, 1)
    t0 = time.perf_counter()
    with torch.no_grad():
        res = vl_simplenn(net, im)
    dt = time.perf_counter() - t0
    print(f"{'#':>3}  {'name':<10} {'type':<10} {'weights':<22} output (H x W x C)")
    for i, (layer, y) in enumerate(zip(net.layers, res[1:])):
        shapes = ", ".join("x".join(map(str, w.shape)) for w in layer.weights)
        print(f"{i:>3}  {layer.name:<10} {layer.type:<10} {shapes:<22} {y.shape[2]}x{y.shape[3]}x{y.shape[1]}")
    norms = res[-1].norm(dim=1)
    ok = bool(torch.allclose(norms[norms > 0], torch.ones(()), atol=1e-4))
    print(f"forward of one {height}x{width} image: {dt * 1000:.1f} ms; "
          f"preL2 output unit-norm per pixel: {ok}")
    return 0 if ok else 1
