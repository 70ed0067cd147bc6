"""A training run's checks of its options against its datasets and network (before any
feature is computed), and the warning for options given at resume that the saved ones
override."""
from __future__ import annotations

import warnings

import numpy as np

from .opts import TrainWeaklyOpts


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


def given_options(opts: TrainWeaklyOpts | None, kw: dict) -> dict:
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
