"""A synthetic place-recognition dataset in NetVLAD's on-disk format.

Each split is a street: a long procedurally generated facade (coloured blocks,
windows, signs) along a straight line in UTM coordinates.  Database images are
views every ``dbSpacing`` metres; queries are views at random positions from a
shifted viewpoint (horizontal/vertical offset, zoom) under a different
illumination (per-channel gain, gamma, a shadow ramp, noise) and with transient
occluders (coloured blobs), as a different time of day would give.  Written as
``<root>/images/<split>/{db,q}/*.jpg`` plus ``<root>/datasets/<name>.mat``
holding ``dbStruct`` with the real files' field order and integer classes
(posDistThr 25 m, nonTrivPosDistSqThr 100 m^2).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from converters.atomic_file import atomic_write
from converters.matfile import savemat

PX_PER_M = 2.0  # facade pixels per metre along the street


@dataclass(frozen=True)
class SplitSpec:
    name: str          # dataset name (spec file stem), e.g. 'synth_train'
    whichSet: str
    numImages: int
    numQueries: int
    seed: int


def _facade(length_px: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """H x L x 3 float32 facade texture (0..255): buildings of random colour and
    width, each with a grid of windows, plus a few bright signs."""
    img = np.empty((height, length_px, 3), np.float32)
    x = 0
    while x < length_px:
        w = int(rng.integers(16, 48))
        base = rng.uniform(40, 220, 3)
        roof = int(rng.integers(2, height // 3))
        img[:, x:x + w] = base
        img[:roof, x:x + w] = rng.uniform(150, 255, 3)  # sky / roof band
        win = rng.uniform(0, 255, 3)
        ww, wh = int(rng.integers(3, 7)), int(rng.integers(4, 9))
        step_x, step_y = ww + int(rng.integers(2, 6)), wh + int(rng.integers(3, 7))
        for wy in range(roof + 3, height - wh - 2, step_y):
            for wx in range(x + 2, min(x + w, length_px) - ww, step_x):
                img[wy:wy + wh, wx:wx + ww] = win
        if rng.random() < 0.5:  # a sign
            sy, sx = int(rng.integers(roof, height - 8)), x + int(rng.integers(0, max(1, w - 10)))
            img[sy:sy + 6, sx:sx + 10] = rng.uniform(0, 255, 3)
        x += w
    return img


def _view(facade: np.ndarray, centre_px: float, imSize, zoom: float, dy: float) -> np.ndarray:
    """Crop of the facade around ``centre_px`` (zoom > 1 = closer), resized to imSize (H, W)."""
    H, W = imSize
    fh = facade.shape[0]
    half_w = W / 2 / zoom
    half_h = fh / 2 / zoom
    cy = fh / 2 + dy
    box = (centre_px - half_w, cy - half_h, centre_px + half_w, cy + half_h)
    im = Image.fromarray(np.clip(facade, 0, 255).astype(np.uint8))
    return np.asarray(im.transform((W, H), Image.Transform.EXTENT, box, Image.Resampling.BILINEAR),
                      dtype=np.float32)


def _illuminate(im: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Global colour/brightness change, gamma, a shadow ramp and noise; ``strength``
    0 leaves the image nearly untouched, 1 is a different time of day."""
    H, W, _ = im.shape
    gain = 1 + strength * rng.uniform(-0.45, 0.45, 3)
    gamma = np.exp(strength * rng.uniform(-0.5, 0.5))
    out = 255 * (np.clip(im * gain, 0, 255) / 255) ** gamma
    ramp = np.linspace(0, 1, W)[None, :, None]
    if rng.random() < 0.5:
        ramp = ramp[:, ::-1]
    out = out * (1 - strength * rng.uniform(0, 0.5) * ramp)
    out = out + strength * rng.normal(0, 8, out.shape)
    return np.clip(out, 0, 255)


def _occlude(im: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` transient occluders (cars, pedestrians): coloured ellipses."""
    H, W, _ = im.shape
    yy, xx = np.mgrid[0:H, 0:W]
    for _ in range(n):
        cy, cx = rng.uniform(H * 0.5, H), rng.uniform(0, W)
        ry, rx = rng.uniform(4, H / 4), rng.uniform(4, W / 5)
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        im[mask] = rng.uniform(0, 255, 3)
    return im


def _save_jpg(path: Path, im: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        Image.fromarray(np.clip(im + 0.5, 0, 255).astype(np.uint8)).save(f, format="JPEG", quality=92)


def make_split(root, spec: SplitSpec, imSize=(64, 80), dbSpacing: float = 5.0,
              origin=(584000.0, 4477000.0)) -> dict:
    """Render one split under ``root`` and write its ``dbStruct`` spec; returns the
    dbStruct dict (file names relative to ``root/images/``)."""
    root = Path(root)
    rng = np.random.default_rng(spec.seed)
    H, W = imSize
    street_m = spec.numImages * dbSpacing
    margin_px = int(W * 1.5)
    facade = _facade(int(street_m * PX_PER_M) + 2 * margin_px, H, rng)
    angle = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    start = np.asarray(origin) + spec.seed * 10000.0  # splits far apart
    dbPos = np.arange(spec.numImages) * dbSpacing + dbSpacing / 2
    qPos = np.sort(rng.uniform(0, street_m, spec.numQueries))
    dbFns, qFns = [], []
    for kind, positions, fns in (("db", dbPos, dbFns), ("q", qPos, qFns)):
        for i, pos in enumerate(positions):
            if kind == "db":
                zoom, dy, strength, occ = rng.uniform(0.95, 1.05), rng.uniform(-1, 1), 0.25, 0
            else:
                zoom, dy, strength, occ = rng.uniform(0.85, 1.2), rng.uniform(-4, 4), 1.0, int(rng.integers(0, 3))
            shift = rng.uniform(-2, 2) if kind == "q" else 0.0  # metres off the nominal position
            im = _view(facade, margin_px + (pos + shift) * PX_PER_M, imSize, zoom, dy)
            im = _occlude(_illuminate(im, rng, strength), rng, occ)
            fn = f"{spec.whichSet}/{kind}/{kind}_{i:05d}.jpg"
            _save_jpg(root / "images" / fn, im)
            fns.append(fn)
    utm = lambda p: (start[:, None] + direction[:, None] * p[None, :]).astype(np.float64)
    cell = lambda names: np.array(names, dtype=object).reshape(-1, 1)
    dbStruct = {
        "whichSet": spec.whichSet,
        "dbImageFns": cell(dbFns),
        "utmDb": utm(dbPos),
        "qImageFns": cell(qFns),
        "utmQ": utm(qPos),
        "numImages": np.array([[spec.numImages]], np.uint16),
        "numQueries": np.array([[spec.numQueries]], np.uint16),
        "posDistThr": np.array([[25]], np.uint8),
        "posDistSqThr": np.array([[625]], np.uint16),
        "nonTrivPosDistSqThr": np.array([[100]], np.uint8),
    }
    (root / "datasets").mkdir(parents=True, exist_ok=True)
    savemat(root / "datasets" / f"{spec.name}.mat", {"dbStruct": dbStruct})
    return dbStruct


def make_places(root, numImages: int = 160, numQueries: int = 80, imSize=(64, 80), seed: int = 0,
               splits=("train", "val", "test")) -> list[str]:
    """Render the train/val/test streets (each with its own facade) under ``root``;
    returns the dataset names ('synth_train', ...).  Existing specs are kept."""
    root = Path(root)
    names = []
    for k, split in enumerate(splits):
        name = f"synth_{split}"
        if not (root / "datasets" / f"{name}.mat").is_file():
            make_split(root, SplitSpec(name, split, numImages, numQueries, seed * 100 + k + 1), imSize)
        names.append(name)
    return names
