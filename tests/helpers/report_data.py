"""Small datasets, a tiny network and a brute-force top-N for the prediction / panel /
report tests: a Tokyo 24/7-like spec (panoramas of 12 cutouts, one query 1 km away from
everything) and a VPR folder with time stamps (TokyoTM's time filter)."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from converters.bin_features import read_bin
from converters.dbstruct import dbstruct_fields, save_dbstruct
from converters.network import save_net
from matnet import SimpleNN, layer_from_struct
from matnet.layers import layerVLAD, layerWholeL2Normalize

N_PANO, N_Q = 4, 7
IM_SIZE = (48, 64)  # height, width


def image(path: Path, seed: int, size=IM_SIZE) -> None:
    """A smooth random colour image (JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (4, 5, 3), dtype=np.uint8)
    Image.fromarray(small).resize(size[::-1], Image.BILINEAR).save(path, quality=90)


def tokyo_like(root: Path, specs: Path):
    """``specs/tokyo247.mat`` and its images under ``root`` (images/, query/): 4 panoramas x
    12 cutouts 10 m apart, 7 queries, the last 1 km away (no positive).  Returns (utm_db, utm_q)."""
    rng = np.random.default_rng(11)
    db_fns, utm_db = [], []
    for p in range(N_PANO):
        for t in range(12):
            fn = f"03814/p{p}/{'P' * 20}{p:02d}_012_{30 * t:03d}.jpg"
            image(root / "images" / fn, 100 * p + t)
            db_fns.append(fn)
            utm_db.append((381000 + 10.0 * p, 3946000.0))
    q_fns = [f"{j:05d}.jpg" for j in range(N_Q)]
    for j, fn in enumerate(q_fns):
        image(root / "query" / fn, 1000 + j)
    utm_db = np.array(utm_db).T
    utm_q = np.stack([381000 + rng.uniform(-5, 35, N_Q), np.full(N_Q, 3946000.0)])
    utm_q[1, -1] += 1000
    specs.mkdir(parents=True, exist_ok=True)
    save_dbstruct(specs / "tokyo247.mat", dbstruct_fields("test", db_fns, utm_db, q_fns, utm_q))
    return utm_db, utm_q


def vpr_timed(root: Path, n_db=30, n_q=8) -> None:
    """A VPR folder (split test) with YYYYMM time stamps in the names, positions on a line
    5 m apart; the last query 1 km away (read the positions back from the dataset: its
    image order is the sorted names')."""
    rng = np.random.default_rng(5)
    utm_db = np.stack([500000 + 5.0 * np.arange(n_db), np.full(n_db, 4000000.0)])
    utm_q = np.stack([500000 + rng.uniform(0, 5 * n_db, n_q), np.full(n_q, 4000000.0)])
    utm_q[1, -1] += 1000
    t_db = 201000 + 1 + rng.integers(0, 3, n_db)
    t_q = 201000 + 1 + rng.integers(0, 3, n_q)
    for part, utm, ts in (("database", utm_db, t_db), ("queries", utm_q, t_q)):
        for i, ((e, n), t) in enumerate(zip(utm.T, ts)):
            name = (f"@{e:010.2f}@{n:010.2f}@17@S@40.0@-80.0@pano{i:03d}@@@@@@{t}@@.jpg")
            image(root / "images" / "test" / part / name, zlib.crc32(f"{part}{i}".encode()))


def tiny_net_file(path: Path) -> Path:
    """A tiny released-format network (conv, preL2, VLAD, intranorm, L2) saved as .mat."""
    rng = np.random.default_rng(3)
    D, K = 8, 4
    layers = [layer_from_struct(dict(name="conv1", type="conv", weights=[
                  rng.standard_normal((3, 3, 3, D)).astype(np.float32) * 0.05, rng.standard_normal((1, D)).astype(np.float32)],
                  stride=[2, 2], pad=[1, 1, 1, 1])),
              layer_from_struct(dict(name="preL2", type="normalize", param=[2 * D, 1e-12, 1, 0.5]))]
    centres = rng.standard_normal((D, K)).astype(np.float32)
    vlad = layerVLAD("vlad:core")
    vlad.constructor([centres * 5.0, centres])
    layers += [vlad, layer_from_struct(dict(name="vlad:intranorm", type="normalize", param=[2 * D, 1e-12, 1, 0.5])),
               layerWholeL2Normalize("vlad:l2")]
    net = SimpleNN(layers, meta={"normalization": {"averageImage": np.array([[[120.0, 110.0, 100.0]]], np.float32)},
                                 "netID": "tiny", "sessionID": "tiny_test", "epoch": 0})
    return save_net(net.eval(), path)


def first_per_panorama(order, panorama) -> list:
    """Tokyo 24/7's NMS written plainly: ``order`` keeping only the first image of each panorama."""
    seen, kept = set(), []
    for i in order:
        if panorama[i] not in seen:
            seen.add(panorama[i])
            kept.append(i)
    return kept


def brute_force_top(dbFn, qFn, utm_db, utm_q, n, thr=25.0, panorama=None, t_db=None, t_q=None):
    """Per query: list of (db id, squared L2 in float64, metres, correct) of the first ``n``
    of a stable ranking by distance, keeping only the first image of each ``panorama``
    (Tokyo NMS) and dropping images with the query's time stamp (TokyoTM)."""
    qF = read_bin(qFn, n=utm_q.shape[1]).astype(np.float64)
    dbF = read_bin(dbFn, D=qF.shape[1], n=utm_db.shape[1]).astype(np.float64)
    out = []
    for j in range(len(qF)):
        d = ((dbF - qF[j]) ** 2).sum(1)
        order = list(np.argsort(d, kind="stable"))
        if t_q is not None:
            order = [i for i in order if t_db[i] != t_q[j]]
        if panorama is not None:
            order = first_per_panorama(order, panorama)
        rows = []
        for i in order[:n]:
            m = float(np.hypot(*(utm_db[:, i] - utm_q[:, j])))
            rows.append((int(i), float(d[i]), m, m ** 2 <= thr ** 2))
        out.append(rows)
    return out
