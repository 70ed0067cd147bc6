"""``matnet selftest``: build a small VGG-like SimpleNN from MATLAB-style layer structs,
swap relu/max-pool as loadNet does, run one random image through ``vl_simplenn`` and
print the layer table.  Needs no data and no network access."""
from __future__ import annotations

import time

import numpy as np
import torch

from ..nettools import swapLayersForEfficiency
from ..simplenn import SimpleNN, vl_simplenn


def tiny_vgg_structs(seed: int = 0) -> list[dict]:
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
    p.add_argument("--height", type=int, default=120, help="test image height (default: %(default)s)")
    p.add_argument("--width", type=int, default=160, help="test image width (default: %(default)s)")


def run(args) -> int:
    net = SimpleNN.from_structs(tiny_vgg_structs(),
                                meta={"normalization": {"averageImage": np.array([[[123.68, 116.779, 103.939]]],
                                                                                 np.float32)}})
    net = swapLayersForEfficiency(net).eval()
    im = torch.rand(1, 3, args.height, args.width) * 255
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
    print(f"forward of one {args.height}x{args.width} image: {dt * 1000:.1f} ms; "
          f"preL2 output unit-norm per pixel: {ok}")
    return 0 if ok else 1
