"""The files of a training session besides its checkpoints (:mod:`.checkpoint`): features
computed through files (computeAllFeats, the checkpoint0 files under a lock), the
feature caches of mid-epoch saves, and the clean-up of what a killed run left
(temporaries, partial and shard files, feature files)."""
from __future__ import annotations

import os
import re
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from converters.atomic_file import remove_stale_temporaries, temporary_regex
from converters.file_lock import file_lock

from .. import distributed
from ..extract import serialAllFeats
from .opts import TrainWeaklyOpts


def bin_path(fn) -> None:
    Path(fn).parent.mkdir(parents=True, exist_ok=True)


def serial_feats(net, imPath, imageFns, outFn, opts: TrainWeaklyOpts) -> None:
    """serialAllFeats into ``outFn``, which appears only when complete (a run killed
    midway leaves ``<outFn>.partial`` or shards, which the next call with the same
    network resumes).  Under torch.distributed the ranks extract their shards and rank
    0 writes the file."""
    bin_path(outFn)
    serialAllFeats(net, imPath, imageFns, outFn, batchSize=opts.computeBatchSize, useGPU=opts.useGPU,
                   numThreads=opts.numThreads, precision=opts.precision)
    net.train()


def checkpoint0_feats(net, imPath, imageFns, outFn, opts: TrainWeaklyOpts) -> None:
    """A checkpoint0 file, computed unless it exists, under the lock ``<outFn>.lock``
    (held by rank 0): runs sharing it compute it once, the others wait, then read it.
    Under the lock, rank 0 first removes what killed runs left of ``outFn``'s own writes
    (its ``*.matnet-tmp``; only rank 0 writes ``outFn``)."""
    bin_path(outFn)
    with file_lock(f"{outFn}.lock") if distributed.is_rank0() else nullcontext():
        if not exists_on_rank0(outFn):
            if distributed.is_rank0():
                remove_stale_temporaries(outFn)
            serial_feats(net, imPath, imageFns, outFn, opts)


def remove_when_read(fn) -> None:
    """Delete a feature file once every rank has read it."""
    distributed.barrier(f"read {fn}")
    if distributed.is_rank0():
        os.remove(fn)


def exists_on_rank0(fn) -> bool:
    """Whether ``fn`` exists, as rank 0 sees it (the same answer on every rank)."""
    return distributed.on_rank0(lambda: os.path.isfile(fn), f"look for {fn}")


def read_feats(fn, n: int, D: int | None = None) -> np.ndarray:
    from converters.bin_features import read_bin
    return read_bin(fn, D=D, n=n)


def computeAllFeats(db, net, opts: TrainWeaklyOpts, ID: str):
    """computeAllFeats (trainWeakly.m): query and database features of ``db`` with the
    current net, through temporary files that are deleted; (qFeat nQ x D, dbFeat N x D)."""
    out = f"{opts.outPrefix}{opts.sessionID}_{ID}"
    qFn, dbFn = f"{out}_q.bin", f"{out}_db.bin"
    serial_feats(net, db.qPath, db.qImageFns, qFn, opts)
    qFeat = read_feats(qFn, db.numQueries)
    remove_when_read(qFn)
    serial_feats(net, db.dbPath, db.dbImageFns, dbFn, opts)
    dbFeat = read_feats(dbFn, db.numImages, qFeat.shape[1])
    remove_when_read(dbFn)
    return qFeat, dbFeat


def checkpoint0_name(opts, dbName, kind, extra=""):
    sfx = opts.checkpoint0suffix + ("fast_" if opts.precision == "fast" else "")  # not MATLAB's features
    return f"{opts.outPrefix}{dbName}_{opts.netID}_{opts.layerName}_{opts.method}_{sfx}{extra}{kind}.bin"


def cache_fns(opts: TrainWeaklyOpts, iEpoch: int, iBatch: int):
    """Feature cache saved with the mid-epoch checkpoint before batch ``iBatch``
    (query, database).  Named by batch, so a run killed between writing a new cache and
    its checkpoint resumes the older checkpoint with its own cache."""
    p = f"{opts.outPrefix}{opts.sessionID}_ep{iEpoch:06d}_cache_b{iBatch:06d}"
    return f"{p}_q.bin", f"{p}_db.bin"


def remove_cache(opts, iEpoch, keep=()):
    """Delete the mid-epoch caches of epoch ``iEpoch`` (except the files in ``keep``)."""
    folder = os.path.dirname(opts.outPrefix) or "."
    head = f"{os.path.basename(opts.outPrefix)}{opts.sessionID}_ep{iEpoch:06d}_cache_b"
    keep = {os.path.basename(fn) for fn in keep}
    for name in os.listdir(folder):
        if re.fullmatch(rf"{re.escape(head)}\d{{6}}_(q|db)\.bin", name) and name not in keep:
            os.remove(os.path.join(folder, name))


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
