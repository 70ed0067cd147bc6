"""saveNet and checkpoint loading: ``<outPrefix><sessionID>_<ID>.mat`` holding net,
obj, opts and auxData as MATLAB's trainWeakly saves them (-v7.3, atomic)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from converters.atomic_file import atomic_path
from converters.matfile import loadmat, savemat, whosmat
from converters.network import net_from_vars, net_to_struct

from .opts import TrainWeaklyOpts


def checkpointFn(opts: TrainWeaklyOpts, ID: str) -> str:
    """``<outPrefix><sessionID>_<ID>.mat`` (ID e.g. 'ep000003_latest' or 'latest')."""
    return f"{opts.outPrefix}{opts.sessionID}_{ID}.mat"


def _obj_to_mat(obj: dict) -> dict:
    return {k: (_obj_to_mat(v) if isinstance(v, dict) else np.asarray(v, np.float64)) for k, v in obj.items()}


def _obj_from_mat(m: dict) -> dict:
    out = {}
    for k, v in m.items():
        if isinstance(v, dict):
            out[k] = _obj_from_mat(v)
        else:
            a = np.asarray(v, np.float64)
            out[k] = a.reshape(1, -1) if k == "loss" or (k == "rankloss" and a.size == 0) else \
                (a.reshape(a.shape[0], -1) if a.ndim == 2 else a.reshape(-1, 1))
    return out


def _aux_to_mat(aux: dict) -> dict:
    out = dict(aux)
    # negative caches as MATLAB's cell of 1-based column vectors
    cells = np.empty((len(aux["negCache"]), 1), dtype=object)
    for i, c in enumerate(aux["negCache"]):
        cells[i, 0] = np.asarray(c, np.float64).reshape(-1, 1) + 1
    out["negCache"] = cells
    out["epochStartTime"] = list(aux["epochStartTime"])
    if "rngState" in aux:
        out["rngState"] = json.dumps(aux["rngState"])
    return out


def _aux_from_mat(m: dict) -> dict:
    out = dict(m)
    cache = m["negCache"]
    cache = list(cache.reshape(-1, order="F")) if isinstance(cache, np.ndarray) else list(cache)
    out["negCache"] = [np.asarray(c, np.float64).reshape(-1).astype(np.int64) - 1 if c is not None
                       else np.zeros(0, np.int64) for c in cache]
    t = m.get("epochStartTime", [])
    out["epochStartTime"] = [t] if isinstance(t, str) else [str(x) for x in np.asarray(t, object).reshape(-1)]
    if isinstance(m.get("rngState"), str):
        out["rngState"] = json.loads(m["rngState"])
    for k in ("numTrain", "resumeBatch", "resumeEpoch", "epochTestsPending"):
        if k in m:
            out[k] = int(np.asarray(m[k]).reshape(-1)[0])
    return out


def saveNet(net, obj: dict, opts: TrainWeaklyOpts, auxData: dict, ID: str, description: str = "",
            verbose: bool = False) -> str:
    """saveNet.m: write net (with momentum), obj, opts, auxData to
    ``<outPrefix><sessionID>_<ID>.mat`` and copy it to ``<sessionID>_latest.mat``;
    both written under a temporary name and renamed.  Returns the file name."""
    if verbose:
        print(f"saving net {opts.sessionID} {ID} : {description}")
    fn = checkpointFn(opts, ID)
    latest = checkpointFn(opts, "latest")
    savemat(fn, {"net": net_to_struct(net), "obj": _obj_to_mat(obj), "opts": opts.to_struct(),
                 "auxData": _aux_to_mat(auxData)})  # atomic (a temporary file renamed)
    with atomic_path(latest) as tmp:
        shutil.copyfile(fn, tmp)
    return fn


def load_checkpoint(fn, what=("net", "obj", "opts", "auxData")) -> dict:
    """The saved variables of a checkpoint: ``net`` (SimpleNN with momentum), ``obj``
    (dict of numpy arrays in MATLAB shapes), ``opts`` (TrainWeaklyOpts), ``auxData``
    (negCache as 0-based id arrays)."""
    fn = Path(fn)
    if not fn.is_file():
        raise FileNotFoundError(f"{fn}: checkpoint not found")
    have = {w[0] for w in whosmat(fn)}
    missing = [w for w in what if w not in have]
    if missing:
        raise ValueError(f"{fn}: not a trainWeakly checkpoint (missing {', '.join(missing)})")
    m = loadmat(fn, variable_names=list(what))
    out = {}
    if "net" in what:
        out["net"] = net_from_vars({"net": m["net"]}, str(fn))
    if "obj" in what:
        out["obj"] = _obj_from_mat(m["obj"])
    if "opts" in what:
        try:
            out["opts"] = TrainWeaklyOpts.from_struct(m["opts"])
        except ValueError as e:
            raise ValueError(f"{fn}: saved opts: {e}") from None
    if "auxData" in what:
        out["auxData"] = _aux_from_mat(m["auxData"])
    return out


def momentum_of(net) -> list:
    """Every layer's momentum buffers (copies), to carry them over netPrepareForTrain."""
    return [None if l.momentum is None else [m.detach().clone() for m in l.momentum] for l in net.layers]


def restore_momentum(net, saved: list) -> None:
    for l, m in zip(net.layers, saved):
        if m is not None and l.momentum is not None:
            l.momentum = [x.to(w.device) for x, w in zip(m, l.weights)]
