"""What --save-predictions costs next to the feature extraction it follows: the CSV, the
panels (JPEG per query, query + top-N tiles) and the HTML report for a Pitts30k-test-sized
run (6,816 queries x N = 10 over 10,000 database images) on synthetic 480x640 JPEGs,
against serialAllFeats of a VGG16-conv5_3 NetVLAD (K=64) + WPCA-4096 network (random
weights, the released networks' layer shapes) on the same kind of images, in the same run.

The extraction is timed on ``--extract-sample`` images and extrapolated to all database
and query images (10,000 + 6,816); the panels read their images from a pool of
``--pool`` distinct files (the database and query ids map onto it), so the disk holds a
few hundred images, not 16,816 -- each tile is still a full 480x640 JPEG decode (from the
page cache, as a second pass over a dataset just extracted mostly is).

    python benchmarks/bench_report.py [--queries 6816] [--db 10000] [--n 10] [--pool 300]
                                      [--extract-sample 4] [--workers W] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from matnet.extract import serialAllFeats
from matnet.html_report import write_report
from matnet.panels import write_panels
from matnet.predictions import Predictions, write_predictions_csv
from matnet.synthetic.vgg16_netvlad import vgg16_netvlad


def make_pool(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` 480x640 JPEGs (smooth colour fields with texture, quality 90)."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        im = np.asarray(Image.fromarray(small).resize((640, 480), Image.BILINEAR), np.int16)
        im = np.clip(im + rng.integers(-25, 25, im.shape), 0, 255).astype(np.uint8)
        name = f"pool/{i:05d}.jpg"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(folder / name, quality=90)
        names.append(name)
    return names


def synthetic_predictions(root: Path, pool, nQ: int, nDb: int, n: int, seed: int = 1) -> Predictions:
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.choice(nDb, n, replace=False) for _ in range(nQ)])
    return Predictions(np.arange(nQ), ids, np.sort(rng.random((nQ, n)) * 1.5, 1).astype(np.float32),
                       rng.random((nQ, n)) * 300, rng.random((nQ, n)) < 0.3, rng.random(nQ) < 0.97,
                       [pool[(q * 7919) % len(pool)] for q in range(nQ)],
                       {int(i): pool[int(i) % len(pool)] for i in np.unique(ids)}, None, str(root))


def timed(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=6816)
    ap.add_argument("--db", type=int, default=10000)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--pool", type=int, default=300)
    ap.add_argument("--extract-sample", type=int, default=4)
    ap.add_argument("--workers", type=int, default=None, help="panel threads (default: min(8, CPUs))")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    cpus = os.cpu_count()
    print(f"machine: {platform.processor() or platform.machine()}, {cpus} CPUs visible, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), extraction on {a.device}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t_pool, pool = timed(lambda: make_pool(root, a.pool))
        print(f"{a.pool} synthetic 480x640 JPEGs in {t_pool:.1f} s "
              f"({sum((root / p).stat().st_size for p in pool) / len(pool) / 1024:.0f} KiB each)")
        # --- the extraction, timed on a sample, extrapolated
        net = vgg16_netvlad().eval()
        sample = pool[:a.extract_sample]
        useGPU = a.device == "cuda"
        with contextlib.redirect_stderr(io.StringIO()):
            serialAllFeats(net, str(root) + "/", sample[:1], root / "warm.bin", useGPU=useGPU, batchSize=1)
            t_ex, _ = timed(lambda: serialAllFeats(net, str(root) + "/", sample, root / "f.bin", useGPU=useGPU,
                                                   batchSize=1))
        per_image = t_ex / len(sample)
        nImages = a.queries + a.db
        extract = per_image * nImages
        print(f"extraction: {per_image:.3f} s/image ({len(sample)} images timed) -> {extract:.0f} s "
              f"extrapolated to {nImages} images")
        # --- the prediction files
        pred = synthetic_predictions(root, pool, a.queries, a.db, a.n)
        t_csv, _ = timed(lambda: write_predictions_csv(root / "p_predictions.csv", pred))
        t_pan, res = timed(lambda: write_panels(pred, root / "p_predictions", workers=a.workers, progress=False))
        t_reuse, res2 = timed(lambda: write_panels(pred, root / "p_predictions", workers=a.workers,
                                                   progress=False))
        assert res["written"] == a.queries and res2["reused"] == a.queries
        t_html, page = timed(lambda: write_report(root / "p_report.html", pred, [1, 5, 10], [0.8, 0.9, 0.92],
                                                  "bench", {"queries": a.queries}, root / "p_predictions",
                                                  res["files"]))
        panel_bytes = sum(f.stat().st_size for f in (root / "p_predictions").iterdir())
        rows = [("CSV", t_csv), (f"panels ({a.queries} x {a.n + 1} tiles)", t_pan),
                ("panels, rerun (all reused)", t_reuse), ("HTML report", t_html)]
        print(f"\n{a.queries} queries x N = {a.n}; panel size {panel_bytes / a.queries / 1024:.0f} KiB on average, "
              f"{panel_bytes / 2**20:.0f} MiB in all; report {page.stat().st_size / 2**20:.2f} MiB")
        print(f"{'step':36s} {'seconds':>9} {'/ extraction':>13}")
        for name, t in rows:
            print(f"{name:36s} {t:9.1f} {t / extract:13.4f}")
        total = t_csv + t_pan + t_html
        print(f"{'CSV + panels + report':36s} {total:9.1f} {total / extract:13.4f}")
        print(f"{'extraction (extrapolated)':36s} {extract:9.1f} {1:13.4f}")


if __name__ == "__main__":
    main()
