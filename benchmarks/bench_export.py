"""Exporting a released-size NetVLAD network: ONNX and TorchScript parity with matnet at
full size, and onnxruntime's / TorchScript's forward time against matnet's in the same run.

Builds the synthetic miniature of the released networks at VGG16 size (``--scale`` shrinks
every width; K=64, WPCA to 4096, random weights: the released files are not needed),
exports it with ``matnet.export``, then runs two image sizes through each.

Prints per size: relative error max_n ||y_n - ref_n|| / ||ref_n|| (target <= 1e-5) and the
time ratios  onnxruntime / matnet  and  torchscript / matnet  (the baseline is matnet's
forward on the channels_last batch ``preprocess`` gives, measured in the same run; best
of ``--repeats``; the exported graphs get the plain NCHW array).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from matnet.descriptor_net import DescriptorNet
from matnet.export import export_onnx, export_torchscript
from matnet.synthetic.vgg16_netvlad import VGG16_WIDTHS, vgg16_netvlad


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="channel-width factor (1.0 = VGG16)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import onnxruntime as ort

    widths = tuple(max(1, round(w * args.scale)) for w in VGG16_WIDTHS)
    net = vgg16_netvlad(widths, num_clusters=64, pca_dim=4096, seed=0)
    model = DescriptorNet(net).eval()
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        onnx_file = export_onnx(net, Path(d) / "net.onnx")
        t_onnx = time.perf_counter() - t
        t = time.perf_counter()
        ts_file = export_torchscript(net, Path(d) / "net.pt")
        t_ts = time.perf_counter() - t
        print(f"widths {widths}, K=64, WPCA 4096: export onnx {t_onnx:.1f} s "
              f"({onnx_file.stat().st_size / 1e6:.0f} MB), torchscript {t_ts:.1f} s "
              f"({ts_file.stat().st_size / 1e6:.0f} MB)")
        sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        traced = torch.jit.load(str(ts_file))
        for n, h, w in [(2, 240, 320), (1, 480, 640)]:
            x = torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(h)) * 255
            x_cl = x.contiguous(memory_format=torch.channels_last)  # what preprocess() gives
            with torch.no_grad():
                ref = model(x).numpy()
                y_ts = traced(x).numpy()
                t_ref = best_time(lambda: model(x_cl), args.repeats)
                t_tsf = best_time(lambda: traced(x), args.repeats)
            y_ort = sess.run(None, {"images": x.numpy()})[0]
            t_ort = best_time(lambda: sess.run(None, {"images": x.numpy()}), args.repeats)

            def rel(y):
                return float((np.linalg.norm(y - ref, axis=1) / np.linalg.norm(ref, axis=1)).max())
            print(f"{n}x3x{h}x{w}: matnet {t_ref:.2f} s; onnx rel err {rel(y_ort):.1e}, "
                  f"onnxruntime/matnet {t_ort / t_ref:.2f}; torchscript rel err {rel(y_ts):.1e}, "
                  f"torchscript/matnet {t_tsf / t_ref:.2f}")


if __name__ == "__main__":
    main()
