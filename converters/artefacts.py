"""NetVLAD's intermediate MAT files, with MATLAB's variable names and shapes.

* cluster centres (getClusters' ``clstFn``): ``clsts``, D x K;
* training descriptors (``trainDescFn``): ``trainDescs``, D x N;
* PCA (addPCA's ``pcaFn``, relja_PCA's outputs): ``U`` D x p, ``lams`` p x 1
  (eigenvalues, descending), ``mu`` D x 1, ``Utmu`` = U' * mu, p x 1.

Readers check the variable is there and has the expected shape and raise
:class:`~converters.matfile.MatFileError` naming the file otherwise.  Writers use
MATLAB's default ``save`` format (v7, i.e. MAT v5) unless ``format='7.3'``, and write
atomically.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .matfile import MatFileError, loadmat, savemat

__all__ = ["read_clusters", "write_clusters", "read_train_descs", "write_train_descs",
           "read_pca", "write_pca"]


def _matrix(path, var, value, what: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf" or value.ndim != 2:
        desc = f"{value.dtype} array of shape {value.shape}" if isinstance(value, np.ndarray) \
            else type(value).__name__
        raise MatFileError(f"{path}: '{var}' must be a numeric {what} matrix, got {desc}")
    return value


def _read(path, names) -> dict:
    return loadmat(Path(path), list(names))


def read_clusters(path) -> np.ndarray:
    """``clsts`` (D x K cluster centres) from a getClusters file."""
    return _matrix(path, "clsts", _read(path, ["clsts"])["clsts"], "D x K")


def write_clusters(path, clsts, format: str = "5") -> Path:
    """Save ``clsts`` (D x K) as getClusters does."""
    return savemat(path, {"clsts": _matrix(path, "clsts", np.asarray(clsts), "D x K")}, format=format)


def read_train_descs(path) -> np.ndarray:
    """``trainDescs`` (D x N local descriptors sampled for clustering)."""
    return _matrix(path, "trainDescs", _read(path, ["trainDescs"])["trainDescs"], "D x N")


def write_train_descs(path, trainDescs, format: str = "5") -> Path:
    """Save ``trainDescs`` (D x N) as getClusters does."""
    return savemat(path, {"trainDescs": _matrix(path, "trainDescs", np.asarray(trainDescs), "D x N")},
                   format=format)


def _check_pca(path, U, lams, mu, Utmu) -> dict:
    U = _matrix(path, "U", U, "D x p")
    d, p = U.shape
    for var, v, n in (("lams", lams, p), ("mu", mu, d), ("Utmu", Utmu, p)):
        v = _matrix(path, var, v, f"{n} x 1")
        if v.size != n or min(v.shape) != 1:
            raise MatFileError(f"{path}: '{var}' has shape {v.shape[0]}x{v.shape[1]}, expected "
                               f"{n}x1 (U is {d}x{p})")
    return {"U": U, "lams": lams, "mu": mu, "Utmu": Utmu}


def read_pca(path) -> dict[str, np.ndarray]:
    """``{'U', 'lams', 'mu', 'Utmu'}`` from an addPCA file, shapes checked against U (D x p)."""
    v = _read(path, ["U", "lams", "mu", "Utmu"])
    return _check_pca(path, v["U"], v["lams"], v["mu"], v["Utmu"])


def write_pca(path, U, lams, mu, Utmu, format: str = "5") -> Path:
    """Save relja_PCA's outputs as addPCA does; 1-d vectors are stored as columns."""
    col = [np.asarray(x).reshape(-1, 1) if np.asarray(x).ndim == 1 else np.asarray(x) for x in (lams, mu, Utmu)]
    return savemat(path, _check_pca(path, np.asarray(U), *col), format=format)
