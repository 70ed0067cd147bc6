"""relja_PCA and addPCA: (whitened) PCA appended to a network as a 1x1 conv + L2."""
from __future__ import annotations

import numpy as np


def relja_PCA(x, nPCs: int | None = None, subtractMean: bool = True):
    """relja_PCA.m on ``x`` (nDims x nVectors, MATLAB's column vectors).

    Returns (U nDims x nPCs, lams nPCs eigenvalues in decreasing order, mu nDims x 1,
    Utmu = U' mu).  The covariance is X X'/(n-1) (primal) when nDims <= nVectors,
    otherwise the Gram matrix X'X/(n-1) is decomposed (dual) and
    U = X V diag(1/sqrt(max(lams, 1e-9))) / sqrt(n-1).  Computed in float64; the
    eigenvector signs are whatever LAPACK returns (MATLAB's eigs may differ by sign).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"relja_PCA: x must be nDims x nVectors, got shape {x.shape}")
    nDims, nPoints = x.shape
    if nPoints < 2:
        raise ValueError(f"relja_PCA: need at least 2 vectors, got {nPoints}")
    nPCs = nDims if nPCs is None else int(nPCs)
    mu = x.mean(axis=1, keepdims=True) if subtractMean else np.zeros((nDims, 1))
    x = x - mu
    dual = nDims > nPoints
    X2 = (x.T @ x if dual else x @ x.T) / (nPoints - 1)
    lams, V = np.linalg.eigh(X2)
    order = np.argsort(-lams, kind="stable")[:nPCs]
    lams, U = lams[order], V[:, order]
    if dual:
        U = x @ (U / np.sqrt(np.maximum(lams, 1e-9))) / np.sqrt(nPoints - 1)
    return U, lams, mu, U.T @ mu
