"""Extraction throughput of VGG16-conv5_3 + NetVLAD (K=64) + WPCA-4096 on 480x640 JPEGs
through serialAllFeats (decoding included), against the bare trunk forward on images
already in memory, measured in the same run (random weights, same layer shapes as the
released vd16_*_conv5_3_vlad_preL2_intra_white networks).

    python benchmarks/bench_extract.py [--images 6] [--batchSize 3] [--repeats 2]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from matnet.extract import serialAllFeats
from matnet.nettools import swapLayersForEfficiency
from matnet.simplenn import SimpleNN

VGG16 = [(3, 64), (64, 64), "pool", (64, 128), (128, 128), "pool", (128, 256), (256, 256),
         (256, 256), "pool", (256, 512), (512, 512), (512, 512), "pool", (512, 512), (512, 512),
         (512, 512)]
MEAN = np.array([123.68, 116.779, 103.939], np.float32).reshape(1, 1, 3)


def trunk_structs(rng):
    """VGG16 cropped at conv5_3 (no relu5_3), MatConvNet structs, random weights."""
    layers, block, idx = [], 1, 1
    for spec in VGG16:
        if spec == "pool":
            layers.append({"type": "pool", "name": f"pool{block}", "method": "max", "pool": [2, 2],
                           "stride": [2, 2], "pad": [0, 0, 0, 0]})
            block, idx = block + 1, 1
            continue
        cin, cout = spec
        w = (rng.standard_normal((3, 3, cin, cout), dtype=np.float32) * np.sqrt(2 / (9 * cin))).astype(np.float32)
        layers.append({"type": "conv", "name": f"conv{block}_{idx}", "weights": [w, np.zeros(cout, np.float32)],
                       "stride": [1, 1], "pad": [1, 1, 1, 1]})
        layers.append({"type": "relu", "name": f"relu{block}_{idx}"})
        idx += 1
    return layers[:-1]


def build(rng):
    """(trunk, full net, head description); the full net shares the trunk's layers."""
    trunk = swapLayersForEfficiency(SimpleNN.from_structs(trunk_structs(rng), meta={
        "normalization": {"averageImage": MEAN}})).eval()
    D, K, P = 512, 64, 4096
    net = SimpleNN(list(trunk.layers), trunk.meta)
    try:
        from matnet.layers.heads import layerWholeL2Normalize
        from matnet.layers.vlad import layerVLAD
    except ImportError:  # heads not available: a normalize layer stands in
        net.layers.extend(SimpleNN.from_structs([{"type": "normalize", "name": "stand-in",
                                                  "param": [2 * D, 1e-12, 1, 0.5]}]).layers)
        return trunk, net, "normalize stand-in (matnet.layers.vlad missing)"
    c = rng.standard_normal((D, K), dtype=np.float32)
    c /= np.linalg.norm(c, axis=0, keepdims=True)
    pre, intra, wpca = SimpleNN.from_structs([
        {"type": "normalize", "name": "preL2", "param": [2 * D, 1e-12, 1, 0.5]},
        {"type": "normalize", "name": "vlad:intranorm", "param": [2 * D, 1e-12, 1, 0.5]},
        {"type": "conv", "name": "WPCA", "weights": [
            rng.standard_normal((1, 1, D * K, P), dtype=np.float32) / np.sqrt(D * K),
            np.zeros(P, np.float32)], "stride": [1, 1], "pad": [0, 0, 0, 0]}]).layers
    net.layers.extend([pre, layerVLAD("vlad:core").constructor([30 * c, c]), intra,
                       layerWholeL2Normalize("postL2"), wpca, layerWholeL2Normalize("finalL2")])
    return trunk, net, "preL2 + layerVLAD(K=64) + intranorm + postL2 + WPCA 32768->4096 + finalL2"


def make_images(folder: Path, n: int, rng):
    yy, xx = np.mgrid[0:480, 0:640]
    fns = []
    for i in range(n):
        base = np.dstack([(xx * (i + 1)) % 256, (yy * 2) % 256, (xx + yy) % 256]).astype(np.float32)
        im = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(im).save(folder / f"{i:03d}.jpg", quality=90)
        fns.append(f"{i:03d}.jpg")
    return fns


def trunk_rate(trunk, ims, batchSize, channels_last):
    x = torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).float() - torch.from_numpy(MEAN.reshape(3))[None, :, None, None]
    x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    t = time.perf_counter()
    with torch.no_grad():
        for s in range(0, x.shape[0], batchSize):
            trunk(x[s:s + batchSize])
    return x.shape[0] / (time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--batchSize", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    trunk, net, head = build(rng)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        fns = make_images(d, a.images, rng)
        ims = [np.asarray(Image.open(d / f).convert("RGB")) for f in fns]
        with torch.no_grad():  # warm-up (allocator, oneDNN primitives)
            trunk(torch.zeros(1, 3, 480, 640).contiguous(memory_format=torch.channels_last))
        r_nchw = trunk_rate(trunk, ims, a.batchSize, False)
        r_cl, r_full = [], []
        for _ in range(a.repeats):  # interleaved, best of each: robust to load from other processes
            r_cl.append(trunk_rate(trunk, ims, a.batchSize, True))
            t = time.perf_counter()
            with contextlib.redirect_stderr(io.StringIO()):
                serialAllFeats(net, str(d) + "/", fns, d / "out.bin", useGPU=False, batchSize=a.batchSize)
            r_full.append(a.images / (time.perf_counter() - t))
        assert (d / "out.bin").stat().st_size == a.images * 4096 * 4 or "stand-in" in head
        heads = list(net.layers)[len(trunk.layers):]
        x = torch.randn(a.batchSize, 512, 30, 40).contiguous(memory_format=torch.channels_last)
        head_times = []
        with torch.no_grad():
            for layer in heads:
                t = time.perf_counter()
                x = layer(x)
                head_times.append((time.perf_counter() - t, layer.name))
    fmt = lambda r: ", ".join(f"{x:.2f}" for x in r)
    print(f"{a.images} images 480x640 JPEG, batchSize {a.batchSize}, {torch.get_num_threads()} threads, CPU, "
          f"best of {a.repeats} interleaved runs")
    print(f"bare trunk (VGG16 conv5_3) forward, NCHW:          {r_nchw:.2f} img/s")
    print(f"bare trunk (VGG16 conv5_3) forward, channels_last: {max(r_cl):.2f} img/s  ({fmt(r_cl)})")
    print(f"serialAllFeats, decode + trunk + {head}: {max(r_full):.2f} img/s  ({fmt(r_full)})")
    print(f"heads on one batch of conv5_3 maps ({a.batchSize} x 512 x 30 x 40): "
          f"{sum(t for t, _ in head_times):.2f} s; slowest: "
          + ", ".join(f"{n} {t:.2f} s" for t, n in sorted(head_times, reverse=True)[:2]))
    print(f"ratio serialAllFeats / bare channels_last trunk: {max(r_full) / max(r_cl):.2f} (target >= 0.9)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
