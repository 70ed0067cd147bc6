"""Faults and bad inputs (issue 12, "Inputs"): each is read right or refused with an
error naming the file, before any long compute; never a silently wrong result."""
import json
import os
import re
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from converters.bin_features import BinFeatureError, read_bin, write_bin
from converters.dbstruct import DbStructError
from converters.matfile import MatFileError, savemat
from converters.native import load_native, save_native
from matnet.cli import main as cli_main
from matnet.datasets.db_base import dbBase
from matnet.recall_at_n import testFromFn
from matnet.extract import serialAllFeats
from matnet.images import ImageReadError, TrainingImageLoader, imread_uint8
from matnet.layers import Layer
from matnet.layers.heads import layerTotalAvgPool
from matnet.simplenn import SimpleNN
from matnet.train.batch import tuple_forward

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
    loader = TrainingImageLoader(MEAN, 1)
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


# ---------------------------------------------------------------- serialAllFeats

class Boom(Layer):
    """Fails on any image: a run that reaches the network raises 'computed'."""
    type = "custom"

    def __init__(self):
        super().__init__("boom")

    def forward(self, x):
        raise RuntimeError("an image was computed")


def pooled_net(stride=1, pad=1, mean=MEAN):
    """small_net + a total average pool: D = 4 whatever the settings."""
    net = small_net(stride=stride, pad=pad, mean=mean)
    net.layers.append(layerTotalAvgPool("avg"))
    return net


def _interrupted(net, folder, fns, out):
    """A run that stops at image 10 (unreadable until repaired): the first 8 images
    (one checkpoint chunk with batchSize 1) are in out.partial."""
    good = (folder / fns[10]).read_bytes()
    (folder / fns[10]).write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match=fns[10]):
        serialAllFeats(net, str(folder) + "/", fns, out, useGPU=False, batchSize=1)
    assert (folder / (out.name + ".partial")).stat().st_size == 8 * 4 * 4
    (folder / fns[10]).write_bytes(good)


@pytest.mark.parametrize("change", ["averageImage", "stride", "pad"])
def test_resume_does_not_reuse_features_of_other_settings(tmp_path, change, monkeypatch):
    fns = write_images(tmp_path, 12)
    out = tmp_path / "f.bin"
    _interrupted(pooled_net(), tmp_path, fns, out)
    changed = {"averageImage": pooled_net(mean=MEAN + 7), "stride": pooled_net(stride=2),
               "pad": pooled_net(pad=0)}[change]
    serialAllFeats(changed, str(tmp_path) + "/", fns, out, useGPU=False, batchSize=1)
    serialAllFeats(changed, str(tmp_path) + "/", fns, tmp_path / "fresh.bin", useGPU=False, batchSize=1)
    np.testing.assert_array_equal(read_bin(out, n=12), read_bin(tmp_path / "fresh.bin", n=12))
    # and the same network does resume (8 images not recomputed: the first are not read again;
    # they cannot be changed to show it: the fingerprint covers each image's size and time)
    _interrupted(pooled_net(), tmp_path, fns, out)
    import matnet.extract as extract
    read, real = [], extract.imread_uint8
    monkeypatch.setattr(extract, "imread_uint8", lambda p: read.append(os.path.basename(p)) or real(p))
    serialAllFeats(pooled_net(), str(tmp_path) + "/", fns, out, useGPU=False, batchSize=1)
    assert sorted(read) == sorted(fns[8:])


def test_empty_image_list_is_an_error_not_an_empty_file(tmp_path):
    with pytest.raises(ValueError, match=r"e\.bin.*image list is empty"):
        serialAllFeats(small_net(), str(tmp_path) + "/", [], tmp_path / "e.bin", useGPU=False)
    assert not list(tmp_path.iterdir())


def test_output_location_checked_before_any_image(tmp_path):
    fns = write_images(tmp_path, 2)
    net = small_net()
    net.layers.append(Boom())
    with pytest.raises(FileNotFoundError, match=r"nowhere.*does not exist"):
        serialAllFeats(net, str(tmp_path) + "/", fns, tmp_path / "nowhere" / "o.bin", useGPU=False)
    (tmp_path / "afile").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"afile.*is a file"):
        serialAllFeats(net, str(tmp_path) + "/", fns, tmp_path / "afile" / "o.bin", useGPU=False)
    (tmp_path / "adir.bin").mkdir()
    with pytest.raises(IsADirectoryError, match=r"adir\.bin.*is a folder"):
        serialAllFeats(net, str(tmp_path) + "/", fns, tmp_path / "adir.bin", useGPU=False)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to simulate a full disk")
def test_disk_full_names_the_file(tmp_path):
    fns = write_images(tmp_path, 2)
    os.symlink("/dev/full", tmp_path / "o.bin.partial")
    with pytest.raises(OSError, match=r"o\.bin\.partial.*No space left"):
        serialAllFeats(small_net(), str(tmp_path) + "/", fns, tmp_path / "o.bin", useGPU=False)
    assert not (tmp_path / "o.bin").exists()


def test_missing_images_listed_before_any_image_is_computed(tmp_path):
    fns = write_images(tmp_path, 12)
    (tmp_path / fns[10]).unlink()
    net = small_net()
    net.layers.append(Boom())
    with pytest.raises(FileNotFoundError, match=r"1 of 12 images not found.*im10\.png"):
        serialAllFeats(net, str(tmp_path) + "/", fns, tmp_path / "o.bin", useGPU=False, batchSize=1)


def test_corrupt_and_truncated_jpeg_name_the_file(tmp_path):
    Image.fromarray(rgb(64, 64, 1)).save(tmp_path / "ok.jpg", quality=90)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[:len(data) // 2])
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8\xff" + bytes(200))
    for bad in ("trunc.jpg", "garbage.jpg"):
        with pytest.raises(ImageReadError, match=bad):
            serialAllFeats(small_net(), str(tmp_path) + "/", ["ok.jpg", bad], tmp_path / "o.bin", useGPU=False)
        with pytest.raises(ImageReadError, match=bad):
            TrainingImageLoader(MEAN, 1)([str(tmp_path / bad)])


def test_image_smaller_than_receptive_field_names_file_and_layer(tmp_path):
    fns = write_images(tmp_path, 2)
    Image.fromarray(rgb(2, 3, 9)).save(tmp_path / "tiny.png")
    with pytest.raises(RuntimeError, match=r"tiny\.png.*2 x 3.*layer 2 'pool1' \(pool\)"):
        serialAllFeats(small_net(), str(tmp_path) + "/", fns + ["tiny.png"], tmp_path / "o.bin", useGPU=False)


def test_images_giving_different_D_named(tmp_path):
    fns = write_images(tmp_path, 2)
    Image.fromarray(rgb(24, 20, 5)).save(tmp_path / "tall.png")
    with pytest.raises(ValueError, match=r"tall\.png.*24 x 20.*120 values, earlier images 80"):
        serialAllFeats(small_net(), str(tmp_path) + "/", fns + ["tall.png"], tmp_path / "o.bin", useGPU=False)


def test_training_tuple_failures_name_the_images(tmp_path):
    fns = [str(tmp_path / f) for f in write_images(tmp_path, 2)]
    Image.fromarray(rgb(2, 3, 9)).save(tmp_path / "tiny.png")
    Image.fromarray(rgb(24, 20, 9)).save(tmp_path / "tall.png")
    loader = TrainingImageLoader(MEAN, 1)
    with pytest.raises(ValueError, match=r"im1\.png \(16 x 20\), .*tall\.png \(24 x 20\)"):
        loader(fns + [str(tmp_path / "tall.png")])
    ims = loader([str(tmp_path / "tiny.png")] * 2)
    x = torch.from_numpy(np.ascontiguousarray(ims)).permute(0, 3, 1, 2)
    with pytest.raises(RuntimeError, match=r"tiny\.png.*2 x 3 images.*layer 2 'pool1' \(pool\)"):
        tuple_forward(small_net().train(), x, [str(tmp_path / "tiny.png")] * 2)


# ---------------------------------------------------------------- dataset specs and .bin files

class Spec(dbBase):
    def __init__(self, name, specDir):
        self.name = name
        self.dbLoad(specDir)


def write_spec(folder, name="toy", nDb=6, nQ=3, **changes):
    s = {"whichSet": "test", "dbImageFns": [f"db/{i}.jpg" for i in range(nDb)],
         "utmDb": np.vstack([np.arange(nDb) * 10.0, np.zeros(nDb)]),
         "qImageFns": [f"q/{i}.jpg" for i in range(nQ)], "utmQ": np.vstack([np.arange(nQ) * 20.0, np.ones(nQ)]),
         "numImages": np.uint16(nDb), "numQueries": np.uint16(nQ), "posDistThr": np.uint8(25),
         "posDistSqThr": np.uint16(625), "nonTrivPosDistSqThr": np.uint8(100)}
    for k, v in changes.items():
        if v is None:
            del s[k]
        else:
            s[k] = v
    savemat(folder / f"{name}.mat", {"dbStruct": s}, format="5")


@pytest.mark.parametrize("change, message", [
    ({"numImages": np.uint16(7)}, r"numImages is 7 but dbStruct\.dbImageFns lists 6"),
    ({"numQueries": np.uint8(2)}, r"numQueries is 2 but dbStruct\.qImageFns lists 3"),
    ({"nonTrivPosDistSqThr": None}, r"no field 'nonTrivPosDistSqThr'"),
    ({"posDistThr": "far"}, r"posDistThr is not a number"),
    ({"posDistThr": -5.0}, r"posDistThr is -5"),
    ({"utmDb": np.array([[0, 10, np.nan, 30, 40, 50], [0] * 6], float)}, r"utmDb has NaN/Inf.*index 2"),
    ({"dbImageFns": np.zeros((0, 1), object), "utmDb": np.zeros((2, 0)), "numImages": 0.0}, r"no database images"),
])
def test_bad_spec_file_named(tmp_path, change, message):
    write_spec(tmp_path, **change)
    with pytest.raises(DbStructError, match=r"toy\.mat: .*" + message):
        Spec("toy", tmp_path)


def test_db_and_query_bin_of_different_D_say_both(tmp_path):
    write_spec(tmp_path)
    db = Spec("toy", tmp_path)
    rng = np.random.default_rng(0)
    write_bin(tmp_path / "q.bin", rng.standard_normal((3, 8)))
    write_bin(tmp_path / "db.bin", rng.standard_normal((6, 16)))
    with pytest.raises(BinFeatureError, match=r"q\.bin have D=8.*db\.bin have D=16"):
        testFromFn(db, tmp_path / "db.bin", tmp_path / "q.bin")
    # read_bin with both D and n given (trainWeakly's feature caches) says both too
    with pytest.raises(BinFeatureError, match=r"db\.bin: holds 6 images of D=16, expected D=8"):
        read_bin(tmp_path / "db.bin", D=8, n=6)


def test_truncated_wrong_size_and_empty_bin(tmp_path):
    write_spec(tmp_path)
    db = Spec("toy", tmp_path)
    rng = np.random.default_rng(1)
    write_bin(tmp_path / "q.bin", rng.standard_normal((3, 8)))
    write_bin(tmp_path / "db.bin", rng.standard_normal((6, 8)))
    full = (tmp_path / "db.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(full[:-6])  # killed mid-value
    (tmp_path / "short.bin").write_bytes(full[:-8 * 4 - 4])  # an image and a value short
    (tmp_path / "empty.bin").write_bytes(b"")
    write_bin(tmp_path / "other.bin", rng.standard_normal((5, 8)))  # another list's features
    for fn, msg in (("cut.bin", "not a whole number of float32"), ("short.bin", r"4\.\d+ images: truncated"),
                    ("empty.bin", "empty"), ("other.bin", "holds 5 images of D=8, expected 6")):
        with pytest.raises(BinFeatureError, match=re.escape(fn) + ".*" + msg):
            testFromFn(db, tmp_path / fn, tmp_path / "q.bin")


# ---------------------------------------------------------------- native network files

def _native_parts(tmp_path):
    good = save_native(small_net(), tmp_path / "good.safetensors").read_bytes()
    n = struct.unpack("<Q", good[:8])[0]
    return json.loads(good[8:8 + n]), good[8 + n:]


def _write_native(path, header, data, raw_header=None):
    hb = raw_header if raw_header is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + data)
    return path


W0, W1 = "0/conv1/weights/0", "0/conv1/weights/1"


def _doc_change(f):
    def change(h):
        doc = json.loads(h["__metadata__"]["matnet"])
        f(doc)
        h["__metadata__"]["matnet"] = json.dumps(doc)
    return change


NATIVE_FAULTS = {
    "shape product overflows int64": (lambda h: h[W0].update(shape=[2 ** 32, 2 ** 32, 1, 1], data_offsets=[0, 0]),
                                      r"needs \d+ bytes"),
    "negative offset": (lambda h: h[W0].update(data_offsets=[-4, 428]), r"data_offsets \[-4, 428\]"),
    "overlapping offsets": (lambda h: h[W1].update(data_offsets=[0, 16]), "overlapping"),
    "offset past the data": (lambda h: h[W0].update(data_offsets=[10 ** 6, 10 ** 6 + 432]), "ends at byte 1000432"),
    "float in shape": (lambda h: h[W0].update(shape=[3.0, 3, 3, 4]), r"shape \[3\.0, 3, 3, 4\] is not a list of integers"),
    "bool offset": (lambda h: h[W0].update(data_offsets=[False, 432]), "data_offsets"),
    "entry not an object": (lambda h: h.update({W0: 5}), "not an object"),
    "missing dtype": (lambda h: h[W0].pop("dtype"), "no 'dtype'"),
    "unknown dtype": (lambda h: h[W0].update(dtype="F128"), "dtype 'F128'"),
    "metadata not an object": (lambda h: h.update({"__metadata__": [1]}), "__metadata__"),
    "weight shape not matching its layer": (lambda h: h[W0].update(shape=[3, 3, 4, 3]), r"layer 0: .*4 biases for 3 filters"),
    "description refers to a missing tensor": (_doc_change(lambda d: d["layers"][0]["struct"]["__struct__"][2].__setitem__(1, [{"__tensor__": "nope"}])),
                                               "tensor 'nope'"),
    "description layers not a list": (_doc_change(lambda d: d.update(layers=5)), "'layers' is not a list"),
    "description struct malformed": (_doc_change(lambda d: d["layers"][0].update(struct={"__struct__": [1, 2]})), "struct node"),
}


@pytest.mark.parametrize("fault", NATIVE_FAULTS)
def test_native_header_faults_name_the_file(tmp_path, fault):
    header, data = _native_parts(tmp_path)
    change, message = NATIVE_FAULTS[fault]
    change(header)
    p = _write_native(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(MatFileError, match=r"bad\.safetensors: .*" + message):
        load_native(p)


def test_native_file_level_faults_name_the_file(tmp_path):
    header, data = _native_parts(tmp_path)
    cases = {"list.safetensors": (b"[1, 2, 3]", data, "not an object"),
             "deep.safetensors": (b"[" * 100000 + b"]" * 100000, data, "nested too deeply"),
             "dup.safetensors": (json.dumps(header)[:-1].encode() + b', "' + W0.encode() + b'": '
                                 + json.dumps(header[W0]).encode() + b"}", data, "duplicate key"),
             "short.safetensors": (None, data[:-10], "truncated"),
             "long.safetensors": (None, data + bytes(8), "trailing bytes")}
    for name, (raw, d, message) in cases.items():
        p = _write_native(tmp_path / name, header, d, raw_header=raw)
        with pytest.raises(MatFileError, match=re.escape(name) + ".*" + message):
            load_native(p)
    deep = dict(header, __metadata__={"matnet": "[" * 50000 + "]" * 50000})
    with pytest.raises(MatFileError, match=r"deepdoc\.safetensors.*nested too deeply"):
        load_native(_write_native(tmp_path / "deepdoc.safetensors", deep, data))


def test_inspect_lists_every_layer_that_fails_to_build(tmp_path, capsys):
    header, data = _native_parts(tmp_path)
    doc = json.loads(header["__metadata__"]["matnet"])
    doc["layers"][0]["class_name"] = "layerMystery"
    doc["layers"][2]["struct"]["__struct__"][1][1] = "bogus"  # pool1's type
    header["__metadata__"]["matnet"] = json.dumps(doc)
    p = _write_native(tmp_path / "two.safetensors", header, data)
    assert cli_main(["inspect", str(p)]) == 1
    out, err = capsys.readouterr()
    assert "two.safetensors: 2 of 3 layers cannot be built" in err
    assert re.search(r"layer 0: .*unknown layer class 'layerMystery'", err)
    assert re.search(r"layer 2: .*unsupported layer type 'bogus'", err)
    assert "layerMystery" not in out
    # a network that builds but cannot run at the asked size: the table says where and why
    good = save_native(small_net(), tmp_path / "good.safetensors")
    assert cli_main(["inspect", str(good), "--size", "2", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"conv1 .* 2x2x4 \[16\]", out) and re.search(r"pool1 .* fails: ", out)


def test_average_image_of_the_wrong_shape_refused(tmp_path):
    fns = write_images(tmp_path, 2)
    for avg in (np.full((1, 1, 1), 100.0), np.zeros((4, 4)), np.zeros((1, 1, 2)), np.zeros(0)):
        with pytest.raises(ValueError, match=r"averageImage'\] has shape"):
            serialAllFeats(small_net(mean=avg), str(tmp_path) + "/", fns, tmp_path / "o.bin", useGPU=False)
        with pytest.raises(ValueError, match=r"averageImage'\] has shape"):
            TrainingImageLoader(avg, 1)  # today: a 1-value mean broadcast over the 3 channels
    # a plain 3-vector is the per-channel mean, as 1x1x3
    serialAllFeats(small_net(mean=MEAN.reshape(3)), str(tmp_path) + "/", fns, tmp_path / "v.bin", useGPU=False)
    serialAllFeats(small_net(), str(tmp_path) + "/", fns, tmp_path / "m.bin", useGPU=False)
    np.testing.assert_array_equal(read_bin(tmp_path / "v.bin", n=2), read_bin(tmp_path / "m.bin", n=2))
    np.testing.assert_array_equal(TrainingImageLoader(MEAN.reshape(1, 3), 1).avg, MEAN.reshape(3))


def test_shards_of_different_D_refused_not_merged(tmp_path, monkeypatch):
    """Under torchrun each rank extracts its shard; if another rank's images give another
    D (no fixed-size head), rank 0 refuses to merge (one process raises as well).  Rank
    1 is simulated: its shard of 8 images reports 8 x 120 values, ours holds 80 each."""
    from matnet import distributed
    fns = write_images(tmp_path, 16)
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "check_same", lambda *a: None)
    monkeypatch.setattr(distributed, "all_gather_json", lambda mine, what: [mine, 8 * 120 * 4])
    monkeypatch.setattr(distributed, "on_rank0", lambda fn, what: fn())
    with pytest.raises(ValueError, match=r"o\.bin: the shards hold representations of different lengths \(80, 120"):
        serialAllFeats(small_net(), str(tmp_path) + "/", fns, tmp_path / "o.bin", useGPU=False, batchSize=1)
    assert not (tmp_path / "o.bin").exists()


def test_cli_reports_bad_inputs_on_stderr_with_status_1(tmp_path, capsys):
    net = save_native(small_net(), tmp_path / "net.safetensors")
    fns = write_images(tmp_path, 2)
    Image.fromarray(rgb(2, 3, 9)).save(tmp_path / "tiny.png")
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "list.txt").write_text("\n".join(fns + ["tiny.png"]))
    base = ["features", "--net", str(net), "--root", str(tmp_path), "--useGPU", "false"]
    for lst, message in (("empty.txt", "image list is empty"), ("list.txt", r"tiny\.png: .*2 x 3 image.*pool1")):
        assert cli_main(base + ["--images", str(tmp_path / lst), "--out", str(tmp_path / "o.bin")]) == 1
        out, err = capsys.readouterr()
        assert re.search(r"^matnet: error: .*" + message, err, re.M), err
        assert not (tmp_path / "o.bin").exists()
    # a truncated network file (v5 and v7.3)
    from converters.network import save_net
    for fmt in ("5", "7.3"):
        raw = save_net(small_net(), tmp_path / f"n{fmt}.mat", format=fmt).read_bytes()
        cut = tmp_path / f"cut{fmt}.mat"
        cut.write_bytes(raw[:len(raw) * 2 // 3])
        assert cli_main(["inspect", str(cut)]) == 1
        assert re.search(r"^matnet: error: .*cut" + re.escape(fmt) + r"\.mat", capsys.readouterr().err, re.M)


def test_damaged_partial_files_are_not_reused(tmp_path):
    fns = write_images(tmp_path, 12)
    serialAllFeats(pooled_net(), str(tmp_path) + "/", fns, tmp_path / "fresh.bin", useGPU=False, batchSize=1)
    out = tmp_path / "f.bin"
    for damage in ("truncate", "json"):
        _interrupted(pooled_net(), tmp_path, fns, out)
        if damage == "truncate":  # shorter than the 8 images its sidecar records
            with open(str(out) + ".partial", "r+b") as f:
                f.truncate(5 * 4 * 4 + 6)
        else:
            (tmp_path / "f.bin.partial.json").write_text("{not json")
        serialAllFeats(pooled_net(), str(tmp_path) + "/", fns, out, useGPU=False, batchSize=1)
        assert out.read_bytes() == (tmp_path / "fresh.bin").read_bytes()
        assert not list(tmp_path.glob("f.bin.*"))
