"""precision='fast' (bf16 trunk, float32 head) against 'exact' on the CPU: descriptor
cosine on random and synthetic images, recall on a synthetic test street, where the
bf16 stops, the option's checks, and the GPU flags it sets and restores."""

import numpy as np
import pytest
import torch
from PIL import Image

from matnet.recall_at_n import testFromFn
from matnet.extract import computeRepresentation, serialAllFeats
from matnet.layers import Conv, Normalize, layerVLAD
from matnet.precision import forward, head_start, tf32, tf32_state
from matnet.synthetic.db import dbSynthetic
from matnet.synthetic.places import make_places
from matnet.synthetic.vgg16_netvlad import vgg16_netvlad
from matnet.train.opts import TrainWeaklyOpts

MEAN = torch.tensor([122.74, 116.78, 103.94]).view(1, 3, 1, 1)


def read_images(root, fns):
    return torch.from_numpy(np.stack([np.asarray(Image.open(root + f).convert("RGB"), np.float32)
                                      for f in fns])).permute(0, 3, 1, 2)


def miniature(**kw):
    """A VGG16-NetVLAD-WPCA miniature in the released layer order (random weights)."""
    return vgg16_netvlad(widths=(16, 32, 64, 64, 64), num_clusters=16, pca_dim=128, image_size=(64, 80),
                         **kw).eval()


@pytest.fixture(scope="module")
def street(tmp_path_factory):
    root = tmp_path_factory.mktemp("places")
    make_places(root, numImages=60, numQueries=30, imSize=(64, 80), splits=("test",))
    return dbSynthetic("test", root)


@pytest.fixture(scope="module")
def net(street):
    """Centres from the street's query images, as getClusters takes them from training
    images; the cosines below are measured on database images and noise."""
    return miniature(centre_images=read_images(street.qPath, street.qImageFns[:20]))


def cosines(net, x):
    x = (x - MEAN).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        e, f = (forward(net, x, p).reshape(len(x), -1) for p in ("exact", "fast"))
    assert e.dtype == f.dtype == torch.float32
    return ((e * f).sum(1) / (e.norm(dim=1) * f.norm(dim=1))).numpy()


def test_fast_descriptors_close_to_exact(net, street):
    rnd = torch.rand(12, 3, 64, 80, generator=torch.Generator().manual_seed(0)) * 255
    syn = read_images(street.dbPath, street.dbImageFns[:12])
    c_rnd, c_syn = cosines(net, rnd), cosines(net, syn)
    print(f"cosine fast/exact: random min {c_rnd.min():.5f} mean {c_rnd.mean():.5f}, "
          f"synthetic min {c_syn.min():.5f} mean {c_syn.mean():.5f}")
    # measured here: random min 0.99982, synthetic min 0.99974 (the same to 2e-5 on the four ISAs)
    assert c_syn.min() >= 0.999 and c_rnd.min() >= 0.999
    assert c_rnd.min() < 1 - 1e-6  # bf16 really ran: fast is not exact


def test_fast_worst_case_centres_on_the_images():
    """Noise images through a network whose centres are conv5 features of noise: every
    descriptor sits on the centres, the residuals x - c cancel, and the trunk's bf16
    error (cosine 0.99997 at conv5_3) grows to about 1e-3 in the descriptor."""
    noise_net = miniature()
    rnd = torch.rand(12, 3, 64, 80, generator=torch.Generator().manual_seed(0)) * 255
    c = cosines(noise_net, rnd)
    trunk = head_start(noise_net)
    x = (rnd - MEAN).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        e = noise_net(x, stop=trunk).reshape(len(x), -1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            f = noise_net(x, stop=trunk).float().reshape(len(x), -1)
    c_trunk = ((e * f).sum(1) / (e.norm(dim=1) * f.norm(dim=1))).numpy()
    print(f"worst case: trunk cosine min {c_trunk.min():.6f}, descriptor min {c.min():.5f} mean {c.mean():.5f}")
    # measured here: trunk 0.99997, descriptor min 0.9984 / mean 0.9990
    assert c_trunk.min() >= 0.9999 and c.min() >= 0.997
    assert 1 - c.min() > 5 * (1 - c_trunk.min())  # the head amplifies, the trunk is not the cause


def test_fast_recall_within_one_query(net, street, tmp_path):
    recalls = {}
    for p in ("exact", "fast"):
        serialAllFeats(net, street.dbPath, street.dbImageFns, tmp_path / f"db_{p}.bin", useGPU=False, precision=p)
        serialAllFeats(net, street.qPath, street.qImageFns, tmp_path / f"q_{p}.bin", useGPU=False, precision=p)
        recalls[p], _, _, _ = testFromFn(street, tmp_path / f"db_{p}.bin", tmp_path / f"q_{p}.bin",
                                         recallNs=[1, 2, 5, 10])
    # measured here: one query moves at N = 2 and/or 5 (oneDNN's AMX, AVX-512-BF16,
    # AVX-512 and AVX2 bf16 kernels, through ONEDNN_MAX_CPU_ISA), never more at any N
    changed = np.abs(recalls["fast"] - recalls["exact"]) * street.numQueries
    print(f"recall exact {recalls['exact']}, fast {recalls['fast']}")
    assert changed.max() <= 1 + 1e-9
    assert 0 < recalls["exact"][-1]
    im = np.asarray(Image.open(street.dbPath + street.dbImageFns[0]).convert("RGB"), np.float32)
    one = computeRepresentation(net, im, useGPU=False, precision="fast")
    first = np.fromfile(tmp_path / "db_fast.bin", np.float32)[:one.size]
    np.testing.assert_allclose(one, first, rtol=1e-5, atol=1e-6)  # one image = the batch's first row


def test_fast_runs_the_head_in_float32(net):
    h = head_start(net)
    assert isinstance(net.layers[h], Normalize) and isinstance(net.layers[h + 1], layerVLAD)
    seen, convs = {}, [i for i, layer in enumerate(net.layers) if isinstance(layer, Conv)]
    def record(i):
        def hook(module, inp, out):
            seen[i] = (inp[0].dtype, out.dtype)
        return hook
    hooks = [net.layers[i].register_forward_hook(record(i)) for i in convs]
    wpca = convs[-1]
    assert wpca > h
    with torch.no_grad():
        forward(net, torch.rand(2, 3, 64, 80) * 255, "fast")
    assert sorted(seen) == convs and all(seen[i][1] == torch.bfloat16 for i in convs if i < h)  # trunk in bf16
    assert seen[wpca] == (torch.float32, torch.float32)               # the whitening PCA in float32
    seen.clear()
    with torch.no_grad():
        forward(net, torch.rand(2, 3, 64, 80) * 255, "exact")
    assert sorted(seen) == convs and all(v == (torch.float32, torch.float32) for v in seen.values())
    for hook in hooks:
        hook.remove()


def test_precision_checked_and_tf32_restored(net, tmp_path):
    with pytest.raises(ValueError, match="precision must be 'exact' or 'fast'"):
        serialAllFeats(net, str(tmp_path) + "/", ["a.jpg"], tmp_path / "x.bin", precision="half")
    with pytest.raises(ValueError, match=r"precision='half'.*one of 'exact', 'fast'"):
        TrainWeaklyOpts(precision="half")
    assert TrainWeaklyOpts(precision="fast").precision == "fast"
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with tf32(True):
        assert tf32_state() == {"matmul": True, "conv": True}
        with tf32(False):
            assert tf32_state() == {"matmul": False, "conv": False}
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == old  # readable again
    assert tf32_state() == {"matmul": old[0], "conv": old[1]}


def test_tf32_with_the_newer_torch_settings():
    """A program that set TF32 through torch's fp32_precision settings (torch >= 2.9):
    reading the older allow_tf32 flags would raise there; tf32() and tf32_state() use
    the newer ones and put the program's values back."""
    mm = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
    if mm is None:
        pytest.skip(reason="fp32_precision settings missing in this torch (older than 2.9)")
    conv = torch.backends.cudnn.conv.fp32_precision
    try:
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "ieee"
        with tf32(False):
            assert tf32_state() == {"matmul": False, "conv": False}
            assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        assert tf32_state() == {"matmul": True, "conv": False}
        assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == ("tf32", "ieee")
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = mm, conv
    assert torch.backends.cuda.matmul.allow_tf32 in (True, False)  # consistent again
