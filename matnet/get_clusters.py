"""getClusters: K-means centres of conv descriptors sampled from a database, cached in
``.mat`` files with MATLAB's variable names (``trainDescs`` D x N, ``clsts`` D x K)."""
from __future__ import annotations

import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm import tqdm

from converters.atomic_file import atomic_write
from converters.artefacts import read_clusters, read_train_descs, write_clusters, write_train_descs

from .device import compute_device
from .images import subtract_average, vl_imreadjpeg
from .option import opt
from .precision import forward
from .simplenn import SimpleNN

N_TRAIN = 50000     # descriptors in total
N_PER_IMAGE = 100   # descriptors per image
SEED = 43           # rng(43) for the image/descriptor sample, kmeans 'seed' 43
N_ITER = 100        # kmeans 'niter'
CHECKPOINT_EVERY = 50  # images between checkpoints of the descriptor extraction


def check_centres(clstFn, k: int, d: int | None = None) -> np.ndarray:
    """``clsts`` from ``clstFn`` (D x k float32), or a ValueError naming the file when it has
    another number of centres (MATLAB's assert), another D, or non-finite values."""
    clsts = np.asarray(read_clusters(clstFn), dtype=np.float32)
    if clsts.shape[1] != k:
        raise ValueError(f"{clstFn}: the file has {clsts.shape[1]} cluster centres, expected k={k}")
    if d is not None and clsts.shape[0] != d:
        raise ValueError(f"{clstFn}: cluster centres have D={clsts.shape[0]}, the network's "
                         f"output has D={d}")
    if not np.isfinite(clsts).all():
        raise ValueError(f"{clstFn}: cluster centres contain NaN or Inf")
    return clsts


def _prefetched(paths, workers: int = 4):
    """Images of ``paths`` in order, decoded a few ahead in threads."""
    with ThreadPoolExecutor(workers) as ex:
        queue = deque()
        it = iter(paths)
        for p in it:
            queue.append(ex.submit(vl_imreadjpeg, p))
            if len(queue) > workers:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()


def _save_partial(path, descs: np.ndarray, done: int, trainIDs: np.ndarray):
    with atomic_write(path) as f:
        np.savez(f, descs=descs, done=np.int64(done), trainIDs=trainIDs)


def _load_partial(path, trainIDs: np.ndarray):
    """(descs, done) from a checkpoint of the same image sample, else (None, 0)."""
    if path is None or not os.path.isfile(path):
        return None, 0
    with np.load(path, allow_pickle=False) as z:
        if not np.array_equal(z["trainIDs"], trainIDs):
            return None, 0
        return z["descs"], int(z["done"])


def sample_train_descs(net: SimpleNN, dbTrain, useGPU: bool = False, nTrain: int = N_TRAIN,
                       nPerImage: int = N_PER_IMAGE, checkpoint=None) -> np.ndarray:
    """getClusters' training descriptors: D x N float32, up to ``nPerImage`` random columns of
    the last layer's H*W x D output (MATLAB's column-major pixel order) of ceil(nTrain /
    nPerImage) random database images, mean-subtracted as serialAllFeats does.
    ``checkpoint`` (a .npz path) is written every CHECKPOINT_EVERY images and resumed from;
    the result does not depend on interruptions (each image has its own seeded sample).

    Differences from MATLAB, documented: (1) the original draws ``trainIDs`` with
    randsample but then reads ``dbImageFns{iIm}``, i.e. the *first* images; here the drawn
    images are read, as intended.  (2) numpy generators seeded with 43 replace MATLAB's
    rng(43)/randsample, so the sample differs.  (3) a database with fewer images than
    needed uses all of them (randsample would fail).
    """
    numImages = int(dbTrain.numImages)
    nIm = min(math.ceil(nTrain / nPerImage), numImages)
    trainIDs = np.random.default_rng(SEED).choice(numImages, nIm, replace=False)
    descs_done, done = _load_partial(checkpoint, trainIDs)
    chunks = [] if descs_done is None else [descs_done]
    nTotal = sum(c.shape[1] for c in chunks)
    device = compute_device(bool(useGPU))
    was_training, old_device = net.training, net.device
    net.eval().to(device)
    paths = [os.path.join(str(dbTrain.dbPath), str(dbTrain.dbImageFns[i])) for i in trainIDs]
    avg = net.meta["normalization"]["averageImage"]
    try:
        images = tqdm(_prefetched(paths[done:]), total=nIm, initial=done,
                      desc="extract train descs", leave=False)
        for iIm, im in enumerate(images, start=done):
            if nTotal >= nTrain:
                break
            x = torch.from_numpy(subtract_average(im, avg)).permute(2, 0, 1)[None].to(device)
            with torch.no_grad():
                y = forward(net, x.contiguous(), "exact")[0]             # D x H x W; TF32 off on a GPU
            descs = y.transpose(1, 2).reshape(y.shape[0], -1)           # D x (h + H*w)
            nThis = min(nPerImage, descs.shape[1], nTrain - nTotal)
            rng = np.random.default_rng([SEED, iIm])
            cols = torch.from_numpy(rng.choice(descs.shape[1], nThis, replace=False)).to(device)
            chunks.append(descs[:, cols].float().cpu().numpy())
            nTotal += nThis
            if checkpoint is not None and (iIm + 1) % CHECKPOINT_EVERY == 0:
                chunks = [np.concatenate(chunks, axis=1)]
                _save_partial(checkpoint, chunks[0], iIm + 1, trainIDs)
    finally:
        net.train(was_training).to(old_device)
    return np.ascontiguousarray(np.concatenate(chunks, axis=1), dtype=np.float32)


def kmeanspp_init(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeds (yael_kmeans' default 'init' 0): k rows of x (N x D), each drawn with
    probability proportional to the squared distance to the nearest seed so far."""
    sq = np.einsum("nd,nd->n", x, x)
    idx = [int(rng.integers(len(x)))]
    best = np.full(len(x), np.inf, dtype=np.float32)
    for _ in range(1, k):  # sequential by nature; each step is one vectorised pass
        c = x[idx[-1]]
        np.minimum(best, np.maximum(sq - 2 * (x @ c) + c @ c, 0), out=best)
        total = best.sum(dtype=np.float64)
        idx.append(int(rng.choice(len(x), p=best / total)) if total > 0 else int(rng.integers(len(x))))
    return x[idx]


def kmeans(trainDescs: np.ndarray, k: int, useGPU: bool = False) -> np.ndarray:
    """yael_kmeans(trainDescs, k, 'niter', 100, 'seed', 43): k-means++ seeding (numpy
    generator seeded with 43, so not yael's seeds) then 100 Lloyd iterations with faiss,
    on every descriptor (no subsampling).  Returns D x k float32 centres.  ``useGPU``:
    the iterations run on the GPU when faiss-gpu is installed and sees one (the centres
    may then differ from the CPU's in the last bits)."""
    import faiss
    d, n = trainDescs.shape
    if n < k:
        raise ValueError(f"k-means: {n} training descriptors for k={k} clusters")
    x = np.ascontiguousarray(trainDescs.T, dtype=np.float32)
    gpu = bool(useGPU) and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    km = faiss.Kmeans(d, k, niter=N_ITER, seed=SEED, verbose=False,
                      max_points_per_centroid=max(1, -(-n // k)), gpu=gpu)
    km.train(x, init_centroids=kmeanspp_init(x, k, np.random.default_rng(SEED)))
    return np.ascontiguousarray(km.centroids.T, dtype=np.float32)


def getClusters(net: SimpleNN, opts, clstFn, k: int, dbTrain, trainDescFn) -> np.ndarray:
    """getClusters.m: the D x k centres in ``clstFn`` if it exists (k checked); otherwise
    k-means (:func:`kmeans`) of the descriptors in ``trainDescFn``, which are first computed
    (:func:`sample_train_descs`, 50 000 from 500 images; resumable through
    ``<trainDescFn>.partial.npz``) and saved when absent.  Both files
    hold MATLAB's variables ``trainDescs`` / ``clsts`` and are written atomically.
    ``opts.useGPU`` selects the device for the descriptors and k-means; ``dbTrain`` needs name,
    dbPath, dbImageFns and numImages.
    """
    if os.path.isfile(clstFn):
        return check_centres(clstFn, k)
    if os.path.isfile(trainDescFn):
        trainDescs = np.asarray(read_train_descs(trainDescFn), dtype=np.float32)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(trainDescFn)), exist_ok=True)
        partial = f"{trainDescFn}.partial.npz"
        trainDescs = sample_train_descs(net, dbTrain, bool(opt(opts, "useGPU")), checkpoint=partial)
        write_train_descs(trainDescFn, trainDescs)
        if os.path.isfile(partial):
            os.remove(partial)
    if not np.isfinite(trainDescs).all():
        raise ValueError(f"{trainDescFn}: training descriptors contain NaN or Inf")
    clsts = kmeans(trainDescs, k, bool(opt(opts, "useGPU")))
    os.makedirs(os.path.dirname(os.path.abspath(clstFn)), exist_ok=True)
    write_clusters(clstFn, clsts)
    return clsts
