"""Image reading as MatConvNet's ``vl_imreadjpeg`` gives it.

RGB float32 in 0..255, H x W x 3 (MATLAB layout), grayscale replicated to three
channels, no resizing, cropping or EXIF rotation.  CMYK, palette and alpha images are
converted to RGB (alpha dropped).  JPEG and PNG are read.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

_SWAPS = {".jpg": (".png", ".jpeg"), ".jpeg": (".png", ".jpg"), ".png": (".jpg", ".jpeg")}
_warned_swap: set[tuple[str, str]] = set()


def resolve_image_path(path) -> Path:
    """``path`` if it exists, else the same name with the other extension (.jpg <-> .png).

    The distributed Tokyo 24/7 database is PNG while its ``dbStruct`` lists ``.jpg``;
    the substitution is reported once per extension pair.
    """
    p = Path(path)
    if p.is_file():
        return p
    for ext in _SWAPS.get(p.suffix.lower(), ()):
        q = p.with_suffix(ext)
        if q.is_file():
            key = (p.suffix.lower(), ext)
            if key not in _warned_swap:
                _warned_swap.add(key)
                warnings.warn(f"{p} not found, reading {q.name} instead (images listed as "
                              f"'{p.suffix}' are read as '{ext}' when only those exist)",
                              stacklevel=2)
            return q
    raise FileNotFoundError(f"image not found: {p}")


def imread_uint8(path) -> np.ndarray:
    """H x W x 3 uint8 RGB (grayscale replicated)."""
    p = resolve_image_path(path)
    try:
        with Image.open(p) as im:
            if im.mode in ("L", "1"):
                a = np.asarray(im.convert("L"))
                return np.repeat(a[:, :, None], 3, axis=2)
            if im.mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise OSError(f"cannot read image {p}: {e}") from e


def vl_imreadjpeg(path) -> np.ndarray:
    """One image as ``vl_imreadjpeg`` returns it: H x W x 3 float32, values 0..255."""
    return imread_uint8(path).astype(np.float32)


def subtract_average(im: np.ndarray, averageImage) -> np.ndarray:
    """``im(:,:,c) - averageImage(1,1,c)`` for c = 1..3 (only the first pixel of the
    average image is used, as serialAllFeats/computeRepresentation do)."""
    avg = np.asarray(averageImage, dtype=np.float32)
    avg = avg.reshape(avg.shape + (1,) * (3 - avg.ndim))[0, 0, :3]
    return im.astype(np.float32, copy=False) - avg
