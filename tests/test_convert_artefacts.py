"""converters.artefacts: clsts, trainDescs and PCA files with MATLAB names and shapes."""
import numpy as np
import pytest
import scipy.io

from converters.artefacts import (read_clusters, read_pca, read_train_descs, write_clusters, write_pca,
                                  write_train_descs)
from converters.matfile import MatFileError, savemat


@pytest.mark.parametrize("fmt", ["5", "7.3"])
def test_round_trips(tmp_path, fmt):
    rng = np.random.default_rng(0)
    clsts = rng.standard_normal((8, 4)).astype(np.float32)
    descs = rng.standard_normal((8, 50)).astype(np.float32)
    assert np.array_equal(read_clusters(write_clusters(tmp_path / "c.mat", clsts, format=fmt)), clsts)
    got = read_train_descs(write_train_descs(tmp_path / "t.mat", descs, format=fmt))
    assert got.dtype == np.float32 and np.array_equal(got, descs)
    # PCA of the descriptors the relja_PCA way, computed here with plain numpy
    mu = descs.mean(1, keepdims=True).astype(np.float64)
    x = descs - mu
    lams, U = np.linalg.eigh(x @ x.T / (x.shape[1] - 1))
    order = np.argsort(-lams)[:3]
    U, lams = U[:, order], lams[order]
    Utmu = U.T @ mu
    p = read_pca(write_pca(tmp_path / "p.mat", U, lams, mu[:, 0], Utmu, format=fmt))
    assert p["lams"].shape == (3, 1) and p["mu"].shape == (8, 1) and p["Utmu"].shape == (3, 1)
    for k, v in {"U": U, "lams": lams.reshape(-1, 1), "mu": mu, "Utmu": Utmu}.items():
        assert np.array_equal(p[k], v), k


def test_matlab_default_format_readable_by_scipy(tmp_path):
    clsts = np.arange(6, dtype=np.float32).reshape(3, 2)
    s = scipy.io.loadmat(write_clusters(tmp_path / "c.mat", clsts))
    assert np.array_equal(s["clsts"], clsts) and s["clsts"].dtype == np.float32


def test_errors(tmp_path):
    f = savemat(tmp_path / "other.mat", {"centres": np.ones((2, 2))}, format="5")
    with pytest.raises(MatFileError, match=r"other\.mat.*clsts not in file.*centres"):
        read_clusters(f)
    f = savemat(tmp_path / "vec.mat", {"trainDescs": np.ones((2, 2, 2))}, format="5")
    with pytest.raises(MatFileError, match=r"vec\.mat.*'trainDescs' must be a numeric D x N matrix"):
        read_train_descs(f)
    f = savemat(tmp_path / "pca.mat", {"U": np.ones((5, 2)), "lams": np.ones((2, 1)), "mu": np.ones((4, 1)),
                                      "Utmu": np.ones((2, 1))}, format="5")
    with pytest.raises(MatFileError, match=r"pca\.mat.*'mu' has shape 4x1, expected 5x1 \(U is 5x2\)"):
        read_pca(f)
    with pytest.raises(MatFileError, match=r"bad\.mat.*'clsts' must be a numeric"):
        write_clusters(tmp_path / "bad.mat", np.ones(3))
    assert not (tmp_path / "bad.mat").exists()
