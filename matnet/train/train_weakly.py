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
import secrets
import time
from dataclasses import dataclass

import numpy as np
import torch

from .. import distributed
from ..device import compute_device
from ..images import TrainingImageLoader
from ..nettools import layerNames, netOutputDim, netPrepareForTrain, whichLayer
from .batch import train_batch
from .checkpoint import checkpointFn, load_checkpoint, momentum_of, restore_momentum, saveNet
from .opts import TrainWeaklyOpts
from .progress_log import ProgressLog
from .run_checks import check_layer_options, check_negatives, given_options, warn_ignored_options
from .session_files import (bin_path, cache_fns, checkpoint0_feats, checkpoint0_name, computeAllFeats,
                            exists_on_rank0, read_feats, remove_cache, remove_session_temporaries)
from .sgd import batches_per, lr_schedule, set_backprop_depth
from .tensorboard_log import TensorBoardLog, check_tensorboard


def _say(*args) -> None:
    """print, on rank 0 only."""
    if distributed.is_rank0():
        print(*args)


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


def _new_obj(nR: int) -> dict:
    part = lambda: {"loss": np.zeros((1, 0)), "recall": np.zeros((nR, 0)), "rankloss": np.zeros((1, 0))}
    return {"train": part(), "val": part()}


def _append_col(a, col):
    return np.hstack([a, np.asarray(col, np.float64).reshape(-1, 1)])


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
    loader: TrainingImageLoader | None = None
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
        warn_ignored_options(given_options(opts, kw), s.opts)
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
        s.loader.close()  # its threads (before, every trainWeakly call left numThreads idle ones)
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
    if exists_on_rank0(mid):  # a mid-epoch save of the epoch to start: continue it
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
    s.loader = TrainingImageLoader(net.meta["normalization"]["averageImage"], opts.numThreads)
    first = s.loader([dbTrain.dbPath + dbTrain.dbImageFns[0]])[0]
    s.origImS, s.firstImShape = min(first.shape[:2]), first.shape
    bin_path(opts.outPrefix + "x")  # made here, once the network is loaded: a run that fails earlier leaves no folder
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
    opts.dbCheckpoint0 = opts.dbCheckpoint0 or checkpoint0_name(opts, dbTrain.name, "db")
    opts.qCheckpoint0 = opts.qCheckpoint0 or checkpoint0_name(opts, dbTrain.name, "q")
    opts.dbCheckpoint0val = opts.dbCheckpoint0val or checkpoint0_name(opts, dbVal.name, "db")
    opts.qCheckpoint0val = opts.qCheckpoint0val or checkpoint0_name(opts, dbVal.name, "q")
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
            opts.dbCheckpoint0 = checkpoint0_name(opts, dbTrain.name, "db", extra)
            opts.qCheckpoint0 = checkpoint0_name(opts, dbTrain.name, "q", extra)
    return net, obj, opts, auxData


# ----- initial features and test0

def _initial_features(s: _Session) -> None:
    """The feature cache to mine on: the checkpoint0 files (computed if missing), or
    the cache saved with a mid-epoch checkpoint; with test0, the recalls of the
    initial network on dbVal and dbTrain (obj.pretrain)."""
    opts, dbTrain = s.opts, s.dbTrain
    if s.resumeBatch:
        cq, cdb = cache_fns(opts, opts.startEpoch, s.resumeBatch + 1)
        qFeat = read_feats(cq, dbTrain.numQueries)
        dbFeat = read_feats(cdb, dbTrain.numImages, qFeat.shape[1])
    else:
        checkpoint0_feats(s.net, dbTrain.qPath, dbTrain.qImageFns, opts.qCheckpoint0, opts)
        checkpoint0_feats(s.net, dbTrain.dbPath, dbTrain.dbImageFns, opts.dbCheckpoint0, opts)
        if opts.test0:
            _test0(s)
        qFeat = read_feats(opts.qCheckpoint0, dbTrain.numQueries)
        dbFeat = read_feats(opts.dbCheckpoint0, dbTrain.numImages, qFeat.shape[1])
    nDims = qFeat.shape[1]
    outDim = netOutputDim(s.net, s.firstImShape)[0]
    if outDim != nDims:
        raise ValueError(f"{opts.qCheckpoint0}: features have {nDims} dimensions, the network outputs {outDim}")
    s.set_cache(qFeat, dbFeat)


def _test0(s: _Session) -> None:
    """obj.pretrain.{val,train}: testFromFn on the initial network's features."""
    from ..recall_at_n import testFromFn
    opts, dbVal = s.opts, s.dbVal
    checkpoint0_feats(s.net, dbVal.qPath, dbVal.qImageFns, opts.qCheckpoint0val, opts)
    checkpoint0_feats(s.net, dbVal.dbPath, dbVal.dbImageFns, opts.dbCheckpoint0val, opts)

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
        loss = train_batch(s, qIDs, lr, rng)
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
    distributed.on_rank0(lambda: remove_cache(opts, iEpoch), "remove the mid-epoch cache")
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


def _save_mid(net, obj, opts, auxData, ID, iEpoch, iBatch, rng, qFeat, dbFeat):
    """A mid-epoch save (by rank 0): the state before batch ``iBatch``, with the feature
    cache and the random state so that startEpoch=iEpoch continues exactly from here."""
    from converters.bin_features import write_bin
    auxData["resumeBatch"] = iBatch - 1
    auxData["rngState"] = rng.bit_generator.state

    def save():
        fns = cache_fns(opts, iEpoch, iBatch)
        for fn, f in zip(fns, (qFeat, dbFeat)):
            write_bin(fn, f.cpu().numpy())  # atomic (a temporary file renamed)
        saveNet(net, obj, opts, auxData, ID, f"epoch {iEpoch} batch {iBatch}")
        remove_cache(opts, iEpoch, keep=fns)  # the previous save's, now superseded
    distributed.on_rank0(save, "mid-epoch save")


def _draw(obj, opts, auxData):
    """plotResults, by rank 0 only."""
    from ..plots import plotResults
    distributed.on_rank0(lambda: plotResults(obj, opts, auxData, outFn=f"{opts.outPrefix}{opts.sessionID}_training.png")
                         and None, "plotResults")


