import numpy as np
import pytest

from matnet.pca import relja_PCA


def _reference_pca(x, k):
    """Independent PCA via the SVD of the centred data (rows = dims)."""
    mu = x.mean(1, keepdims=True)
    u, s, _ = np.linalg.svd(x - mu, full_matrices=False)
    return u[:, :k], (s[:k] ** 2) / (x.shape[1] - 1), mu


def _same_up_to_sign(a, b, tol=1e-6):
    signs = np.sign((a * b).sum(0))
    np.testing.assert_allclose(a * signs, b, atol=tol)


@pytest.mark.parametrize("dims,n", [(6, 40), (30, 8)])  # primal, dual
def test_relja_PCA_matches_svd(dims, n):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((dims, n)) * np.linspace(3, 0.5, dims)[:, None] + 2.0
    k = 4
    U, lams, mu, Utmu = relja_PCA(x.astype(np.float32), k)
    Ur, lr, mur = _reference_pca(x.astype(np.float32).astype(np.float64), k)
    np.testing.assert_allclose(lams, lr, rtol=1e-6)
    np.testing.assert_allclose(mu, mur, rtol=1e-6)
    _same_up_to_sign(U, Ur)
    np.testing.assert_allclose(Utmu, U.T @ mu, rtol=1e-10)
    assert np.all(np.diff(lams) <= 0)
    np.testing.assert_allclose(U.T @ U, np.eye(k), atol=1e-6)  # unit eigenvectors, also in the dual


def test_no_mean_subtraction_and_all_components():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 50)) + 3
    U, lams, mu, _ = relja_PCA(x, subtractMean=False)
    assert U.shape == (5, 5) and np.all(mu == 0)
    ev = np.linalg.eigvalsh(x @ x.T / 49)[::-1]
    np.testing.assert_allclose(lams, ev, rtol=1e-8)


# ---- addPCA on a real (tiny) network and dataset

from converters.bin_features import read_bin  # noqa: E402
from matnet.extract import serialAllFeats  # noqa: E402
from matnet.layers.heads import layerTotalMaxPool, layerWholeL2Normalize  # noqa: E402
from matnet.pretrained import loadNet  # noqa: E402
from matnet.pca import addPCA  # noqa: E402
from matnet.simplenn import SimpleNN  # noqa: E402
from matnet.synthetic import dbSynthetic, make_places, save_tiny_net  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("pca")
    make_places(root / "data", numImages=24, numQueries=4, imSize=(32, 40), splits=("train",))
    save_tiny_net(root / "pre", [120, 120, 120], imSize=(32, 40))
    base = loadNet("tiny", "conv1", pretrainedDir=root / "pre")  # 16 channels -> D = 16
    net = SimpleNN(list(base.layers) + [layerTotalMaxPool("max:core"), layerWholeL2Normalize("postL2")], base.meta)
    return root, net, dbSynthetic("train", root / "data")


@pytest.mark.parametrize("cap,doWhite", [(1000, True), (10, True), (1000, False)])  # primal (24 >= 16), dual (10 < 16)
def test_addPCA_against_independent_pca(tiny, tmp_path, cap, doWhite):
    root, net, db = tiny
    k = 6
    out = addPCA(net, db, pcaDim=k, doWhite=doWhite, nTrainCap=cap, useGPU=False, outPrefix=str(tmp_path) + "/")
    name = "WPCA" if doWhite else "PCA"
    assert [l.name for l in out.layers[-2:]] == [name, "finalL2"]
    assert out.meta["sessionID"] == "tiny_offtheshelf_conv1_" + name
    assert (tmp_path / "tiny_offtheshelf_conv1_ep000000_pca.mat").is_file()
    # independent reference: features of the same images, PCA by SVD
    fn = tmp_path / "ref.bin"
    serialAllFeats(net, db.dbPath, db.dbImageFns, fn, useGPU=False)
    X = read_bin(fn, n=db.numImages).astype(np.float64)  # N x D
    train = X if cap >= len(X) else X[np.random.default_rng(43).choice(len(X), cap, replace=False)]
    mu = train.mean(0)
    _, s, vt = np.linalg.svd(train - mu, full_matrices=False)
    U, lams = vt[:k].T, s[:k] ** 2 / (len(train) - 1)
    proj = (X - mu) @ U
    if doWhite:
        proj = proj / np.sqrt(lams + 1e-9)
    ref = proj / (np.linalg.norm(proj, axis=1, keepdims=True) + 1e-12)
    fn2 = tmp_path / "pca.bin"
    serialAllFeats(out, db.dbPath, db.dbImageFns, fn2, useGPU=False)
    got = read_bin(fn2, n=db.numImages).astype(np.float64)
    signs = np.sign((got * ref).sum(0))  # eigenvector signs are arbitrary
    np.testing.assert_allclose(got * signs, ref, atol=2e-4)


def test_addPCA_needs_session_and_dim(tiny, tmp_path):
    root, net, db = tiny
    with pytest.raises(ValueError, match="pcaDim"):
        addPCA(net, db, pcaDim=16, useGPU=False, outPrefix=str(tmp_path) + "/")
    bare = SimpleNN(list(net.layers), {"normalization": net.meta["normalization"]})
    with pytest.raises(ValueError, match="sessionID"):
        addPCA(bare, db, pcaDim=4, useGPU=False, outPrefix=str(tmp_path) + "/")
