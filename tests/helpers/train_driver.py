"""Run trainWeakly on the synthetic set in a subprocess and SIGKILL it at a chosen point.

    python train_driver.py '<json>'

json: {"data": root of make_places, "pre": folder of the tiny net, "out": outPrefix,
"kill": [substring, n] (optional), "opts": trainWeakly options}.  With "kill", the
process kills itself (SIGKILL: no cleanup, no finally) at the n-th os.fsync of a file
whose path contains the substring: every durable write of the port ends in one
(feature chunks, feature files, mid-epoch caches), so this reaches any stage of a run.
"""
import json
import os
import signal
import sys
import types

from matnet.datasets.local_paths import env_name
from matnet.layers.heads import layerTotalMaxPool, layerWholeL2Normalize
from matnet.simplenn import SimpleNN

HEAD = ["max:core", "postL2"]


def simple_head(net, opts, dbTrain):
    """A parameter-free head in place of addLayers (no clustering: fast and deterministic)."""
    return SimpleNN(list(net.layers) + [layerTotalMaxPool(HEAD[0]), layerWholeL2Normalize(HEAD[1])], net.meta)


def head_module() -> types.ModuleType:
    """A stand-in matnet.add_layers module with :func:`simple_head`."""
    fake = types.ModuleType("matnet.add_layers")
    fake.addLayers = simple_head
    fake.head_layer_names = lambda method: list(HEAD)
    return fake


def install_head() -> types.ModuleType:
    """:func:`head_module` installed for this process."""
    sys.modules["matnet.add_layers"] = fake = head_module()
    return fake


def training_env(monkeypatch, pre, out) -> None:
    """A training test's environment: loadNet's base networks in ``pre``, outPrefix ``out``/,
    and :func:`simple_head` in place of addLayers (undone after the test)."""
    monkeypatch.setenv(env_name("pretrainedCNNs"), str(pre))
    monkeypatch.setenv(env_name("outPrefix"), str(out) + "/")
    monkeypatch.setitem(sys.modules, "matnet.add_layers", head_module())


def kill_at_fsync(substring: str, n: int) -> None:
    real, seen = os.fsync, [0]

    def fsync(fd):
        real(fd)
        if substring in os.readlink(f"/proc/self/fd/{fd}"):
            seen[0] += 1
            if seen[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
    os.fsync = fsync


def main(spec: dict) -> None:
    os.environ[env_name("pretrainedCNNs")] = spec["pre"]
    os.environ[env_name("outPrefix")] = spec["out"]
    install_head()
    from matnet.synthetic import dbSynthetic
    from matnet.train.train_weakly import trainWeakly
    if spec.get("kill"):
        kill_at_fsync(*spec["kill"])
    trainWeakly(dbSynthetic("train", spec["data"]), dbSynthetic("val", spec["data"]), **spec["opts"])


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))


OPTS = dict(netID="tiny", layerName="conv3", batchSize=2, nNegChoice=8, nNegCap=3, nNegCache=4, margin=0.5,
            learningRate=0.05, useGPU=False, numThreads=2, saveFrequency=4, compFeatsFrequency=6,
            nTestSample=1000, nTestRankSample=12, recallNs=[1, 2, 5, 10], backPropToLayer="conv2")
