"""trainWeakly's batch step (trainWeakly.m's inner loop): mine each query's tuple on the
feature cache, load its images, forward, the triplet loss, backward, and one SGD step;
and :class:`TupleTrainer`, the same step outside a training session.

The steps take the session ``s`` (trainWeakly's, or a :class:`TupleTrainer`): its
``net``, ``dbTrain``, ``opts``, ``auxData`` (negative caches), ``qFeat``/``dbFeat`` (the
cache, tensors on ``device``), ``loader`` (a :class:`~matnet.images.TrainingImageLoader`
or any function ``(fns, shorter) -> N x H x W x 3``), ``origImS`` and ``device``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import distributed
from ..device import compute_device
from ..extract import failure_reason
from ..images import ImageNetworkError, TrainingImageLoader
from ..nettools import netPrepareForTrain, whichLayer
from ..simplenn import failure_text, is_device_failure
from .loss import triplet_loss
from .mining import mine_query
from .opts import TrainWeaklyOpts
from .session_files import computeAllFeats
from .sgd import set_backprop_depth, sgd_step


def _say(*args) -> None:
    """print, on rank 0 only."""
    if distributed.is_rank0():
        print(*args)


def tuple_forward(net, x, fns, precision="exact"):
    """N x D representations of a training tuple; an error names its image files."""
    from ..precision import forward
    try:
        return forward(net, x, precision).reshape(x.shape[0], -1)
    except (RuntimeError, ValueError, MemoryError) as e:
        if is_device_failure(e):  # the GPU, not the images
            raise
        raise ImageNetworkError(f"{', '.join(fns)}: {failure_reason(e, x.shape[2], x.shape[3], len(fns), plural=True)}: "
                                f"{failure_text(e)}") from e


def train_batch(s, qIDs, lr: float, rng: np.random.Generator) -> float:
    """Mine, forward, backward each query's tuple (one at a time, as MATLAB), then one
    SGD step with the gradients summed over the batch and divided by the number of
    violating triplets.  Returns the batch loss (mean over the non-skipped queries).

    Under torch.distributed every rank mines every query of the batch on the same
    cache (cheap: nearest neighbours among the sampled negatives), so the random draws
    and the negative caches are those of one process on every rank; a rank takes only
    its contiguous share of the queries forward and backward.  The per-query losses
    and triplet counts are summed over the ranks (each entry comes from one rank, so
    the batch loss is exactly one process's), the gradients all-reduced, and every
    rank applies the same step."""
    net, opts = s.net, s.opts
    mine = distributed.shard(len(qIDs))
    tested = np.zeros(len(qIDs), bool)  # queries with non-trivial positives
    losses, triplets = np.zeros(len(qIDs)), np.zeros(len(qIDs))
    for i, qID in enumerate(int(q) for q in qIDs):
        t = choose_tuple(s, qID, rng)
        if t is None or i not in mine:
            continue
        tested[i] = True
        if t.m.nViolating:
            losses[i], triplets[i] = tuple_backward(s, qID, t)
    if distributed.is_distributed():
        tested, losses, triplets = distributed.sum_over_ranks(tested, losses, triplets, s.device)
        distributed.all_reduce_grads(net)
    numTriplets = int(triplets.sum())
    if numTriplets > 0:
        sgd_step(net, lr, numTriplets, opts.momentum, opts.weightDecay, opts.backPropToLayer, opts.fixLayers)
    else:
        net.zero_grad(set_to_none=True)
    return float(np.mean(losses[tested])) if tested.any() else 0.0


@dataclass
class Tuple:
    m: object            # mine_query's result (positive, violating negatives, new negative cache)
    shorter: int | None  # jitterScale: the shorter image side
    flip: bool           # jitterFlip


def choose_tuple(s, qID: int, rng: np.random.Generator) -> Tuple | None:
    """The query's tuple mined on the cached features (its negative cache updated) and,
    when it violates the margin, its jitter; None without non-trivial positives.  The
    random draws (negatives, then scale, then flip) are MATLAB's order."""
    db, opts, auxData = s.dbTrain, s.opts, s.auxData
    potPos = np.asarray(db.nontrivialPosQ(qID)).reshape(-1)
    if potPos.size == 0:
        return None
    sampled = db.sampleNegsQ(qID, opts.nNegChoice, rng=rng)
    m = mine_query(s.qFeat[qID], s.dbFeat, potPos, auxData["negCache"][qID], sampled,
                   opts.nNegCap, opts.nNegCache, opts.margin, opts.excludeVeryHard)
    auxData["negCache"][qID] = m.negCache
    if opts.printLoss:
        _say(f"{opts.sessionID} loss= {m.loss:.4f}, #violate= {m.nViolating}, #vhard= {m.nVeryHard}, "
             f"(qID={qID})")
    shorter, flip = None, False
    if m.nViolating:
        if opts.jitterScale:
            shorter = round(opts.jitterScale[int(rng.integers(len(opts.jitterScale)))] * s.origImS)
        flip = bool(opts.jitterFlip and rng.random() > 0.5)
    return Tuple(m, shorter, flip)


def tuple_backward(s, qID: int, t: Tuple) -> tuple[float, int]:
    """Load the tuple's images, forward, the real triplet loss, and (if some negative
    still violates) backward into the weights' ``.grad``.  Returns (loss, triplets)."""
    db, opts, m = s.dbTrain, s.opts, t.m
    fns = [db.qPath + db.qImageFns[qID]] + [db.dbPath + db.dbImageFns[i] for i in [m.posID, *m.negIDs]]
    ims = s.loader(fns, t.shorter)
    if t.flip:
        ims = ims[:, :, ::-1]
    # N x H x W x 3 viewed as NCHW is channels_last, the faster layout for the convolutions
    x = torch.from_numpy(np.ascontiguousarray(ims)).to(s.device).permute(0, 3, 1, 2)
    feats = tuple_forward(s.net, x, fns, opts.precision)
    loss, dzdy, nViol, nVH = triplet_loss(feats.detach(), opts.margin, opts.excludeVeryHard)
    if opts.printLoss:
        print(f"   real loss= {loss:.4f}, #violate= {nViol}, #vhard= {nVH}, (qID={qID})")
    if nViol:
        feats.backward(dzdy)
    return loss, nViol


class TupleTrainer:
    """trainWeakly's inner loop outside a training session, for benchmarks and ``matnet
    selftest --gpu``: the same functions as trainWeakly's batches (mining on a feature
    cache, the tuples' images read as trainWeakly reads them, forward in
    ``opts.precision``, MatConvNet's dz/dy, backward, MatConvNet's SGD step), on ``net``
    prepared as trainWeakly prepares it (moved to ``device``, netPrepareForTrain and the
    backprop depth of ``opts.backPropToLayer``: a 1-based index or a layer name).
    Nothing is saved and no option is checked beyond what the step needs.

    ``set_cache(qFeat, dbFeat)`` (numpy, nQ x D and N x D) sets the cache the negatives
    are mined on, ``refresh_cache()`` computes it as trainWeakly's cache refresh does
    (computeAllFeats through ``opts.outPrefix``), ``batch(qIDs, lr, rng)`` runs one batch
    and returns its loss, ``close()`` stops the image-reading threads."""

    def __init__(self, net, dbTrain, opts: TrainWeaklyOpts, device=None):
        bp = opts.backPropToLayer
        bp = 1 if bp is None else whichLayer(net, bp) + 1 if isinstance(bp, str) else int(bp)
        self.opts = opts.replace(backPropToLayer=bp)
        self.device = compute_device(opts.useGPU) if device is None else torch.device(device)
        self.dbTrain = dbTrain
        self.net = netPrepareForTrain(net.to(self.device), bp)
        set_backprop_depth(self.net, bp)
        self.loader = TrainingImageLoader(net.meta["normalization"]["averageImage"], opts.numThreads)
        first = self.loader([dbTrain.dbPath + dbTrain.dbImageFns[0]])[0]
        self.origImS = min(first.shape[:2])
        self.auxData = {"negCache": [np.zeros(0, np.int64) for _ in range(dbTrain.numQueries)]}
        self.qFeat = self.dbFeat = None

    def set_cache(self, qFeat: np.ndarray, dbFeat: np.ndarray) -> None:
        self.qFeat = torch.from_numpy(np.ascontiguousarray(qFeat, np.float32)).to(self.device)
        self.dbFeat = torch.from_numpy(np.ascontiguousarray(dbFeat, np.float32)).to(self.device)

    def refresh_cache(self, ID: str = "cache") -> None:
        """computeAllFeats on the training set with the current network (the refresh)."""
        self.set_cache(*computeAllFeats(self.dbTrain, self.net, self.opts, ID))

    def batch(self, qIDs, lr: float, rng: np.random.Generator) -> float:
        """One batch of trainWeakly's epoch loop (:func:`train_batch`); the batch loss."""
        if self.qFeat is None:
            raise ValueError("TupleTrainer.batch: no feature cache (call set_cache or refresh_cache first)")
        return train_batch(self, qIDs, lr, rng)

    def close(self) -> None:
        self.loader.close()
