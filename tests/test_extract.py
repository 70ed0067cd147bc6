"""Image reading and serialAllFeats / computeRepresentation on generated images, against
a per-image reference (vl_simplenn on the known pixels, MATLAB column-major flattening)."""
import numpy as np
import pytest
import torch
from PIL import Image

from converters.bin_features import read_bin
from matnet.extract import computeRepresentation, serialAllFeats
from matnet.images import imread_uint8, vl_imreadjpeg
from matnet.layers import Layer
from matnet.layers.heads import layerTotalAvgPool
from matnet.layout import torch_to_matlab
from matnet.simplenn import SimpleNN, vl_simplenn

MEAN = np.array([123.68, 116.779, 103.939], np.float32).reshape(1, 1, 3)


def rgb(h, w, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def tiny_net(total_pool=False, seed=0):
    rng = np.random.default_rng(seed)
    layers = [{"type": "conv", "name": "conv1",
               "weights": [rng.standard_normal((3, 3, 3, 2)).astype(np.float32) * 0.01,
                           rng.standard_normal(2).astype(np.float32)],
               "stride": [1, 1], "pad": [1, 1, 1, 1]},
              {"type": "relu", "name": "relu1"},
              {"type": "pool", "name": "pool1", "method": "max", "pool": [2, 2], "stride": [2, 2],
               "pad": [0, 0, 0, 0]}]
    net = SimpleNN.from_structs(layers, meta={"normalization": {"averageImage": MEAN}})
    if total_pool:
        net.layers.append(layerTotalAvgPool("avg"))
    return net


def reference(net, im_uint8):
    """Per-image: float pixels - mean, vl_simplenn, MATLAB H x W x C reshaped column-major."""
    x = torch.from_numpy((im_uint8.astype(np.float32) - MEAN).transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        y = vl_simplenn(net.eval(), x)[-1]
    return torch_to_matlab(y)[..., 0].reshape(-1, order="F")


# ---------------------------------------------------------------- image reading

def test_image_modes(tmp_path):
    a = rgb(7, 5, 1)
    Image.fromarray(a).save(tmp_path / "rgb.png")
    Image.fromarray(a[:, :, 1]).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([a, np.full((7, 5), 9, np.uint8)]), "RGBA").save(tmp_path / "rgba.png")
    pal = np.array([[10, 20, 30], [200, 100, 0], [0, 255, 7]], np.uint8)
    idx = np.random.default_rng(2).integers(0, 3, (7, 5)).astype(np.uint8)
    p = Image.fromarray(idx, "P")
    p.putpalette(pal.ravel().tolist())
    p.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(imread_uint8(tmp_path / "rgb.png"), a)
    np.testing.assert_array_equal(imread_uint8(tmp_path / "gray.png"), np.repeat(a[:, :, 1:2], 3, 2))
    np.testing.assert_array_equal(imread_uint8(tmp_path / "rgba.png"), a)
    np.testing.assert_array_equal(imread_uint8(tmp_path / "pal.png"), pal[idx])
    f = vl_imreadjpeg(tmp_path / "rgb.png")
    assert f.dtype == np.float32 and f.shape == (7, 5, 3) and f.max() <= 255


def test_jpeg_cmyk_and_extension_fallback(tmp_path):
    yy, xx = np.mgrid[0:32, 0:48]
    smooth = np.dstack([xx * 5, yy * 7, (xx + yy) * 3]).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=98)
    Image.fromarray(smooth).convert("CMYK").save(tmp_path / "c.jpg", quality=98)
    for name in ("a.jpg", "c.jpg"):
        got = imread_uint8(tmp_path / name).astype(int)
        assert got.shape == (32, 48, 3) and np.abs(got - smooth).mean() < 3
    Image.fromarray(smooth).save(tmp_path / "t.png")
    with pytest.warns(UserWarning, match=r"t\.jpg not found, reading t\.png"):
        np.testing.assert_array_equal(imread_uint8(tmp_path / "t.jpg"), smooth)
    with pytest.raises(FileNotFoundError, match=r"missing\.jpg"):
        imread_uint8(tmp_path / "missing.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(OSError, match=r"broken\.jpg"):
        imread_uint8(tmp_path / "broken.jpg")


# ---------------------------------------------------------------- serialAllFeats

def test_serialAllFeats_matches_reference(tmp_path):
    net = tiny_net()
    ims = [rgb(10, 6, s) for s in range(7)]
    ims[3] = np.repeat(ims[3][:, :, :1], 3, 2)
    fns = []
    for i, a in enumerate(ims):
        if i == 3:
            Image.fromarray(a[:, :, 0]).save(tmp_path / f"{i}.png")  # grayscale file
        else:
            Image.fromarray(a).save(tmp_path / f"{i}.png")
        fns.append(f"{i}.png")
    serialAllFeats(net, str(tmp_path) + "/", fns, tmp_path / "out.bin", useGPU=False, numThreads=2,
                   batchSize=3)
    feats = read_bin(tmp_path / "out.bin", n=7)
    assert feats.shape == (7, 5 * 3 * 2)  # output 5 x 3 x 2 per image
    for i, a in enumerate(ims):
        np.testing.assert_allclose(feats[i], reference(net, a), rtol=1e-5, atol=1e-4)
    assert not list(tmp_path.glob("out.bin.*"))
    one = computeRepresentation(net, vl_imreadjpeg(tmp_path / "2.png"), useGPU=False)
    np.testing.assert_allclose(one, feats[2], rtol=1e-5, atol=1e-4)
    gray = computeRepresentation(net, ims[3][:, :, 0].astype(np.float32), useGPU=False)
    np.testing.assert_allclose(gray, feats[3], rtol=1e-5, atol=1e-4)
    # JPEG and CMYK JPEG in one list: pixels as the reader gives them, network as reference
    Image.fromarray(ims[0]).save(tmp_path / "j.jpg", quality=95)
    Image.fromarray(ims[1]).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    serialAllFeats(net, str(tmp_path) + "/", ["j.jpg", "c.jpg"], tmp_path / "j.bin", useGPU=False)
    jf = read_bin(tmp_path / "j.bin", n=2)
    for i, fn in enumerate(["j.jpg", "c.jpg"]):
        np.testing.assert_allclose(jf[i], reference(net, imread_uint8(tmp_path / fn)), rtol=1e-5, atol=1e-4)
    with pytest.raises(TypeError, match="float32"):
        computeRepresentation(net, ims[0].astype(np.float64), useGPU=False)


def test_serialAllFeats_mixed_sizes_keep_order(tmp_path):
    net = tiny_net(total_pool=True)
    shapes = [(8, 6), (6, 8), (8, 6), (8, 6), (10, 4), (6, 8), (8, 6)]
    ims = [rgb(h, w, 10 + i) for i, (h, w) in enumerate(shapes)]
    for i, a in enumerate(ims):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    serialAllFeats(net, str(tmp_path) + "/", [f"{i}.png" for i in range(7)], tmp_path / "m.bin",
                   useGPU=False, batchSize=2)
    feats = read_bin(tmp_path / "m.bin", n=7)
    for i, a in enumerate(ims):
        np.testing.assert_allclose(feats[i], reference(net, a), rtol=1e-5, atol=1e-4)


class Counter(Layer):
    """Counts images; raises once ``fail_after`` images have gone through."""
    type = "custom"

    def __init__(self):
        super().__init__("counter")
        self.seen, self.fail_after = 0, None

    def forward(self, x):
        if self.fail_after is not None and self.seen + x.shape[0] > self.fail_after:
            raise RuntimeError("simulated crash")
        self.seen += x.shape[0]
        return x


def test_resume_after_interruption(tmp_path):
    net = tiny_net()
    counter = Counter()
    net.layers.insert(0, counter)
    ims = [rgb(6, 4, 30 + i) for i in range(21)]
    fns = []
    for i, a in enumerate(ims):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
        fns.append(f"{i}.png")
    out = tmp_path / "r.bin"
    counter.fail_after = 18  # batches of 2 checkpoint every 16 images
    with pytest.raises(RuntimeError, match="simulated"):
        serialAllFeats(net, str(tmp_path) + "/", fns, out, useGPU=False, batchSize=2)
    assert not out.exists() and (tmp_path / "r.bin.partial").exists()
    assert counter.seen == 18
    counter.fail_after, counter.seen = None, 0
    serialAllFeats(net, str(tmp_path) + "/", fns, out, useGPU=False, batchSize=2)
    assert counter.seen == 21 - 16  # finished images were not recomputed
    feats = read_bin(out, n=21)
    for i, a in enumerate(ims):
        np.testing.assert_allclose(feats[i], reference(net, a), rtol=1e-5, atol=1e-4)
    assert not list(tmp_path.glob("r.bin.*"))
    # a stale partial from another image list is not reused
    counter.fail_after, counter.seen = 18, 0
    with pytest.raises(RuntimeError):
        serialAllFeats(net, str(tmp_path) + "/", fns, out, useGPU=False, batchSize=2)
    counter.fail_after, counter.seen = None, 0
    serialAllFeats(net, str(tmp_path) + "/", fns[::-1], out, useGPU=False, batchSize=2)
    assert counter.seen == 21
    np.testing.assert_allclose(read_bin(out, n=21), feats[::-1], rtol=1e-6)


def _interrupted(tmp_path, seed: int, out: str):
    """A counting tiny network and 20 images under ``tmp_path``; a serialAllFeats run into
    ``out`` crashed after 18 images (its first 16 checkpointed).  Returns (net, counter, fns)."""
    net = tiny_net()
    counter = Counter()
    net.layers.insert(0, counter)
    fns = []
    for i in range(20):
        Image.fromarray(rgb(6, 4, seed + i)).save(tmp_path / f"{i}.png")
        fns.append(f"{i}.png")
    counter.fail_after = 18
    with pytest.raises(RuntimeError):
        serialAllFeats(net, str(tmp_path) + "/", fns, tmp_path / out, useGPU=False, batchSize=2)
    return net, counter, fns


def test_resume_ignores_partial_of_another_network(tmp_path):
    net, counter, fns = _interrupted(tmp_path, 60, "n.bin")
    with torch.no_grad():
        net.layers[1].weights[0][0, 0, 0, 0] += 1.0  # another network: nothing is reused
    counter.fail_after, counter.seen = None, 0
    serialAllFeats(net, str(tmp_path) + "/", fns, tmp_path / "n.bin", useGPU=False, batchSize=2)
    assert counter.seen == 20


def test_computeRepresentation_input_checks(tmp_path):
    net = tiny_net()
    a = rgb(10, 6, 3)
    with pytest.warns(UserWarning, match="uint8"):
        got = computeRepresentation(net, a, useGPU=False)
    np.testing.assert_allclose(got, reference(net, a), rtol=1e-5, atol=1e-4)
    if not torch.cuda.is_available():
        from matnet import device
        device._WARNED = False  # the fallback warning is given once per process
        with pytest.warns(UserWarning, match="no CUDA"):
            computeRepresentation(net, a.astype(np.float32), useGPU=True)


def test_batch_tensor_pinned_on_a_gpu_only():
    """serialAllFeats' batches: a plain stack on the CPU; on a GPU one stack straight into
    pinned memory (the copy to the device is then asynchronous)."""
    from matnet.extract import batch_tensor, device_mean
    ims = [np.full((4, 5, 3), i, np.uint8) for i in range(3)]
    t = batch_tensor(ims, torch.device("cpu"))
    assert t.shape == (3, 4, 5, 3) and t.dtype == torch.uint8 and not t.is_pinned()
    np.testing.assert_array_equal(t.numpy(), np.stack(ims))
    m = device_mean(np.array([1, 2, 3], np.float32), torch.device("cpu"))
    assert m.shape == (1, 3, 1, 1) and m.dtype == torch.float32
    if torch.cuda.is_available():
        p = batch_tensor(ims, torch.device("cuda"))
        assert p.is_pinned() and p.device.type == "cpu"
        np.testing.assert_array_equal(p.numpy(), np.stack(ims))


@pytest.mark.parametrize("message", ["CUDA error: an illegal memory access was encountered",
                                     "cuDNN error: CUDNN_STATUS_EXECUTION_FAILED",
                                     "CUDA out of memory. Tried to allocate 2.00 GiB"])
def test_gpu_failures_are_not_blamed_on_the_images(tmp_path, message):
    """A GPU error inside the network propagates as it is (not as 'the network fails on
    this image ... smaller than its receptive field?'); an input error still names the image."""
    from matnet.images import ImageNetworkError
    net = tiny_net()
    counter = Counter()
    net.layers.insert(0, counter)
    Image.fromarray(rgb(6, 4, 30)).save(tmp_path / "0.png")
    counter.fail_after = 0
    real = Counter.forward
    try:
        Counter.forward = lambda self, x: (_ for _ in ()).throw(RuntimeError(message))
        with pytest.raises(RuntimeError) as e:
            serialAllFeats(net, str(tmp_path) + "/", ["0.png"], tmp_path / "g.bin", useGPU=False)
        assert not isinstance(e.value, ImageNetworkError) and str(e.value) == message
        Counter.forward = lambda self, x: (_ for _ in ()).throw(RuntimeError("Given input size: too small"))
        with pytest.raises(ImageNetworkError, match=r"0\.png.*too small"):
            serialAllFeats(net, str(tmp_path) + "/", ["0.png"], tmp_path / "g.bin", useGPU=False)
    finally:
        Counter.forward = real
def test_resume_ignores_partial_when_an_image_changed(tmp_path):
    """Issue 24 case 2: images replaced under the same names were reused (75.5 % printed,
    59.5 % fresh).  The fingerprint now covers each image's size and modification time."""
    import os
    net, counter, fns = _interrupted(tmp_path, 80, "c.bin")
    new = rgb(6, 4, 999)
    Image.fromarray(new).save(tmp_path / "3.png")  # another picture, same name
    st = os.stat(tmp_path / "3.png")
    os.utime(tmp_path / "3.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # even within one mtime tick
    counter.fail_after, counter.seen = None, 0
    serialAllFeats(net, str(tmp_path) + "/", fns, tmp_path / "c.bin", useGPU=False, batchSize=2)
    assert counter.seen == 20  # nothing reused
    np.testing.assert_allclose(read_bin(tmp_path / "c.bin", n=20)[3], reference(net, new), rtol=1e-5, atol=1e-4)


class Sleepy(Layer):
    """Slows every batch down (a long extraction to race against)."""
    type = "custom"

    def __init__(self, seconds):
        super().__init__("sleepy")
        self.seconds = seconds

    def forward(self, x):
        import time
        time.sleep(self.seconds)
        return x


def test_two_runs_into_one_output_take_turns(tmp_path, capfd):
    """Issue 24 case 1: two runs writing one feature file mixed their features (a run
    reported success holding the other network's).  Now the second waits for the
    output's lock, naming the holder, and the file holds one network's features.  (The
    first run is a thread: the lock is the same between threads and processes.)"""
    import os
    import threading
    import time
    fns = []
    for i in range(12):
        Image.fromarray(rgb(6, 4, 200 + i)).save(tmp_path / f"{i}.png")
        fns.append(f"{i}.png")
    folder, out = str(tmp_path) + "/", tmp_path / "shared.bin"
    net_a = tiny_net(seed=1)
    net_a.layers.insert(0, Sleepy(0.1))
    net_b = tiny_net(seed=2)
    errors = []

    def first():
        try:
            serialAllFeats(net_a, folder, fns, out, useGPU=False, batchSize=2, numThreads=1)
        except BaseException as e:  # noqa: BLE001 -- reported by the test
            errors.append(e)
    t = threading.Thread(target=first)
    t.start()
    try:
        lock = tmp_path / "shared.bin.partial.lock"
        deadline = time.time() + 30
        while not (lock.exists() and lock.read_text()) and time.time() < deadline:
            time.sleep(0.01)
        assert lock.exists(), "the first run never took the lock"
        serialAllFeats(net_b, folder, fns, out, useGPU=False, batchSize=2, numThreads=1)
    finally:
        t.join(60)
    assert not errors and not t.is_alive()
    err = capfd.readouterr().err
    assert f"{out}: another run is writing it (pid {os.getpid()} on " in err and "waiting" in err
    feats = read_bin(out, n=12)  # B ran after A: B's features, all of them
    for i in range(12):
        np.testing.assert_allclose(feats[i], reference(net_b, rgb(6, 4, 200 + i)), rtol=1e-5, atol=1e-4)
    assert not list(tmp_path.glob("shared.bin.*"))


def test_stale_temporaries_of_the_output_removed(tmp_path, capfd):
    """Issue 24 case 19: a killed merge (or write) of an output left its temporary (up
    to ~600 MB) and no later run removed it; the next run of that output does, saying so."""
    for i in range(3):
        Image.fromarray(rgb(6, 4, 300 + i)).save(tmp_path / f"{i}.png")
    out = tmp_path / "o.bin"
    stale = tmp_path / "o.bin.4242-deadbeef.matnet-tmp"
    stale.write_bytes(b"x" * 1000)
    stale_sidecar = tmp_path / "o.bin.partial.json.4243-cafebabe.matnet-tmp"  # a killed checkpoint's
    stale_sidecar.write_text("{")
    other = tmp_path / "p.bin.4242-deadbeef.matnet-tmp"  # another output's: kept
    other.write_bytes(b"y")
    serialAllFeats(tiny_net(), str(tmp_path) + "/", [f"{i}.png" for i in range(3)], out, useGPU=False)
    assert not stale.exists() and not stale_sidecar.exists() and other.exists()
    assert ("o.bin: removed 2 temporaries a killed run left (o.bin.4242-deadbeef.matnet-tmp, "
            "o.bin.partial.json.4243-cafebabe.matnet-tmp)") in capfd.readouterr().err


def test_oversized_image_is_not_blamed_on_the_receptive_field(tmp_path):
    """Issue 24 case 18: an image the network ran out of memory on was reported as
    "smaller than its receptive field?"; now the message says memory and what to do, and
    the receptive-field hint stays for errors that say the input is too small."""
    from matnet.images import ImageNetworkError
    net = tiny_net()
    counter = Counter()
    net.layers.insert(0, counter)
    Image.fromarray(rgb(6, 4, 31)).save(tmp_path / "0.png")
    real = Counter.forward
    oom = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried "
           "to allocate 40000000000000 bytes. Error code 12 (Cannot allocate memory)")
    try:
        Counter.forward = lambda self, x: (_ for _ in ()).throw(RuntimeError(oom))
        with pytest.raises(ImageNetworkError) as e:
            serialAllFeats(net, str(tmp_path) + "/", ["0.png"], tmp_path / "m.bin", useGPU=False)
        msg = str(e.value)
        assert "0.png: the network ran out of memory on this 6 x 4 image (a batch of 1)" in msg
        assert "--batch-size" in msg and "receptive field" not in msg
        Counter.forward = lambda self, x: (_ for _ in ()).throw(RuntimeError(
            "Calculated padded input size per channel: (2 x 2). Kernel size: (3 x 3). Kernel size can't be "
            "greater than actual input size"))
        with pytest.raises(ImageNetworkError, match=r"0\.png: the network fails on this 6 x 4 image \(smaller than "
                                                    r"its receptive field\?\)"):
            serialAllFeats(net, str(tmp_path) + "/", ["0.png"], tmp_path / "m.bin", useGPU=False)
    finally:
        Counter.forward = real


def test_finished_shards_of_a_killed_multiprocess_run_are_reused(tmp_path, capfd):
    """Issue 24 case 12: after a killed 2-process run, a 1-process rerun ignored the
    finished shards and left them on disk.  Now a matching shard is reused (its images
    not computed again), the rest computed, the result equals a fresh run, and every
    shard file is removed; a shard of another network is removed, saying so."""
    from matnet.feature_files import fingerprint, mark_complete
    net = tiny_net()
    counter = Counter()
    net.layers.insert(0, counter)
    fns = []
    for i in range(12):
        Image.fromarray(rgb(6, 4, 400 + i)).save(tmp_path / f"{i}.png")
        fns.append(f"{i}.png")
    folder, out = str(tmp_path) + "/", tmp_path / "s.bin"
    serialAllFeats(net, folder, fns, tmp_path / "fresh.bin", useGPU=False, batchSize=2)
    # what a killed 2-process run leaves: rank 0's shard finished, rank 1's partial
    shard0 = tmp_path / "s.bin.shard0of2"
    serialAllFeats(net, folder, fns[:8], shard0, useGPU=False, batchSize=2)
    mark_complete(tmp_path / "s.bin.shard0of2.json", fingerprint(net, folder, fns[:8]), [0, 8])
    (tmp_path / "s.bin.shard1of2.partial").write_bytes(b"\0" * 32)
    (tmp_path / "s.bin.shard1of2.partial.json").write_text("{}")
    counter.seen = 0
    serialAllFeats(net, folder, fns, out, useGPU=False, batchSize=2)
    assert counter.seen == 4  # images 8..11 only
    np.testing.assert_array_equal(read_bin(out, n=12), read_bin(tmp_path / "fresh.bin", n=12))
    assert not list(tmp_path.glob("s.bin.*"))
    err = capfd.readouterr().err
    assert "reused 1 finished shard(s) of an earlier multi-process run (shard0of2: images 0-8), computed the " \
           "other 4 images" in err and "s.bin.shard1of2.partial" in err
    # a shard of another network: removed, not reused
    other = tiny_net(seed=9)
    serialAllFeats(other, folder, fns[:8], shard0, useGPU=False, batchSize=2)
    mark_complete(tmp_path / "s.bin.shard0of2.json", fingerprint(other, folder, fns[:8]), [0, 8])
    counter.seen = 0
    serialAllFeats(net, folder, fns, out, useGPU=False, batchSize=2)
    assert counter.seen == 12 and not list(tmp_path.glob("s.bin.*"))
    assert "removed shard files" in capfd.readouterr().err
    np.testing.assert_array_equal(read_bin(out, n=12), read_bin(tmp_path / "fresh.bin", n=12))
