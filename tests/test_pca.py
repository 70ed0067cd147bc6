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
