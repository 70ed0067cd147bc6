"""One rank of a multi-process test (started by torchrun or by tests/test_distributed.py).

``python tests/helpers/ddp_worker.py CONFIG.json``: joins the process group torchrun's
variables describe, then runs CONFIG's phases in order, all ranks alike:
  {"kind": "train", "kw": {...}}                 trainWeakly(dbTrain, dbVal, **kw)
  {"kind": "train", "kw": {...}, "stop_at": k}   ... raising _Stop at the k-th batch (every rank)
  {"kind": "train", "kw": {...}, "die_at": k, "rank": r, "how": "exit"|"hang"}
                                                 rank r exits (or hangs) at its k-th batch
  {"kind": "extract", "which": "db"|"q", "out": fn, "batchSize": b}   matnet features
  {"kind": "extract", ..., "rank": r, "die_after": k}  rank r exits after k chunks of its shard
CONFIG also holds "data" (make_places root + pretrained tiny net) and "out" (outPrefix);
``"rank_kw": {"1": {...}}`` adds options for one rank.  A phase's error ends the
process with status 3 and ``WORKER-ERROR <type>: <message>`` on stderr.
"""
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


class _Stop(Exception):
    pass


def _simple_head(net, opts, dbTrain):
    """A parameter-free head in place of addLayers (as tests/test_train_weakly.py)."""
    from matnet.layers.heads import layerTotalMaxPool, layerWholeL2Normalize
    from matnet.simplenn import SimpleNN
    return SimpleNN(list(net.layers) + [layerTotalMaxPool("max:core"), layerWholeL2Normalize("postL2")], net.meta)


def _head_names(method):
    return ["max:core", "postL2"]  # the layers _simple_head adds


def use_simple_head(setattr_=setattr) -> None:
    """Make trainWeakly's addLayers the parameter-free head (no clustering: fast, deterministic)."""
    import matnet.add_layers as al
    setattr_(al, "addLayers", _simple_head)
    setattr_(al, "head_layer_names", _head_names)


def main(cfg_fn):
    cfg = json.loads(Path(cfg_fn).read_text())
    data = Path(cfg["data"])
    os.environ["MATNET_PRETRAINED_CNNS"] = str(data / "pre")
    os.environ["MATNET_OUT_PREFIX"] = str(cfg["out"]) + "/"
    use_simple_head()

    import torch.distributed as dist
    from matnet import distributed
    from matnet.synthetic import dbSynthetic
    from matnet.train import train_weakly as tw
    distributed.init_from_env()
    r = distributed.rank()
    dbT, dbV = dbSynthetic("train", data / "data"), dbSynthetic("val", data / "data")
    real_batch = tw.train_batch
    try:
        for ph in cfg["phases"]:
            if ph["kind"] == "train":
                kw = {**cfg.get("opts", {}), **ph["kw"], **cfg.get("rank_kw", {}).get(str(r), {})}
                calls = {"n": 0}

                def batch(*a, ph=ph, calls=calls, **k):
                    calls["n"] += 1
                    if calls["n"] == ph.get("stop_at"):
                        raise _Stop()
                    if calls["n"] == ph.get("die_at") and r == ph["rank"]:
                        if ph["how"] == "exit":
                            os._exit(7)
                        time.sleep(3600)
                    return real_batch(*a, **k)
                tw.train_batch = batch
                try:
                    tw.trainWeakly(dbT, dbV, **kw)
                except _Stop:
                    pass
                tw.train_batch = real_batch
            elif ph["kind"] == "extract":  # through the command, in this process group
                from matnet import feature_files
                from matnet.cli import main as matnet_main
                if ph.get("rank") == r:  # this rank dies after writing die_after chunks of its shard
                    real_append, chunks = feature_files.PartialFeatures.append, {"n": 0}

                    def append(self, feats, chunks=chunks, real_append=real_append, ph=ph):
                        real_append(self, feats)
                        chunks["n"] += 1
                        if chunks["n"] == ph["die_after"]:
                            os._exit(7)
                    feature_files.PartialFeatures.append = append
                rc = matnet_main(["features", "--net", str(data / "pre" / "matnet-tiny.mat"), "--dataset",
                                  f"spec:{data / 'data' / 'datasets' / 'synth_train.mat'}", "--root",
                                  str(data / "data" / "images"), "--which", ph["which"], "--out", ph["out"],
                                  "--batch-size", str(ph["batchSize"]), "--device", "cpu"])
                if rc:
                    raise RuntimeError(f"matnet features: exit status {rc}")
    except Exception as e:
        print(f"WORKER-ERROR {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        os._exit(3)  # no teardown: the other ranks may be gone
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
