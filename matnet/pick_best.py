"""getBestEpoch / pickBestNet: choose the epoch with the best validation recall."""
from __future__ import annotations

import os

import numpy as np

from converters.network import save_net

from .datasets.local_paths import localPaths
from .plots import plot_recall_at_n, plotResults
from .train.checkpoint import load_checkpoint


def getBestEpoch(recalls, recallNs, N: int = 5, epochs=None) -> int:
    """getBestEpoch.m: the 1-based epoch (column of ``recalls``, nRecallNs x nEpochs)
    with the best recall@N; ties are broken by recall@(smaller N) going down to
    recallNs[0], then by the larger Ns in increasing order, then the earliest epoch.
    Values within 1e-6 of the maximum count as equal.

    ``epochs`` (optional, not in MATLAB): the epoch each column was measured after;
    a history that lacks an epoch, or whose column count is not the number of
    ``epochs``, is refused, naming both (MATLAB would silently return the wrong
    epoch, a column's index)."""
    recalls = np.asarray(recalls, dtype=np.float64)
    recallNs = [int(n) for n in np.asarray(recallNs).reshape(-1)]
    if recalls.ndim == 1:
        recalls = recalls[:, None]
    if epochs is not None:
        epochs = [int(e) for e in epochs]
        if recalls.ndim == 2 and len(epochs) != recalls.shape[1]:
            raise ValueError(f"getBestEpoch: the recall history has {recalls.shape[1]} columns but {len(epochs)} "
                             f"epochs were tested ({_epoch_list(epochs)})")
        check_epochs(epochs, max(epochs, default=0), "getBestEpoch")
    if recalls.shape[0] != len(recallNs):
        raise ValueError(f"getBestEpoch: recalls has {recalls.shape[0]} rows but there are "
                         f"{len(recallNs)} recallNs")
    if recalls.shape[1] == 0:
        raise ValueError("getBestEpoch: no epochs (recalls has no columns)")
    if N not in recallNs:
        raise ValueError(f"getBestEpoch: N={N} is not one of recallNs {recallNs}")
    posN = recallNs.index(N)
    order = list(range(posN, -1, -1)) + list(range(posN + 1, len(recallNs)))
    potential = np.ones(recalls.shape[1], dtype=bool)
    for p in order:
        best = recalls[p, potential].max()
        potential &= np.abs(recalls[p] - best) < 1e-6
        if potential.sum() <= 1:
            break
    return int(np.flatnonzero(potential)[0]) + 1


def check_epochs(epochs: list[int], nEpochs: int, where: str) -> None:
    """Refuse a recall history whose columns (measured after ``epochs``) are not one
    per epoch 1..nEpochs, naming the missing epochs and how to fill them in."""
    missing = [e for e in range(1, nEpochs + 1) if e not in epochs]
    if missing or len(epochs) != nEpochs:
        first = missing[0] if missing else None
        fix = (f"; resume trainWeakly with startEpoch={first + 1} to run epoch {first}'s tests "
               f"(later epochs are trained again)" if first else "")
        raise ValueError(f"{where}: the recall history has {len(epochs)} columns for {nEpochs} trained epochs: "
                         f"no recall for epoch {', '.join(map(str, missing)) or '?'}{fix}")


def _epoch_list(epochs) -> str:
    return ", ".join(map(str, epochs)) if epochs else "none"


def history_epochs(outPrefix: str, sessionID: str, obj: dict, opts, auxData: dict) -> tuple[list[int], int]:
    """(the epoch of each validation recall column, the number of epochs trained) of
    a run.  Epochs trained are counted from the batch losses (numTrain // batchSize
    per epoch).  When some columns are missing, each ``<sessionID>_ep%06d_latest.mat``
    tells which epochs added one (its history ends with its own epoch's tests)."""
    nRecall = np.asarray(obj["val"]["recall"]).reshape(len(opts.recallNs), -1).shape[1]
    nBatches = int(auxData["numTrain"]) // opts.batchSize
    nEpochs = np.asarray(obj["train"]["loss"]).size // max(nBatches, 1)
    if nRecall == nEpochs:
        return list(range(1, nEpochs + 1)), nEpochs
    epochs, before = [], 0
    latest = f"{outPrefix}{sessionID}_latest.mat"
    for e in range(1, nEpochs + 1):
        fn = f"{outPrefix}{sessionID}_ep{e:06d}_latest.mat"
        if not os.path.isfile(fn):
            raise ValueError(f"{latest}: the recall history has {nRecall} columns for "
                             f"{nEpochs} trained epochs, and {fn} (needed to tell which is missing) does not exist")
        n = np.asarray(load_checkpoint(fn, what=("obj",))["obj"]["val"]["recall"]).size // len(opts.recallNs)
        if n > before:
            epochs.append(e)
        before = max(before, n)
    if len(epochs) != nRecall:  # the files and the history disagree: no column can be trusted
        raise ValueError(f"{latest}: the recall history has {nRecall} columns, but the per-epoch checkpoints "
                         f"({sessionID}_ep*_latest.mat) say {len(epochs)} epochs were tested "
                         f"({_epoch_list(epochs)}); pickBestNet cannot tell which column is which epoch")
    return epochs, nEpochs


def best_net_path(outPrefix: str, sessionID: str) -> str:
    """``<outPrefix><sessionID>_best.mat``: the network pickBestNet chose (a loadable network file)."""
    return f"{outPrefix}{sessionID}_best.mat"


def best_wpca_path(outPrefix: str, sessionID: str, pcaDim: int) -> str:
    """``<outPrefix><sessionID>_best_wpca<pcaDim>.mat``: the chosen network with its WPCA layers."""
    return f"{outPrefix}{sessionID}_best_wpca{int(pcaDim)}.mat"


def pickBestNet(sessionID: str, N: int = 5, verbose: int = 2, outPrefix=None, save: bool = True):
    """pickBestNet.m: the epoch (1-based) with the best validation recall@N of a
    trainWeakly run (getBestEpoch), from ``<outPrefix><sessionID>_latest.mat``, and
    that epoch's network (``<sessionID>_ep%06d_latest.mat``) with meta.sessionID /
    meta.epoch set and momentum removed.  ``verbose`` > 0 prints recall@1..5,10
    off-the-shelf vs trained; > 1 also writes the training plots and the recall@N
    curves as PNGs next to the checkpoints.  Returns (bestEpoch, bestNet).  A history
    without some epoch's recall (a run stopped between an epoch's save and its tests,
    then resumed by a MATLAB-like trainWeakly) is refused naming the epoch, where
    MATLAB picks a wrong one.

    ``save`` (not in MATLAB, which only returns the network): also write it as
    :func:`best_net_path` (``<sessionID>_best.mat``, a file ``load_net``, ``matnet
    inspect/export/evaluate --net`` take), and print the path when ``verbose`` > 0;
    ``<sessionID>_latest.mat`` is the last epoch, not the best."""
    if outPrefix is None:
        outPrefix = localPaths()["outPrefix"]
    res = load_checkpoint(f"{outPrefix}{sessionID}_latest.mat", what=("obj", "opts", "auxData"))
    obj, opts = res["obj"], res["opts"]
    if opts.epochTestFrequency != 1:
        raise ValueError(f"pickBestNet: this code assumes epochTestFrequency==1 (it is {opts.epochTestFrequency})")
    epochs, nEpochs = history_epochs(outPrefix, sessionID, obj, opts, res["auxData"])
    check_epochs(epochs, nEpochs, f"pickBestNet: {outPrefix}{sessionID}_latest.mat")
    bestEpoch = getBestEpoch(obj["val"]["recall"], opts.recallNs, N, epochs=epochs)
    if verbose > 0:
        _print_table(sessionID, bestEpoch, obj, opts)
    if verbose > 1:
        _plots(sessionID, bestEpoch, obj, opts, res["auxData"], outPrefix)
    net = load_checkpoint(f"{outPrefix}{sessionID}_ep{bestEpoch:06d}_latest.mat", what=("net",))["net"]
    net.meta["sessionID"], net.meta["epoch"] = sessionID, bestEpoch
    for l in net.layers:
        l.momentum = None
    if save:
        fn = save_net(net, best_net_path(outPrefix, sessionID))
        if verbose > 0:
            print(f"pickBestNet: the network of epoch {bestEpoch} is {fn}")
    return bestEpoch, net


def _print_table(sessionID, bestEpoch, obj, opts):
    rec = np.asarray(obj["val"]["recall"])
    idx = list(range(min(6, rec.shape[0])))
    print(f"{sessionID} Best epoch: {bestEpoch} (out of {rec.shape[1]})")
    hline = "=" * (len(idx) * 5 - 1 + 14)
    print(hline)
    print("Recall@N      " + " ".join(f"{int(opts.recallNs[i]):04d}" for i in idx))
    print(hline)
    best = rec[idx, bestEpoch - 1]
    if "pretrain" in obj:
        shelf = np.asarray(obj["pretrain"]["val"]["recall"]).reshape(-1)[idx]
        print("off-the-shelf " + " ".join(f"{v:.2f}" for v in shelf))
    print("our trained   " + " ".join(f"{v:.2f}" for v in best))
    if "pretrain" in obj:
        print("trained/shelf " + " ".join(f"{v:.2f}" for v in best / np.maximum(shelf, 1e-12)))


def _plots(sessionID, bestEpoch, obj, opts, auxData, outPrefix):
    """The training curves (``<sessionID>_training.png``, the file trainWeakly's doDraw
    updates) and the validation recall@N, off-the-shelf vs the best epoch
    (``<sessionID>_recall.png``)."""
    plotResults(obj, opts, auxData, outFn=f"{outPrefix}{sessionID}_training.png")
    curves = {}
    if "pretrain" in obj:
        curves["off-the-shelf"] = (opts.recallNs, np.asarray(obj["pretrain"]["val"]["recall"]).reshape(-1))
    curves[f"trained (epoch {bestEpoch})"] = (opts.recallNs, np.asarray(obj["val"]["recall"])[:, bestEpoch - 1])
    plot_recall_at_n(f"{outPrefix}{sessionID}_recall.png", curves,
                     f"{sessionID}\nvalidation set {opts.dbValName}: {opts.netID} {opts.layerName} {opts.method}")
