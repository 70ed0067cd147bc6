"""Loading a released-format NetVLAD network: ``load_net`` (.mat v7.3) vs raw h5py, and
the native safetensors file vs the .mat.

Generates its own file in a temporary folder: a VGG16 trunk cropped at conv5_3 (relu/pool
swapped), preL2, layerVLADv2 (K=64, D=512, saved via saveobj), intranorm, postL2, WPCA
1x1x32768x4096, finalL2 -- ~134M float32 weights (~540 MB), gzip-compressed as MATLAB's
-v7.3 does.  ``--scale`` shrinks every channel count (1.0 = VGG16 size).

Prints:  load_net / raw-h5py  (target <= 1.3)  and  .mat / .safetensors  (target >= 10).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from converters.matfile import MatObject, savemat
from converters.native import load_native, save_native
from converters.network import load_net

VGG16 = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]


def released_like(scale: float, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)

    def rand(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.01).astype(np.float32)

    layers, cin = [], 3
    for b, (c, n) in enumerate(VGG16, start=1):
        c = max(1, int(c * scale))
        for j in range(1, n + 1):
            layers.append({"name": f"conv{b}_{j}", "type": "conv", "weights": [rand(3, 3, cin, c), rand(1, c)],
                           "pad": np.ones((1, 4)), "stride": np.ones((1, 2)), "precious": False})
            cin = c
            if (b, j) == (5, 3):
                break
            if j < n:
                layers.append({"name": f"relu{b}_{j}", "type": "relu", "leak": 0.0})
        if b < 5:
            layers.append({"name": f"pool{b}", "type": "pool", "method": "max", "pool": np.full((1, 2), 2.0),
                           "stride": np.full((1, 2), 2.0), "pad": np.zeros((1, 4))})
            layers.append({"name": f"relu{b}_{n}", "type": "relu", "leak": 0.0})
    d, k, p = cin, 64, max(1, int(4096 * scale))
    layers.append({"name": "preL2", "type": "normalize", "param": np.array([[2.0 * d, 1e-12, 1, 0.5]])})
    layers.append(MatObject("layerVLADv2", {
        "type": "custom", "name": "vlad:core", "K": float(k), "D": float(d), "vladDim": float(k * d),
        "weights": [rand(1, 1, d, k), rand(1, k), rand(1, 1, d, k)], "momentum": np.zeros((0, 0)),
        "learningRate": np.ones((1, 3), np.float32), "weightDecay": np.ones((1, 3), np.float32),
        "precious": False}, saveobj=True))
    layers.append({"name": "vlad:intranorm", "type": "normalize", "param": np.array([[2.0 * d, 1e-12, 1, 0.5]])})
    layers.append(MatObject("layerWholeL2Normalize", {"type": "custom", "name": "postL2", "precious": False}))
    layers.append({"name": "WPCA", "type": "conv", "weights": [rand(1, 1, k * d, p), rand(1, p)],
                   "pad": np.zeros((1, 4)), "stride": np.ones((1, 2)), "precious": False})
    layers.append(MatObject("layerWholeL2Normalize", {"type": "custom", "name": "finalL2", "precious": False}))
    meta = {"normalization": {"averageImage": rand(1, 1, 3)}, "netID": "vd16",
            "sessionID": "vd16_pitts30k_conv5_3_vlad_preL2_intra_white", "epoch": 30.0}
    return {"layers": layers, "meta": meta}


def h5py_raw(path) -> int:
    """Read every dataset of the file with h5py, nothing else: the baseline."""
    total = 0

    def visit(_, obj):
        nonlocal total
        if isinstance(obj, h5py.Dataset):
            total += obj[()].nbytes
    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return total


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
        del result  # freeing the loaded network is not part of loading it
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="channel scale (1.0 = VGG16 size)")
    ap.add_argument("--repeat", type=int, default=2, help="timed repetitions (best is kept)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        mat = Path(tmp) / "vd16_like.mat"
        t = time.perf_counter()
        savemat(mat, {"net": released_like(args.scale)}, format="7.3")
        print(f"wrote {mat.stat().st_size / 1e6:.0f} MB v7.3 in {time.perf_counter() - t:.1f} s")
        nbytes = h5py_raw(mat)  # also warms the page cache
        net = load_net(mat)
        n = sum(p.numel() for p in net.parameters())
        print(f"{len(net.layers)} layers, {n / 1e6:.1f}M weights ({n * 4 / 1e6:.0f} MB float32); "
              f"h5py reads {nbytes / 1e6:.0f} MB")
        st = save_native(net, Path(tmp) / "vd16_like.safetensors")
        t_h5 = best_of(lambda: h5py_raw(mat), args.repeat)
        t_mat = best_of(lambda: load_net(mat), args.repeat)
        t_st = best_of(lambda: load_native(st), args.repeat)
        print(f"raw h5py          {t_h5:7.3f} s")
        print(f"load_net (.mat)   {t_mat:7.3f} s   ratio to h5py {t_mat / t_h5:.2f}  (target <= 1.3)")
        print(f"load_native       {t_st:7.3f} s   .mat / .safetensors {t_mat / t_st:.1f}x  (target >= 10)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
