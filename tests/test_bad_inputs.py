"""Faults and bad inputs (issue 12, "Inputs"): each is read right or refused with an
error naming the file, before any long compute; never a silently wrong result."""
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from converters.bin_features import read_bin
from matnet.extract import serialAllFeats
from matnet.images import ImageReadError, imread_uint8
from matnet.simplenn import SimpleNN
from matnet.train import train_weakly as tw

MEAN = np.array([120.0, 110.0, 100.0], np.float32).reshape(1, 1, 3)


def small_net(seed=0, stride=1, pad=1, mean=MEAN):
    rng = np.random.default_rng(seed)
    layers = [{"type": "conv", "name": "conv1",
               "weights": [rng.standard_normal((3, 3, 3, 4)).astype(np.float32) * 0.01,
                           rng.standard_normal(4).astype(np.float32)],
               "stride": [stride, stride], "pad": [pad] * 4},
              {"type": "relu", "name": "relu1"},
              {"type": "pool", "name": "pool1", "method": "max", "pool": [4, 4], "stride": [4, 4],
               "pad": [0, 0, 0, 0]}]
    return SimpleNN.from_structs(layers, meta={"normalization": {"averageImage": mean}})


def rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_images(folder, n, h=16, w=20, seed=0):
    fns = []
    for i in range(n):
        fn = f"im{i}.png"
        Image.fromarray(rgb(h, w, seed + i)).save(folder / fn)
        fns.append(fn)
    return fns


def png16(path, samples: np.ndarray, colour_type: int) -> None:
    """A 16-bit PNG written by hand (Pillow writes no 16-bit colour): samples H x W x C
    (C = 1 gray, 3 RGB), big-endian rows each with filter byte 0."""
    h, w = samples.shape[:2]
    rows = samples.astype(">u2").reshape(h, -1)
    raw = b"".join(b"\0" + r.tobytes() for r in rows)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# ---------------------------------------------------------------- 16-bit images

def test_16bit_png_read_as_high_byte_for_extraction_and_training(tmp_path):
    v = np.random.default_rng(3).integers(0, 65536, (16, 20), dtype=np.int64)
    v[0, :4] = [0, 255, 256, 65535]
    png16(tmp_path / "g16.png", v[:, :, None], 0)
    png16(tmp_path / "c16.png", np.dstack([v, 65535 - v, v // 2]), 2)
    hi = (v >> 8).astype(np.uint8)  # hand-derived: the high byte of each sample
    assert hi[0, :4].tolist() == [0, 0, 1, 255]
    gray = np.repeat(hi[:, :, None], 3, 2)
    colour = np.dstack([hi, ((65535 - v) >> 8).astype(np.uint8), ((v // 2) >> 8).astype(np.uint8)])
    np.testing.assert_array_equal(imread_uint8(tmp_path / "g16.png"), gray)
    np.testing.assert_array_equal(imread_uint8(tmp_path / "c16.png"), colour)
    # training reads the same pixels (minus the mean)
    loader = tw._ImageLoader(MEAN, 1)
    got = loader([str(tmp_path / "g16.png"), str(tmp_path / "c16.png")])
    np.testing.assert_array_equal(got[0], gray.astype(np.float32) - MEAN)
    np.testing.assert_array_equal(got[1], colour.astype(np.float32) - MEAN)
    # features of the 16-bit file = features of the 8-bit image it stands for
    Image.fromarray(gray).save(tmp_path / "g8.png")
    net = small_net()
    serialAllFeats(net, str(tmp_path) + "/", ["g16.png", "g8.png"], tmp_path / "f.bin", useGPU=False)
    f = read_bin(tmp_path / "f.bin", n=2)
    np.testing.assert_array_equal(f[0], f[1])


def test_float_image_refused_naming_the_file(tmp_path):
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ImageReadError, match=r"f\.tif.*floating-point"):
        imread_uint8(tmp_path / "f.tif")
