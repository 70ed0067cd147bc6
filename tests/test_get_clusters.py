"""getClusters: descriptor sampling from database images, k-means, the .mat caches."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from converters.artefacts import write_clusters, write_train_descs
from converters.matfile import loadmat
from matnet.add_layers import addLayers, cluster_file_names
from matnet.get_clusters import SEED, getClusters, kmeans, sample_train_descs
from helpers.add_layers_net import OPTS, tiny_net


def make_db(tmp_path, n, size=(6, 5)):
    """n PNG images; image i has every pixel = (i, 2i, 3i) so its features identify it."""
    folder = tmp_path / "images"
    folder.mkdir()
    fns = []
    for i in range(n):
        fn = f"sub/im{i:03d}.png"
        (folder / "sub").mkdir(exist_ok=True)
        Image.fromarray(np.full(size + (3,), (i, 2 * i, 3 * i), np.uint8)).save(folder / fn)
        fns.append(fn)
    return SimpleNamespace(name="fakedb", dbPath=str(folder) + "/", dbImageFns=fns, numImages=n)


def id_net():
    """1x1 conv copying the (mean-subtracted) RGB plus a constant row -> D=4."""
    from matnet.layers.conv import Conv
    from matnet.simplenn import SimpleNN
    w = np.zeros((1, 1, 3, 4), np.float32)
    w[0, 0, [0, 1, 2], [0, 1, 2]] = 1
    b = np.array([0, 0, 0, 7], np.float32)
    meta = {"normalization": {"averageImage": np.array([1, 2, 3], np.float32).reshape(1, 1, 3)},
            "sessionID": "id"}
    return SimpleNN([Conv("c", [w, b])], meta)


def test_samples_the_drawn_images_not_the_first(tmp_path):
    db = make_db(tmp_path, 40)
    descs = sample_train_descs(id_net(), db, nTrain=50, nPerImage=10)
    assert descs.shape == (4, 50) and descs.dtype == np.float32
    # each column is a pixel of one image: (i-1, 2i-2, 3i-3, 7)
    ids = descs[0] + 1
    np.testing.assert_allclose(descs[1], 2 * ids - 2)
    np.testing.assert_allclose(descs[2], 3 * ids - 3)
    np.testing.assert_allclose(descs[3], 7)
    used = sorted(set(ids.astype(int).tolist()))
    expect = sorted(np.random.default_rng(SEED).choice(40, 5, replace=False).tolist())
    assert used == expect and used != [0, 1, 2, 3, 4]
    assert all((ids == i).sum() == 10 for i in used)


def test_descriptor_columns_are_the_nets_output_pixels(tmp_path):
    """With nPerImage = H*W every pixel of every image is taken once."""
    db = make_db(tmp_path, 3, size=(4, 3))
    net = tiny_net(d=5)
    descs = sample_train_descs(net, db, nTrain=36, nPerImage=12)
    assert descs.shape == (5, 36)
    from matnet.images import subtract_average, vl_imreadjpeg
    want = []
    for fn in db.dbImageFns:
        im = subtract_average(vl_imreadjpeg(db.dbPath + fn), net.meta["normalization"]["averageImage"])
        with torch.no_grad():
            y = net(torch.from_numpy(im).permute(2, 0, 1)[None])[0].numpy()
        want.append(y.reshape(5, -1))
    want = np.concatenate(want, 1)
    got = sorted(map(tuple, np.round(descs.T, 4)))
    assert got == sorted(map(tuple, np.round(want.T, 4)))


def test_caps_total_and_small_database(tmp_path):
    db = make_db(tmp_path, 3)  # 3 images x 30 pixels, fewer than ceil(nTrain/nPerImage)
    descs = sample_train_descs(id_net(), db, nTrain=1000, nPerImage=100)
    assert descs.shape == (4, 90)


def test_kmeans_finds_blobs_and_is_seeded():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 4)).astype(np.float32) * 20
    x = np.concatenate([centres[:, [j]] + 0.01 * rng.standard_normal((3, 50)) for j in range(4)], 1)
    c1, c2 = kmeans(x.astype(np.float32), 4), kmeans(x.astype(np.float32), 4)
    np.testing.assert_array_equal(c1, c2)
    assert c1.shape == (3, 4) and c1.dtype == np.float32
    for j in range(4):
        assert np.min(np.linalg.norm(c1 - centres[:, [j]], axis=0)) < 0.05
    with pytest.raises(ValueError, match="3 training descriptors for k=4"):
        kmeans(x[:, :3].astype(np.float32), 4)


def test_existing_cluster_file_is_used_as_is(tmp_path):
    clsts = np.arange(12, dtype=np.float32).reshape(3, 4)
    cfn = tmp_path / "c.mat"
    write_clusters(cfn, clsts)
    out = getClusters(None, OPTS, str(cfn), 4, None, str(tmp_path / "absent.mat"))
    np.testing.assert_array_equal(out, clsts)
    with pytest.raises(ValueError, match=r"c\.mat: the file has 4 cluster centres, expected k=8"):
        getClusters(None, OPTS, str(cfn), 8, None, str(tmp_path / "absent.mat"))


def test_clusters_from_existing_train_descs(tmp_path):
    rng = np.random.default_rng(1)
    descs = rng.standard_normal((5, 300)).astype(np.float32)
    tfn, cfn = tmp_path / "t.mat", tmp_path / "sub" / "c.mat"
    write_train_descs(tfn, descs)
    clsts = getClusters(None, OPTS, str(cfn), 8, None, str(tfn))
    assert clsts.shape == (5, 8)
    saved = loadmat(cfn)
    assert list(saved) == ["clsts"]
    np.testing.assert_array_equal(saved["clsts"], clsts)


def test_end_to_end_addLayers_computes_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("MATNET_INIT_DATA", str(tmp_path / "init") + "/")
    db = make_db(tmp_path, 12, size=(9, 8))  # 12 x 72 pixels = 864 descriptors >= K=64
    net = addLayers(tiny_net(d=5), dict(OPTS, method="vlad_preL2_intra"), db)
    tfn, cfn = cluster_file_names(OPTS, db, True)
    descs, clsts = loadmat(tfn)["trainDescs"], loadmat(cfn)["clsts"]
    assert descs.shape == (5, 864) and clsts.shape == (5, 64)
    # descriptors were taken after preL2: unit norm (or zero)
    norms = np.linalg.norm(descs, axis=0)
    assert np.all((np.abs(norms - 1) < 1e-4) | (norms < 1e-5))
    np.testing.assert_allclose(-net.layers[3].weights[1].detach().numpy()[0, 0], clsts)
    # second call reuses the files (no images needed any more)
    for fn in db.dbImageFns:
        (tmp_path / "images" / fn).unlink()
    net2 = addLayers(tiny_net(d=5), dict(OPTS, method="vlad_preL2_intra"), db)
    torch.testing.assert_close(net2.layers[3].weights[0], net.layers[3].weights[0])


def test_missing_image_is_a_clear_error(tmp_path):
    db = make_db(tmp_path, 3)
    (tmp_path / "images" / db.dbImageFns[1]).unlink()
    with pytest.raises(FileNotFoundError, match="im001"):
        sample_train_descs(id_net(), db, nTrain=100, nPerImage=10)


def test_extraction_resumes_from_checkpoint(tmp_path, monkeypatch):
    import matnet.get_clusters as gc
    monkeypatch.setattr(gc, "CHECKPOINT_EVERY", 2)
    db = make_db(tmp_path, 10)
    full = sample_train_descs(id_net(), db, nTrain=100, nPerImage=10)
    order = np.random.default_rng(SEED).choice(10, 10, replace=False)
    img = lambda i: tmp_path / "images" / db.dbImageFns[order[i]]
    saved = img(5).read_bytes()
    img(5).unlink()
    ck = tmp_path / "part.npz"
    with pytest.raises(FileNotFoundError):
        sample_train_descs(id_net(), db, nTrain=100, nPerImage=10, checkpoint=ck)
    assert ck.is_file()
    img(5).write_bytes(saved)
    for i in range(4):  # done before the interruption: must not be read again
        img(i).unlink()
    resumed = sample_train_descs(id_net(), db, nTrain=100, nPerImage=10, checkpoint=ck)
    np.testing.assert_array_equal(resumed, full)


def test_descriptors_computed_with_tf32_off(tmp_path):
    """getClusters' descriptors are exact float32 on a GPU too: TF32 (allowed by default
    for cuDNN convolutions) is off while the network runs, and restored after."""
    from matnet.precision import tf32, tf32_state
    db = make_db(tmp_path, 3)
    net = id_net()
    seen = []
    net.layers[0].register_forward_pre_hook(lambda m, a: seen.append(tf32_state()))
    with tf32(True):
        sample_train_descs(net, db, nTrain=20, nPerImage=10)
        assert tf32_state() == {"matmul": True, "conv": True}
    assert seen and all(s == {"matmul": False, "conv": False} for s in seen)
