"""trainWeakly: NetVLAD's weakly supervised triplet training (trainWeakly.m).

Resuming (``startEpoch`` > 1) takes the saved options, except startEpoch, test0,
useGPU, numThreads (as MATLAB) and nEpoch (so a finished run can be extended); other
options given at resume that differ from the saved ones are listed in one warning
(MATLAB ignores them silently, although its README_more says they are used).

Differences from MATLAB, all deliberate: random numbers come from numpy
(``default_rng(43 - 1 + epoch)`` per epoch, used for the query order, the sampled
negatives and jittering) instead of MATLAB's stream; a resumed run keeps the saved
momentum (MATLAB's netPrepareForTrain zeroes it); ``startEpoch = e`` also resumes in
the middle of epoch e when ``<sessionID>_ep<e>_latest.mat`` is a mid-epoch save
(its random state, batch position and feature cache are stored with it), so a run
killed at any point loses only the work since its last save; a run stopped after an
epoch's save but before that epoch's tests finished runs the missing tests first when
resumed with ``startEpoch = e + 1`` (MATLAB resumes without them, so its recall
history lacks epoch e and pickBestNet picks a wrong epoch); a resumed run writes its
checkpoints where it found them (the ``outPrefix`` given now), not to the saved
``outPrefix`` (MATLAB's choice, which re-creates a moved folder or overwrites the
original of a copy).  Checkpoint0 files are computed under a lock (concurrent runs
sharing them compute each once) and a run killed while computing one resumes it
where it stopped; feature files appear only when complete; a finished run leaves no
temporary file of its session behind.
"""
from __future__ import annotations

import math
import os
import re
import secrets
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from converters.atomic_file import temporary_regex

from .. import distributed
from ..device import compute_device
from ..extract import serialAllFeats
from ..images import ImageNetworkError, imread_uint8, mean_colour  # the reader serialAllFeats uses
from ..nettools import netOutputDim, netPrepareForTrain, whichLayer, layerNames
from ..simplenn import failure_text
from .checkpoint import checkpointFn, load_checkpoint, momentum_of, restore_momentum, saveNet
from .file_lock import file_lock
from .loss import triplet_loss
from .mining import mine_query
from .opts import TrainWeaklyOpts
from .progress_log import ProgressLog
from .tensorboard_log import TensorBoardLog, check_tensorboard
from .sgd import set_backprop_depth, sgd_step


def _bin_path(fn) -> None:
    Path(fn).parent.mkdir(parents=True, exist_ok=True)


def _serial_feats(net, imPath, imageFns, outFn, opts: TrainWeaklyOpts) -> None:
    """serialAllFeats into ``outFn``, which appears only when complete (a run killed
    midway leaves ``<outFn>.partial`` or shards, which the next call with the same
    network resumes).  Under torch.distributed the ranks extract their shards and rank
    0 writes the file."""
    _bin_path(outFn)
    serialAllFeats(net, imPath, imageFns, outFn, batchSize=opts.computeBatchSize, useGPU=opts.useGPU,
                   numThreads=opts.numThreads, precision=opts.precision)
    net.train()


def _checkpoint0_feats(net, imPath, imageFns, outFn, opts: TrainWeaklyOpts) -> None:
    """A checkpoint0 file, computed unless it exists, under the lock ``<outFn>.lock``
    (held by rank 0): runs sharing it compute it once, the others wait, then read it."""
    _bin_path(outFn)
    with file_lock(f"{outFn}.lock") if distributed.is_rank0() else nullcontext():
        if not _exists(outFn):
            _serial_feats(net, imPath, imageFns, outFn, opts)


def _remove_when_read(fn) -> None:
    """Delete a feature file once every rank has read it."""
    distributed.barrier(f"read {fn}")
    if distributed.is_rank0():
        os.remove(fn)


def _exists(fn) -> bool:
    """Whether ``fn`` exists, as rank 0 sees it (the same answer on every rank)."""
    return distributed.on_rank0(lambda: os.path.isfile(fn), f"look for {fn}")


def _say(*args) -> None:
    """print, on rank 0 only."""
    if distributed.is_rank0():
        print(*args)


def _read_feats(fn, n: int, D: int | None = None) -> np.ndarray:
    from converters.bin_features import read_bin
    return read_bin(fn, D=D, n=n)


def computeAllFeats(db, net, opts: TrainWeaklyOpts, ID: str):
    """computeAllFeats (trainWeakly.m): query and database features of ``db`` with the
    current net, through temporary files that are deleted; (qFeat nQ x D, dbFeat N x D)."""
    out = f"{opts.outPrefix}{opts.sessionID}_{ID}"
    qFn, dbFn = f"{out}_q.bin", f"{out}_db.bin"
    _serial_feats(net, db.qPath, db.qImageFns, qFn, opts)
    qFeat = _read_feats(qFn, db.numQueries)
    _remove_when_read(qFn)
    _serial_feats(net, db.dbPath, db.dbImageFns, dbFn, opts)
    dbFeat = _read_feats(dbFn, db.numImages, qFeat.shape[1])
    _remove_when_read(dbFn)
    return qFeat, dbFeat


def testNet(db, opts: TrainWeaklyOpts, ID: str, qFeat, dbFeat, log=None):
    """testNet.m: (recall per recallNs on nTestSample queries, rank loss on nTestRankSample).
    Prints one summary line (with ``printLoss`` also testCore's recall table), and
    writes it to ``log``; under torch.distributed rank 0 computes and hands it over."""
    from ..recall_at_n import testCore, testCoreRank

    def test():
        if opts.printLoss:
            print(f"testNet: {opts.sessionID} {ID}")
        rankloss = math.nan  # nTestRankSample 0: MATLAB's mean over no queries
        if opts.nTestRankSample > 0:
            rankloss, _ = testCoreRank(db, qFeat, dbFeat, opts.margin, opts.nNegChoice,
                                       nTestSample=opts.nTestRankSample, verbose=opts.printLoss)
        recall, _ = testCore(db, qFeat, dbFeat, nTestSample=opts.nTestSample, recallNs=opts.recallNs,
                             verbose=opts.printLoss)
        line = f"testNet: {opts.sessionID} {ID}: {recall_summary(opts.recallNs, recall)}, rankloss {rankloss:.4f}"
        print(line)
        if log is not None:
            log.write(line)
        return [float(r) for r in recall], float(rankloss)
    recall, rankloss = distributed.on_rank0(test, f"testNet {ID}")
    return np.asarray(recall, np.float64), float(rankloss)


testNet.__test__ = False  # a MATLAB name starting with "test": not a pytest test where imported


def recall_summary(recallNs, recall) -> str:
    """'recall@1/5/10 0.512/0.801/0.900' for the Ns among 1, 5, 10, 20 that were measured."""
    pick = [i for i, n in enumerate(recallNs) if n in (1, 5, 10, 20)] or list(range(min(3, len(recallNs))))
    return (f"recall@{'/'.join(str(recallNs[i]) for i in pick)} "
            f"{'/'.join(f'{recall[i]:.3f}' for i in pick)}")


class _ImageLoader:
    """vl_imreadjpeg for a training tuple (:func:`matnet.images.imread_uint8`, as
    serialAllFeats reads): RGB float32, optional resize of the shorter side
    (jitterScale), average colour subtracted, read by ``numThreads`` threads."""

    def __init__(self, averageImage, numThreads: int):
        self.avg = mean_colour(averageImage)
        self.pool = ThreadPoolExecutor(max(1, numThreads))

    def _one(self, fn, shorter):
        a = imread_uint8(fn)
        if shorter is not None:
            im = Image.fromarray(a)
            w, h = im.size
            s = shorter / min(w, h)
            a = np.asarray(im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR))
        return a.astype(np.float32) - self.avg

    def __call__(self, fns, shorter=None) -> np.ndarray:
        """N x H x W x 3 (images of one size, as MATLAB's cat(4, ...) needs)."""
        ims = list(self.pool.map(lambda f: self._one(f, shorter), fns))
        if len({im.shape for im in ims}) > 1:
            raise ValueError("a training tuple needs images of one size: "
                             + ", ".join(f"{fn} ({im.shape[0]} x {im.shape[1]})" for fn, im in zip(fns, ims)))
        return np.stack(ims)


def _tuple_forward(net, x, fns, precision="exact"):
    """N x D representations of a training tuple; an error names its image files."""
    from ..precision import forward
    try:
        return forward(net, x, precision).reshape(x.shape[0], -1)
    except torch.cuda.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError) as e:
        raise ImageNetworkError(f"{', '.join(fns)}: the network fails on these {x.shape[2]} x {x.shape[3]} "
                                f"images (smaller than its receptive field?): {failure_text(e)}") from e


def lr_schedule(opts: TrainWeaklyOpts) -> list[tuple[float, int]]:
    """(learning rate, cache refresh period in batches) for epochs 1..nEpoch: both
    start at learningRate and ceil(compFeatsFrequency/batchSize); at every epoch e > 1
    with rem(e, lrDownFreq) == 1 the rate is divided by lrDownFactor and the period
    multiplied by it (rounded).  As MATLAB, lrDownFreq 1 never lowers the rate, and an
    infinite compFeatsFrequency never refreshes the cache within an epoch."""
    lr, period, out = opts.learningRate, batches_per(opts.compFeatsFrequency, opts.batchSize), []
    for e in range(1, opts.nEpoch + 1):
        if e != 1 and e % opts.lrDownFreq == 1:
            lr = lr / opts.lrDownFactor
            period = round(period * opts.lrDownFactor) if math.isfinite(period) else period
        out.append((lr, period))
    return out


def batches_per(frequency, batchSize: int):
    """ceil(frequency / batchSize): a period counted in queries as one in batches
    (inf stays inf: never)."""
    return math.ceil(frequency / batchSize) if math.isfinite(frequency) else math.inf


def _new_obj(nR: int) -> dict:
    part = lambda: {"loss": np.zeros((1, 0)), "recall": np.zeros((nR, 0)), "rankloss": np.zeros((1, 0))}
    return {"train": part(), "val": part()}


def _append_col(a, col):
    return np.hstack([a, np.asarray(col, np.float64).reshape(-1, 1)])


def _checkpoint0_name(opts, dbName, kind, extra=""):
    sfx = opts.checkpoint0suffix + ("fast_" if opts.precision == "fast" else "")  # not MATLAB's features
    return f"{opts.outPrefix}{dbName}_{opts.netID}_{opts.layerName}_{opts.method}_{sfx}{extra}{kind}.bin"


@dataclass
class _Session:
    """The state trainWeakly.m keeps in its workspace, shared by the steps below."""
    dbTrain: object
    dbVal: object
    opts: TrainWeaklyOpts
    net: object
    obj: dict
    auxData: dict
    device: torch.device
    nBatches: int
    resumeBatch: int = 0  # > 0: continue epoch startEpoch after this many batches
    loader: _ImageLoader | None = None
    origImS: int = 0
    firstImShape: tuple = ()
    qFeat: torch.Tensor | None = None  # the feature cache the negatives are mined on
    dbFeat: torch.Tensor | None = None
    log: ProgressLog | None = None
    testsPending: bool = False  # the checkpoint resumed from lacks its epoch's tests
    tb: TensorBoardLog | None = None  # opts.tensorboard's scalars (not in MATLAB)

    def set_cache(self, qFeat: np.ndarray, dbFeat: np.ndarray) -> None:
        self.qFeat = torch.from_numpy(qFeat).to(self.device)
        self.dbFeat = torch.from_numpy(dbFeat).to(self.device)


def trainWeakly(dbTrain, dbVal, opts: TrainWeaklyOpts | None = None, **kw) -> str:
    """trainWeakly.m: train ``loadNet(netID, layerName)`` + ``addLayers`` with the
    weakly supervised triplet loss on ``dbTrain``, validating on ``dbVal``; options
    as :class:`TrainWeaklyOpts` (or keywords).  Checkpoints
    ``<outPrefix><sessionID>_ep%06d_latest.mat`` and ``<sessionID>_latest.mat``.
    Returns the sessionID."""
    full = (opts or TrainWeaklyOpts()).replace(**kw)
    check_tensorboard(full.tensorboard)  # a missing optional package fails before any compute
    s = _setup(dbTrain, dbVal, full)
    s.tb = TensorBoardLog(s.opts.tensorboard, s.opts.recallNs)
    if (s.opts.startEpoch > 1 or s.resumeBatch) and distributed.is_rank0():
        warn_ignored_options(_given_options(opts, kw), s.opts)
    try:
        _initial_features(s)
        _finish_epoch_tests(s)
        schedule = lr_schedule(s.opts)
        for iEpoch in range(1, s.opts.nEpoch + 1):
            lr, batchCompFeatsFrequency = schedule[iEpoch - 1]
            if iEpoch > 1 and lr != schedule[iEpoch - 2][0]:
                _say(f"Changing learning rate from {schedule[iEpoch - 2][0]:f} to {lr:f}")
            if s.opts.startEpoch > iEpoch:
                continue
            _say(f"Learning rate {lr:f}")
            s.log.write(f"epoch {iEpoch}: learning rate {lr:g}")
            _train_epoch(s, iEpoch, lr, batchCompFeatsFrequency)
            _end_of_epoch(s, iEpoch)
            _tensorboard_epoch(s, iEpoch, lr)
        distributed.on_rank0(lambda: remove_session_temporaries(s.opts), "remove temporary files")
        s.log.write("done")
    except BaseException as e:
        s.log.write(f"stopped: {type(e).__name__}: {e}")
        raise
    finally:
        s.log.close()
        s.tb.close()
    return s.opts.sessionID


# ----- set-up and resume

def _setup(dbTrain, dbVal, opts: TrainWeaklyOpts) -> _Session:
    """Session ID and output prefix, then a new network (startEpoch 1) or the state
    of a checkpoint (the previous epoch's, or a mid-epoch save of startEpoch), then
    netPrepareForTrain."""
    from ..datasets.local_paths import localPaths
    paths = localPaths()
    distributed.check_same(_job_hash(dbTrain, dbVal, opts), "trainWeakly options and datasets")
    if not opts.sessionID:
        if opts.startEpoch > 1:
            raise ValueError("trainWeakly: have to specify sessionID to restart (startEpoch > 1)")
        opts.sessionID = distributed.broadcast_json(secrets.token_hex(4), "sessionID")
    if not opts.outPrefix:
        opts.outPrefix = paths["outPrefix"]
    device = compute_device(opts.useGPU)
    torch.set_num_threads(max(1, min(int(opts.numThreads), distributed.cpu_share())))
    nBatches = dbTrain.numQueries // opts.batchSize
    resumeBatch, ck = 0, None
    mid = checkpointFn(opts, f"ep{opts.startEpoch:06d}_latest")
    if _exists(mid):  # a mid-epoch save of the epoch to start: continue it
        ck = load_checkpoint(mid)
        resumeBatch = ck["auxData"].get("resumeBatch", nBatches)
        if not 0 < resumeBatch < nBatches:
            ck, resumeBatch = None, 0

    savedMomentum = None
    if opts.startEpoch < 2 and ck is None:
        check_negatives(dbTrain, dbVal, opts)
        with distributed.rank0_first("loadNet and addLayers"):  # rank 0 writes the cluster files
            net, obj, opts, auxData = _new_session(dbTrain, dbVal, opts)
    else:
        net, obj, opts, auxData = _continue_session(dbTrain, opts, ck, resumeBatch)
        check_negatives(dbTrain, dbVal, opts)  # the saved nNegChoice
        savedMomentum = momentum_of(net)
    distributed.check_same(distributed.tensors_hash([w for l in net.layers for w in l.weights]),
                           "the network's weights")
    _say(opts)

    net = netPrepareForTrain(net.to(device), opts.backPropToLayer)
    if savedMomentum is not None:
        restore_momentum(net, savedMomentum)
    set_backprop_depth(net, opts.backPropToLayer)
    s = _Session(dbTrain, dbVal, opts, net, obj, auxData, device, nBatches, resumeBatch)
    s.testsPending = opts.startEpoch > 1 and not resumeBatch and _tests_pending(opts, obj, auxData)
    s.loader = _ImageLoader(net.meta["normalization"]["averageImage"], opts.numThreads)
    first = s.loader([dbTrain.dbPath + dbTrain.dbImageFns[0]])[0]
    s.origImS, s.firstImShape = min(first.shape[:2]), first.shape
    _bin_path(opts.outPrefix + "x")  # made here, once the network is loaded: a run that fails earlier leaves no folder
    s.log = ProgressLog(f"{opts.outPrefix}{opts.sessionID}.log")
    s.log.write(f"trainWeakly {opts.sessionID}: epoch {opts.startEpoch}"
                + (f" from batch {resumeBatch + 1}" if resumeBatch else "") + f" of {opts.nEpoch}, "
                f"{nBatches} batches of {opts.batchSize} queries, {distributed.world_size()} process(es)")
    return s


def _job_hash(dbTrain, dbVal, opts: TrainWeaklyOpts) -> str:
    """What every rank must agree on: the options and both datasets' names and sizes."""
    return distributed.options_hash({"opts": opts.to_dict(), "dbs": [
        [db.name, db.numImages, db.numQueries] for db in (dbTrain, dbVal)]})


def _new_session(dbTrain, dbVal, opts: TrainWeaklyOpts):
    """startEpoch 1: checkpoint0 names, loadNet + addLayers, the backprop depth, and
    empty obj / auxData.  Returns (net, obj, opts, auxData)."""
    opts.dbTrainName, opts.dbValName = dbTrain.name, dbVal.name
    # ----- checkpoint names
    if opts.checkpoint0suffix:
        opts.checkpoint0suffix += "_"
    opts.dbCheckpoint0 = opts.dbCheckpoint0 or _checkpoint0_name(opts, dbTrain.name, "db")
    opts.qCheckpoint0 = opts.qCheckpoint0 or _checkpoint0_name(opts, dbTrain.name, "q")
    opts.dbCheckpoint0val = opts.dbCheckpoint0val or _checkpoint0_name(opts, dbVal.name, "db")
    opts.qCheckpoint0val = opts.qCheckpoint0val or _checkpoint0_name(opts, dbVal.name, "q")
    # ----- network setup
    from ..add_layers import addLayers, head_layer_names
    from ..pretrained import loadNet
    net = loadNet(opts.netID, opts.layerName)
    check_layer_options(opts, layerNames(net) + head_layer_names(opts.method))
    net = addLayers(net, opts, dbTrain)
    # ----- backprop depth
    if opts.backPropToLayer is None:
        opts.backPropToLayer = 1
    elif isinstance(opts.backPropToLayer, str):
        opts.backPropToLayer = whichLayer(net, opts.backPropToLayer) + 1
    opts.backPropToLayerName = net.layers[opts.backPropToLayer - 1].name
    opts.backPropDepth = len(net.layers) - opts.backPropToLayer + 1
    # ----- init
    auxData = {"epochStartTime": [], "numTrain": dbTrain.numQueries,
               "negCache": [np.zeros(0, np.int64) for _ in range(dbTrain.numQueries)]}
    return net, _new_obj(len(opts.recallNs)), opts, auxData


def check_negatives(dbTrain, dbVal, opts: TrainWeaklyOpts) -> None:
    """Every query that is mined (one with non-trivial positives) has ``nNegChoice``
    negatives to sample, on dbTrain and, when rank losses are tested
    (nTestRankSample > 0), on dbVal; else ValueError naming the dataset, the query,
    its negatives and the option, before any feature is computed.  MATLAB (and matnet
    before) looped forever in sampleNegs on such a query (issue 24, case 20)."""
    dbs = [dbTrain] + ([dbVal] if opts.nTestRankSample > 0 and dbVal is not dbTrain else [])
    for db in dbs:
        pos = db.nontrivialPosQ(np.arange(db.numQueries))
        mined = np.flatnonzero([p.size > 0 for p in pos])
        db.check_negatives(opts.nNegChoice, "nNegChoice", queries=mined)


def check_layer_options(opts: TrainWeaklyOpts, names: list[str]) -> None:
    """backPropToLayer (1-based index or name) and fixLayers against the layer names of
    the network to train, before anything is computed (MATLAB fails later or asserts)."""
    listed = ", ".join(names)
    b = opts.backPropToLayer
    if isinstance(b, int) and b > len(names):
        raise ValueError(f"trainWeakly: option backPropToLayer={b} is not allowed: the network has "
                         f"{len(names)} layers (1..{len(names)}: {listed})")
    if isinstance(b, str) and names.count(b) != 1:
        raise ValueError(f"trainWeakly: option backPropToLayer={b!r} is not allowed: {names.count(b)} layers "
                         f"have that name; it must name exactly one of: {listed}")
    unknown = [n for n in opts.fixLayers if n not in names]
    if unknown:
        raise ValueError(f"trainWeakly: option fixLayers={opts.fixLayers!r} is not allowed: "
                         f"{', '.join(map(repr, unknown))} {'is' if len(unknown) == 1 else 'are'} not "
                         f"a layer of the network ({listed})")


def _continue_session(dbTrain, new: TrainWeaklyOpts, ck, resumeBatch: int):
    """Continue from a checkpoint: ``ck`` (a mid-epoch save) or the end of epoch
    startEpoch-1.  The saved options win except startEpoch, test0, useGPU, numThreads,
    nEpoch; at an epoch start the checkpoint0 features are the previous epoch's.
    Returns (net, obj, opts, auxData)."""
    if ck is None:
        ck = load_checkpoint(checkpointFn(new, f"ep{new.startEpoch - 1:06d}_latest"))
    net, obj, opts, auxData = ck["net"], ck["obj"], ck["opts"], ck["auxData"]
    opts.outPrefix = new.outPrefix  # where the checkpoint was found (MATLAB: the saved one)
    opts.startEpoch, opts.test0 = new.startEpoch, False
    opts.useGPU, opts.numThreads, opts.nEpoch = new.useGPU, new.numThreads, new.nEpoch
    if not resumeBatch:  # the cache comes from the previous epoch's net
        if opts.dbCheckpoint0_orig is None:
            opts.dbCheckpoint0_orig, opts.qCheckpoint0_orig = opts.dbCheckpoint0, opts.qCheckpoint0
        opts.dbCheckpoint0, opts.qCheckpoint0 = new.dbCheckpoint0, new.qCheckpoint0
        if not opts.qCheckpoint0:
            extra = f"{opts.sessionID}_ep{opts.startEpoch - 1:06d}_"
            opts.dbCheckpoint0 = _checkpoint0_name(opts, dbTrain.name, "db", extra)
            opts.qCheckpoint0 = _checkpoint0_name(opts, dbTrain.name, "q", extra)
    return net, obj, opts, auxData


# ----- initial features and test0

def _initial_features(s: _Session) -> None:
    """The feature cache to mine on: the checkpoint0 files (computed if missing), or
    the cache saved with a mid-epoch checkpoint; with test0, the recalls of the
    initial network on dbVal and dbTrain (obj.pretrain)."""
    opts, dbTrain = s.opts, s.dbTrain
    if s.resumeBatch:
        cq, cdb = _cache_fns(opts, opts.startEpoch, s.resumeBatch + 1)
        qFeat = _read_feats(cq, dbTrain.numQueries)
        dbFeat = _read_feats(cdb, dbTrain.numImages, qFeat.shape[1])
    else:
        _checkpoint0_feats(s.net, dbTrain.qPath, dbTrain.qImageFns, opts.qCheckpoint0, opts)
        _checkpoint0_feats(s.net, dbTrain.dbPath, dbTrain.dbImageFns, opts.dbCheckpoint0, opts)
        if opts.test0:
            _test0(s)
        qFeat = _read_feats(opts.qCheckpoint0, dbTrain.numQueries)
        dbFeat = _read_feats(opts.dbCheckpoint0, dbTrain.numImages, qFeat.shape[1])
    nDims = qFeat.shape[1]
    outDim = netOutputDim(s.net, s.firstImShape)[0]
    if outDim != nDims:
        raise ValueError(f"{opts.qCheckpoint0}: features have {nDims} dimensions, the network outputs {outDim}")
    s.set_cache(qFeat, dbFeat)


def _test0(s: _Session) -> None:
    """obj.pretrain.{val,train}: testFromFn on the initial network's features."""
    from ..recall_at_n import testFromFn
    opts, dbVal = s.opts, s.dbVal
    _checkpoint0_feats(s.net, dbVal.qPath, dbVal.qImageFns, opts.qCheckpoint0val, opts)
    _checkpoint0_feats(s.net, dbVal.dbPath, dbVal.dbImageFns, opts.dbCheckpoint0val, opts)

    def test():
        out = {}
        for part, db, dFn, qFn in (("val", dbVal, opts.dbCheckpoint0val, opts.qCheckpoint0val),
                                   ("train", s.dbTrain, opts.dbCheckpoint0, opts.qCheckpoint0)):
            rec, rl, _, _ = testFromFn(db, dFn, qFn, opts, verbose=opts.printLoss)
            out[part] = [float(r) for r in rec], None if rl is None else float(rl)
            line = f"test0 {part}: {recall_summary(opts.recallNs, rec)}" + ("" if rl is None else f", rankloss {rl:.4f}")
            print(line)
            s.log.write(line)
        return out
    s.obj["pretrain"] = {part: {"recall": np.asarray(rec, np.float64).reshape(-1, 1),
                                "rankloss": np.float64(np.nan if rl is None else rl)}
                         for part, (rec, rl) in distributed.on_rank0(test, "test0").items()}


# ----- the epoch

def _train_epoch(s: _Session, iEpoch: int, lr: float, batchCompFeatsFrequency: int) -> None:
    """One epoch: queries in the order of ``default_rng(43-1+iEpoch)``; before each
    batch a mid-epoch save every batchSaveFrequency batches and a cache refresh every
    batchCompFeatsFrequency batches (not before the first or the last)."""
    opts, dbTrain, auxData = s.opts, s.dbTrain, s.auxData
    resuming = bool(s.resumeBatch) and iEpoch == opts.startEpoch
    if not resuming:
        auxData["epochStartTime"].append(time.strftime("%d-%b-%Y %H:%M:%S"))
    rng = np.random.default_rng(43 - 1 + iEpoch)
    trainOrder = rng.permutation(dbTrain.numQueries)
    startBatch = 1
    if resuming:
        rng.bit_generator.state = auxData["rngState"]
        startBatch = s.resumeBatch + 1
    ID = f"ep{iEpoch:06d}_latest"
    batchSaveFrequency = batches_per(opts.saveFrequency, opts.batchSize)
    s.log.epoch_start(iEpoch, opts.nEpoch, startBatch, s.nBatches, desc=f"{opts.sessionID} ")  # console bar
    for iBatch in range(startBatch, s.nBatches + 1):
        if iBatch % batchSaveFrequency == 0 and not (startBatch > 1 and iBatch == startBatch):
            _save_mid(s.net, s.obj, opts, auxData, ID, iEpoch, iBatch, rng, s.qFeat, s.dbFeat)
            s.log.write(f"epoch {iEpoch}: saved before batch {iBatch}")
            if opts.doDraw:
                _draw(s.obj, opts, auxData)
        if iBatch % batchCompFeatsFrequency == 0 and iBatch != 1 and iBatch != s.nBatches:
            s.set_cache(*computeAllFeats(dbTrain, s.net, opts, f"{ID}_train"))
            s.log.write(f"epoch {iEpoch}: feature cache recomputed before batch {iBatch}")
        qIDs = trainOrder[(iBatch - 1) * opts.batchSize: iBatch * opts.batchSize]
        loss = _train_batch(s.net, dbTrain, qIDs, s.qFeat, s.dbFeat, auxData, opts, rng, s.loader, s.origImS,
                            lr, s.device)
        s.obj["train"]["loss"] = np.hstack([s.obj["train"]["loss"], [[loss]]])
        if opts.printBatchLoss:
            _say(f"{opts.sessionID} batchloss= {loss:.4f}")
        s.log.batch(iEpoch, iBatch, s.nBatches, loss)
        if s.tb is not None:
            s.tb.batch((iEpoch - 1) * s.nBatches + iBatch, loss)
    s.log.close_bar()
    s.resumeBatch = 0
    auxData["resumeBatch"] = s.nBatches
    auxData.pop("rngState", None)


# ----- the batch

def _train_batch(net, db, qIDs, qFeat, dbFeat, auxData, opts, rng, loader, origImS, lr, device) -> float:
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
    mine = distributed.shard(len(qIDs))
    tested = np.zeros(len(qIDs), bool)  # queries with non-trivial positives
    losses, triplets = np.zeros(len(qIDs)), np.zeros(len(qIDs))
    for i, qID in enumerate(int(q) for q in qIDs):
        t = _choose_tuple(db, qID, qFeat, dbFeat, auxData, opts, rng, origImS)
        if t is None or i not in mine:
            continue
        tested[i] = True
        if t.m.nViolating:
            losses[i], triplets[i] = _tuple_backward(net, db, qID, t, opts, loader, device)
    if distributed.is_distributed():
        tested, losses, triplets = _sum_over_ranks(tested, losses, triplets, device)
        _all_reduce_grads(net)
    numTriplets = int(triplets.sum())
    if numTriplets > 0:
        sgd_step(net, lr, numTriplets, opts.momentum, opts.weightDecay, opts.backPropToLayer, opts.fixLayers)
    else:
        net.zero_grad(set_to_none=True)
    return float(np.mean(losses[tested])) if tested.any() else 0.0


@dataclass
class _Tuple:
    m: object            # mine_query's result (positive, violating negatives, new negative cache)
    shorter: int | None  # jitterScale: the shorter image side
    flip: bool           # jitterFlip


def _choose_tuple(db, qID, qFeat, dbFeat, auxData, opts, rng, origImS) -> _Tuple | None:
    """The query's tuple mined on the cached features (its negative cache updated) and,
    when it violates the margin, its jitter; None without non-trivial positives.  The
    random draws (negatives, then scale, then flip) are MATLAB's order."""
    potPos = np.asarray(db.nontrivialPosQ(qID)).reshape(-1)
    if potPos.size == 0:
        return None
    sampled = db.sampleNegsQ(qID, opts.nNegChoice, rng=rng)
    m = mine_query(qFeat[qID], dbFeat, potPos, auxData["negCache"][qID], sampled,
                   opts.nNegCap, opts.nNegCache, opts.margin, opts.excludeVeryHard)
    auxData["negCache"][qID] = m.negCache
    if opts.printLoss:
        _say(f"{opts.sessionID} loss= {m.loss:.4f}, #violate= {m.nViolating}, #vhard= {m.nVeryHard}, "
             f"(qID={qID})")
    shorter, flip = None, False
    if m.nViolating:
        if opts.jitterScale:
            shorter = round(opts.jitterScale[int(rng.integers(len(opts.jitterScale)))] * origImS)
        flip = bool(opts.jitterFlip and rng.random() > 0.5)
    return _Tuple(m, shorter, flip)


def _tuple_backward(net, db, qID, t: _Tuple, opts, loader, device) -> tuple[float, int]:
    """Load the tuple's images, forward, the real triplet loss, and (if some negative
    still violates) backward into the weights' ``.grad``.  Returns (loss, triplets)."""
    m = t.m
    fns = [db.qPath + db.qImageFns[qID]] + [db.dbPath + db.dbImageFns[i] for i in [m.posID, *m.negIDs]]
    ims = loader(fns, t.shorter)
    if t.flip:
        ims = ims[:, :, ::-1]
    # N x H x W x 3 viewed as NCHW is channels_last, the faster layout for the convolutions
    x = torch.from_numpy(np.ascontiguousarray(ims)).to(device).permute(0, 3, 1, 2)
    feats = _tuple_forward(net, x, fns, opts.precision)
    loss, dzdy, nViol, nVH = triplet_loss(feats.detach(), opts.margin, opts.excludeVeryHard)
    if opts.printLoss:
        print(f"   real loss= {loss:.4f}, #violate= {nViol}, #vhard= {nVH}, (qID={qID})")
    if nViol:
        feats.backward(dzdy)
    return loss, nViol


def _sum_over_ranks(tested, losses, triplets, device):
    """The per-query arrays summed over the ranks (each query filled by one rank)."""
    t = torch.from_numpy(np.stack([tested.astype(np.float64), losses, triplets])).to(device)
    t = distributed.all_reduce_sum(t, "batch losses").cpu().numpy()
    return t[0] > 0, t[1], t[2]


def _all_reduce_grads(net) -> None:
    """Sum every trainable weight's ``.grad`` over the ranks in one all-reduce (a
    weight no rank has a gradient for keeps none)."""
    ws = [w for l in net.layers for w in l.weights if w.requires_grad]
    if not ws:
        return
    flat = torch.cat([(w.grad if w.grad is not None else torch.zeros_like(w)).reshape(-1) for w in ws] +
                     [torch.tensor([float(w.grad is not None) for w in ws], device=ws[0].device)])
    distributed.all_reduce_sum(flat, "gradients")
    off = 0
    for w, has in zip(ws, flat[-len(ws):].tolist()):
        g = flat[off:off + w.numel()].view_as(w)
        off += w.numel()
        w.grad = g.clone() if has > 0 else None


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
        self.db = dbTrain
        self.net = netPrepareForTrain(net.to(self.device), bp)
        set_backprop_depth(self.net, bp)
        self.loader = _ImageLoader(net.meta["normalization"]["averageImage"], opts.numThreads)
        first = self.loader([dbTrain.dbPath + dbTrain.dbImageFns[0]])[0]
        self.origImS = min(first.shape[:2])
        self.auxData = {"negCache": [np.zeros(0, np.int64) for _ in range(dbTrain.numQueries)]}
        self.qFeat = self.dbFeat = None

    def set_cache(self, qFeat: np.ndarray, dbFeat: np.ndarray) -> None:
        self.qFeat = torch.from_numpy(np.ascontiguousarray(qFeat, np.float32)).to(self.device)
        self.dbFeat = torch.from_numpy(np.ascontiguousarray(dbFeat, np.float32)).to(self.device)

    def refresh_cache(self, ID: str = "cache") -> None:
        """computeAllFeats on the training set with the current network (the refresh)."""
        self.set_cache(*computeAllFeats(self.db, self.net, self.opts, ID))

    def batch(self, qIDs, lr: float, rng: np.random.Generator) -> float:
        """One batch of trainWeakly's epoch loop (see ``_train_batch``); the batch loss."""
        if self.qFeat is None:
            raise ValueError("TupleTrainer.batch: no feature cache (call set_cache or refresh_cache first)")
        return _train_batch(self.net, self.db, qIDs, self.qFeat, self.dbFeat, self.auxData, self.opts, rng,
                            self.loader, self.origImS, lr, self.device)

    def close(self) -> None:
        self.loader.pool.shutdown(wait=True)


# ----- the end-of-epoch save and tests

def _end_of_epoch(s: _Session, iEpoch: int) -> None:
    """saveNet; on test epochs (every epochTestFrequency, and the last) the recalls on
    dbVal; the cache recomputed on dbTrain (and its recalls on test epochs), saved
    again with the results.  The first save of a test epoch is marked
    ``auxData.epochTestsPending`` (cleared by the second), so that a run stopped in
    between runs the missing tests when resumed (:func:`_finish_epoch_tests`)."""
    opts = s.opts
    ID = f"ep{iEpoch:06d}_latest"
    testNow = iEpoch == opts.nEpoch or iEpoch % opts.epochTestFrequency == 0
    if testNow:
        s.auxData["epochTestsPending"] = 1
    _save(s, ID, f"epoch-end {iEpoch}")
    distributed.on_rank0(lambda: _remove_cache(opts, iEpoch), "remove the mid-epoch cache")
    if testNow:
        _val_test(s, iEpoch)
    q, d = computeAllFeats(s.dbTrain, s.net, opts, f"{ID}_train")
    s.set_cache(q, d)
    if testNow:
        _train_test_and_save(s, iEpoch, q, d)


def _tensorboard_epoch(s: _Session, iEpoch: int, lr: float) -> None:
    """The epoch's scalars to TensorBoard (opts.tensorboard; not in MATLAB): mean batch
    loss, learning rate and, on test epochs, the recalls and rank losses just appended."""
    if s.tb is None or s.tb.w is None:
        return
    opts, obj = s.opts, s.obj
    tested = iEpoch == opts.nEpoch or iEpoch % opts.epochTestFrequency == 0
    last = lambda part: (np.asarray(obj[part]["recall"]).reshape(len(opts.recallNs), -1)[:, -1],
                         float(np.asarray(obj[part]["rankloss"]).ravel()[-1]))
    losses = np.asarray(obj["train"]["loss"]).ravel()[-s.nBatches:]
    s.tb.epoch(iEpoch, lr, losses, last("val") if tested else None, last("train") if tested else None)


def _val_test(s: _Session, iEpoch: int) -> None:
    valID = f"ep{iEpoch:06d}_latest_val"
    qv, dv = computeAllFeats(s.dbVal, s.net, s.opts, valID)
    rec, rl = testNet(s.dbVal, s.opts, valID, qv, dv, s.log)
    s.obj["val"]["recall"] = _append_col(s.obj["val"]["recall"], rec)
    s.obj["val"]["rankloss"] = _append_col(s.obj["val"]["rankloss"], rl)


def _train_test_and_save(s: _Session, iEpoch: int, q: np.ndarray, d: np.ndarray) -> None:
    ID = f"ep{iEpoch:06d}_latest"
    rec, rl = testNet(s.dbTrain, s.opts, f"{ID}_train", q, d, s.log)
    s.obj["train"]["recall"] = _append_col(s.obj["train"]["recall"], rec)
    s.obj["train"]["rankloss"] = _append_col(s.obj["train"]["rankloss"], rl)
    s.auxData.pop("epochTestsPending", None)
    _save(s, ID, f"epoch-end {iEpoch}")
    if s.opts.doDraw:
        _draw(s.obj, s.opts, s.auxData)


def _tests_pending(opts: TrainWeaklyOpts, obj: dict, auxData: dict) -> bool:
    """Whether the end-of-epoch checkpoint of epoch startEpoch-1 was saved before that
    epoch's tests ran: its mark, or (checkpoints of MATLAB or older matnet, tested
    every epoch) a recall history one column short."""
    if "epochTestsPending" in auxData:
        return bool(auxData["epochTestsPending"])
    nCols = np.asarray(obj["val"]["recall"]).size // len(opts.recallNs)
    return opts.epochTestFrequency == 1 and nCols == opts.startEpoch - 2


def _finish_epoch_tests(s: _Session) -> None:
    """The tests of epoch startEpoch-1 that its run did not finish, on the resumed
    network: as an uninterrupted run, with the cache (the previous epoch's features of
    dbTrain, just computed) as the train features, then its second save."""
    if not s.testsPending:
        return
    e = s.opts.startEpoch - 1
    _say(f"trainWeakly: epoch {e} was saved but not tested: running its tests first")
    s.log.write(f"epoch {e}: saved but not tested, testing it first")
    _val_test(s, e)
    _train_test_and_save(s, e, s.qFeat.cpu().numpy(), s.dbFeat.cpu().numpy())
    s.testsPending = False


def _save(s: _Session, ID: str, description: str) -> None:
    """saveNet, by rank 0 only."""
    fn = distributed.on_rank0(lambda: saveNet(s.net, s.obj, s.opts, s.auxData, ID, description), "saveNet")
    s.log.write(f"saved {fn} ({description})")


def _cache_fns(opts: TrainWeaklyOpts, iEpoch: int, iBatch: int):
    """Feature cache saved with the mid-epoch checkpoint before batch ``iBatch``
    (query, database).  Named by batch, so a run killed between writing a new cache and
    its checkpoint resumes the older checkpoint with its own cache."""
    p = f"{opts.outPrefix}{opts.sessionID}_ep{iEpoch:06d}_cache_b{iBatch:06d}"
    return f"{p}_q.bin", f"{p}_db.bin"


def _remove_cache(opts, iEpoch, keep=()):
    """Delete the mid-epoch caches of epoch ``iEpoch`` (except the files in ``keep``)."""
    folder = os.path.dirname(opts.outPrefix) or "."
    head = f"{os.path.basename(opts.outPrefix)}{opts.sessionID}_ep{iEpoch:06d}_cache_b"
    keep = {os.path.basename(fn) for fn in keep}
    for name in os.listdir(folder):
        if re.fullmatch(rf"{re.escape(head)}\d{{6}}_(q|db)\.bin", name) and name not in keep:
            os.remove(os.path.join(folder, name))


def _save_mid(net, obj, opts, auxData, ID, iEpoch, iBatch, rng, qFeat, dbFeat):
    """A mid-epoch save (by rank 0): the state before batch ``iBatch``, with the feature
    cache and the random state so that startEpoch=iEpoch continues exactly from here."""
    from converters.bin_features import write_bin
    auxData["resumeBatch"] = iBatch - 1
    auxData["rngState"] = rng.bit_generator.state

    def save():
        fns = _cache_fns(opts, iEpoch, iBatch)
        for fn, f in zip(fns, (qFeat, dbFeat)):
            write_bin(fn, f.cpu().numpy())  # atomic (a temporary file renamed)
        saveNet(net, obj, opts, auxData, ID, f"epoch {iEpoch} batch {iBatch}")
        _remove_cache(opts, iEpoch, keep=fns)  # the previous save's, now superseded
    distributed.on_rank0(save, "mid-epoch save")


def _draw(obj, opts, auxData):
    """plotResults, by rank 0 only."""
    from ..plots import plotResults
    distributed.on_rank0(lambda: plotResults(obj, opts, auxData, outFn=f"{opts.outPrefix}{opts.sessionID}_training.png")
                         and None, "plotResults")


# ----- options given at resume, temporaries

def _given_options(opts: TrainWeaklyOpts | None, kw: dict) -> dict:
    """The options the caller set (checked values): the keywords, and the fields of
    ``opts`` that differ from the defaults."""
    default, given = TrainWeaklyOpts(), (opts or TrainWeaklyOpts()).replace(**kw)
    return {n: getattr(given, n) for n in given.names()
            if n in kw or opts is not None and getattr(opts, n) != getattr(default, n)}


def warn_ignored_options(given: dict, used: TrainWeaklyOpts) -> None:
    """One warning listing each option given at resume that the run does not use
    (the checkpoint's value wins, as in MATLAB), with both values."""
    ignored = []
    for n, v in given.items():
        u = getattr(used, n)
        if n == "backPropToLayer" and isinstance(v, str):
            u = used.backPropToLayerName
        if n == "checkpoint0suffix" and v and not v.endswith("_"):
            v += "_"  # trainWeakly appends '_' to a suffix it is given
        if v != u:
            ignored.append(f"{n} (saved {u!r}, given {v!r})")
    if ignored:
        warnings.warn(f"trainWeakly: resuming session {used.sessionID} with its saved options, as MATLAB "
                      f"does; ignored: {', '.join(ignored)}", stacklevel=3)


_FEATS = r"ep\d{6}_latest_(train|val)_(q|db)\.bin"  # computeAllFeats' files


def remove_session_temporaries(opts: TrainWeaklyOpts) -> None:
    """Delete what a killed run of this session may have left in its folder: temporary,
    partial and shard files of its checkpoints, mid-epoch caches and feature files, and
    complete feature files of computeAllFeats (deleted after reading)."""
    folder = os.path.dirname(opts.outPrefix) or "."
    base = re.escape(os.path.basename(opts.outPrefix) + opts.sessionID)
    ours = rf"{base}_(latest\.mat|ep\d{{6}}_latest\.mat|ep\d{{6}}_cache_b\d{{6}}_(q|db)\.bin|{_FEATS})"
    resumable = r"\.shard\d+of\d+(\.json)?|(\.shard\d+of\d+)?\.partial(\.json)?"  # serialAllFeats' state
    temporary = re.compile(rf"{ours}({resumable})|{temporary_regex(rf'{ours}({resumable})?')}")
    features = re.compile(rf"{base}_{_FEATS}")
    for name in os.listdir(folder):
        if temporary.fullmatch(name) or features.fullmatch(name):
            try:
                os.remove(os.path.join(folder, name))
            except FileNotFoundError:
                pass
