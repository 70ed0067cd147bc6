"""relja_PCA and addPCA: (whitened) PCA appended to a network as a 1x1 conv + L2."""
from __future__ import annotations

import copy
import os

import numpy as np

from converters.artefacts import read_pca, write_pca
from converters.bin_features import read_bin

from .datasets.local_paths import localPaths
from .extract import serialAllFeats
from .images import imread_uint8
from .layers.conv import Conv
from .layers.heads import layerWholeL2Normalize
from .nettools import netOutputDim
from .simplenn import SimpleNN


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


def addPCA(net, dbTrain, pcaDim: int = 4096, doWhite: bool = True, nTrainCap: int = 10000,
           useGPU: bool = True, numThreads: int = 12, batchSize: int = 10, outPrefix=None):
    """addPCA.m: append PCA (whitened with ``doWhite``) of the outputs on the training
    database images, as a 1x1 conv layer named 'WPCA' (or 'PCA') with filters
    reshape(U, [1 1 D pcaDim]) and biases -U'mu, then layerWholeL2Normalize('finalL2').

    U (columns scaled by 1/sqrt(lams + 1e-9) when whitening) comes from
    :func:`relja_PCA` on at most ``nTrainCap`` images (sampled with numpy seeded 43,
    not MATLAB's randsample).  Descriptors and PCA are cached as
    ``<outPrefix><sessionID>_ep%06d_traindescs_for_pca.bin`` / ``_pca.mat`` (outPrefix
    from localPaths by default).  ``net.meta`` needs ``sessionID`` and ``epoch``; the
    returned net's sessionID gets '_WPCA' / '_PCA' appended.
    """
    if "sessionID" not in net.meta or "epoch" not in net.meta:
        raise ValueError("addPCA: net.meta needs 'sessionID' and 'epoch' (networks from loadNet, addLayers, "
                         "pickBestNet have them)")
    if outPrefix is None:
        outPrefix = localPaths()["outPrefix"]
    stem = f"{outPrefix}{net.meta['sessionID']}_ep{int(net.meta['epoch']):06d}"
    featFn, pcaFn = f"{stem}_traindescs_for_pca.bin", f"{stem}_pca.mat"
    first = imread_uint8(dbTrain.dbPath + dbTrain.dbImageFns[0])
    D = netOutputDim(net, first.shape)[0]
    if not os.path.isfile(pcaFn):
        imageFns = list(dbTrain.dbImageFns)
        if len(imageFns) > nTrainCap:
            keep = np.random.default_rng(43).choice(len(imageFns), nTrainCap, replace=False)
            imageFns = [imageFns[i] for i in keep]
        if not os.path.isfile(featFn):
            print(f"{net.meta['sessionID']} Computing training vectors for PCA")
            os.makedirs(os.path.dirname(featFn) or ".", exist_ok=True)
            serialAllFeats(net, dbTrain.dbPath, imageFns, featFn, useGPU=useGPU, numThreads=numThreads,
                           batchSize=batchSize)
        feats = read_bin(featFn, D=D)
        if pcaDim >= D:
            raise ValueError(f"addPCA: pcaDim ({pcaDim}) must be smaller than the dimensionality ({D})")
        if feats.shape[0] > nTrainCap:
            feats = feats[np.random.default_rng(43).choice(feats.shape[0], nTrainCap, replace=False)]
        print(f"{net.meta['sessionID']} Computing PCA")
        U, lams, mu, Utmu = relja_PCA(feats.T, pcaDim)
        write_pca(pcaFn, U, lams, mu, Utmu)
    p = read_pca(pcaFn)
    if pcaDim > p["U"].shape[1]:
        raise ValueError(f"{pcaFn}: holds {p['U'].shape[1]} components, pcaDim is {pcaDim}")
    U = np.asarray(p["U"], np.float64)[:, :pcaDim]
    lams = np.asarray(p["lams"], np.float64).reshape(-1)[:pcaDim]
    if doWhite:
        U = U / np.sqrt(lams + 1e-9)
    name = "WPCA" if doWhite else "PCA"
    Utmu = U.T @ np.asarray(p["mu"], np.float64).reshape(-1, 1)
    layers = [copy.deepcopy(l) for l in net.layers]
    layers.append(Conv(name, [U.reshape(1, 1, D, pcaDim).astype(np.float32), (-Utmu).astype(np.float32)]))
    layers.append(layerWholeL2Normalize("finalL2"))
    out = SimpleNN(layers, net.meta)
    out.meta["sessionID"] = f"{net.meta['sessionID']}_{name}"
    return out
