"""Image reading as MatConvNet's ``vl_imreadjpeg`` gives it.

RGB float32 in 0..255, H x W x 3 (MATLAB layout), grayscale replicated to three
channels, no resizing, cropping or EXIF rotation.  CMYK, palette and alpha images are
converted to RGB (alpha dropped).  JPEG and PNG are read.  One reader serves
extraction (serialAllFeats, getClusters) and training (trainWeakly's tuples).

16-bit images (PNG gray, gray+alpha or colour; 16-bit TIFF) are reduced to 8 bits by
keeping each sample's high byte (``v >> 8``, within 1 of MATLAB's ``im2uint8``).
MatConvNet's ``vl_imreadjpeg`` decodes PNGs only through the macOS/Windows image
libraries, into an 8-bit bitmap, i.e. scaled the same way (on Linux it reads JPEG
only); MATLAB's ``single(imread(fn))`` would give 0..65535, a scale the network's
0..255 mean and weights were not trained for (``computeRepresentation.m`` warns
against it).  Images of 32-bit integers or floats (modes ``I``/``F``, e.g. TIFF)
are refused with an error naming the file.
"""
from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

_SWAPS = {".jpg": (".png", ".jpeg"), ".jpeg": (".png", ".jpg"), ".png": (".jpg", ".jpeg")}
_warned_swap: set[tuple[str, str]] = set()


class ImageReadError(OSError):
    """An image file that cannot be read as vl_imreadjpeg would; the message names it."""


class ImageNetworkError(ValueError, RuntimeError):
    """The network fails on an image (e.g. one smaller than its receptive field): a bad
    input (ValueError) met at run time (RuntimeError); the message names the image
    file(s) and the layer."""


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


def _sixteen_bit(im: Image.Image) -> bool:
    """A 16-bit grayscale image (Pillow gives 16-bit PNG gray as I;16, or I before 9.x)."""
    return im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG")


def to_rgb_uint8(im: Image.Image, p: Path) -> np.ndarray:
    if _sixteen_bit(im):
        a = np.asarray(im).astype(np.uint32)
        if a.size and a.max() > 0xFFFF:
            raise ImageReadError(f"{p}: 16-bit image holds a value {int(a.max())} > 65535")
        a = (a >> 8).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)
    if im.mode in ("I", "F"):
        raise ImageReadError(f"{p}: a {'32-bit integer' if im.mode == 'I' else 'floating-point'} "
                             f"image (mode {im.mode}) is not read: vl_imreadjpeg gives 8-bit "
                             f"images in 0..255; save it as an 8-bit JPEG/PNG")
    if im.mode in ("L", "1", "LA", "La"):
        a = np.asarray(im.convert("L"))
        return np.repeat(a[:, :, None], 3, axis=2)
    if im.mode != "RGB":  # 16-bit colour PNGs arrive here already reduced to their high byte
        im = im.convert("RGB")
    return np.asarray(im)


def imread_uint8(path) -> np.ndarray:
    """H x W x 3 uint8 RGB (grayscale replicated, 16-bit reduced to the high byte).
    Missing, truncated or corrupt files raise an error naming the file."""
    p = resolve_image_path(path)
    try:
        with Image.open(p) as im:
            a = to_rgb_uint8(im, p)
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"cannot read image {p}: {e}") from e
    if a.ndim != 3 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageReadError(f"{p}: empty image ({a.shape})")
    return a


def vl_imreadjpeg(path) -> np.ndarray:
    """One image as ``vl_imreadjpeg`` returns it: H x W x 3 float32, values 0..255."""
    return imread_uint8(path).astype(np.float32)


def mean_colour(averageImage) -> np.ndarray:
    """``averageImage(1,1,1:3)`` as 3 float32 values: the per-channel mean that
    serialAllFeats, computeRepresentation and trainWeakly subtract.  A 1x1x3 or HxWx3
    (or more channels) array; also a plain 3-vector (3, 1x3, 3x1), which MATLAB's
    ``averageImage(1,1,c)`` would refuse.  Anything else raises ValueError with its
    shape (a 1-value mean would otherwise be broadcast over the channels)."""
    if averageImage is None:
        raise ValueError("net.meta['normalization']['averageImage'] is missing")
    avg = np.asarray(averageImage, dtype=np.float32)
    if avg.size == 3 and avg.ndim <= 2:
        return avg.reshape(3).copy()
    if avg.ndim > 3 or avg.ndim < 3 and avg.size != 3 or avg.ndim == 3 and (avg.shape[2] < 3 or avg.size == 0):
        raise ValueError(f"net.meta['normalization']['averageImage'] has shape {avg.shape}: expected "
                         f"1x1x3 or HxWx3 (the mean of each of the 3 colour channels)")
    return avg[0, 0, :3].copy()


def subtract_average(im: np.ndarray, averageImage) -> np.ndarray:
    """``im(:,:,c) - averageImage(1,1,c)`` for c = 1..3 (only the first pixel of the
    average image is used, as serialAllFeats/computeRepresentation do)."""
    return im.astype(np.float32, copy=False) - mean_colour(averageImage)


class TrainingImageLoader:
    """vl_imreadjpeg for a training tuple (:func:`imread_uint8`, as serialAllFeats reads): RGB float32, optional resize of the shorter side
    (jitterScale), average colour subtracted, read by ``numThreads`` threads."""

    def __init__(self, averageImage, numThreads: int):
        self.avg = mean_colour(averageImage)
        self.pool = ThreadPoolExecutor(max(1, numThreads))

    def _one(self, fn, shorter):
        a = imread_uint8(fn)
        if shorter is not None:
            im = Image.fromarray(a)
            w, h = im.size
            s = shorter / min(w, h)
            a = np.asarray(im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR))
        return a.astype(np.float32) - self.avg

    def __call__(self, fns, shorter=None) -> np.ndarray:
        """N x H x W x 3 (images of one size, as MATLAB's cat(4, ...) needs)."""
        ims = list(self.pool.map(lambda f: self._one(f, shorter), fns))
        if len({im.shape for im in ims}) > 1:
            raise ValueError("a training tuple needs images of one size: "
                             + ", ".join(f"{fn} ({im.shape[0]} x {im.shape[1]})" for fn, im in zip(fns, ims)))
        return np.stack(ims)

    def close(self) -> None:
        """Stop the reading threads (the loader is not used afterwards)."""
        self.pool.shutdown(wait=True)
