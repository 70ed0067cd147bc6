"""The pretrained base networks: loadNet (an ImageNet-pretrained MatConvNet model from
``localPaths().pretrainedCNNs``, by network ID) and the ID -> file table."""
from __future__ import annotations

from pathlib import Path

from converters.matfile import loadmat
from converters.network import net_from_vars

from .datasets.local_paths import env_name, localPaths
from .nettools import cropToLayer, swapLayersForEfficiency
from .simplenn import SimpleNN

# netID -> file in the pretrained folder (MatConvNet's names; 'tiny' is matnet's demo net)
PRETRAINED = {"vd16": "imagenet-vgg-verydeep-16.mat", "vd19": "imagenet-vgg-verydeep-19.mat",
              "caffe": "imagenet-caffe-ref.mat", "places": "places-caffe.mat",
              "tiny": "matnet-tiny.mat"}


def _pretrained_dir() -> Path:
    return Path(localPaths()["pretrainedCNNs"])


def _read_model(fn: Path) -> SimpleNN:
    """A MatConvNet model file (variables ``layers`` and ``meta``, or ``net``)."""
    if not fn.is_file():
        raise FileNotFoundError(f"{fn}: pretrained network not found (download it from MatConvNet's "
                                f"pretrained models, or set pretrainedCNNs / {env_name('pretrainedCNNs')})")
    return net_from_vars(loadmat(fn), str(fn))


def is_network_path(netID) -> bool:
    """Whether loadNet's ``netID`` names a file rather than an ID (a path separator or an
    extension in it)."""
    return not isinstance(netID, str) or any(c in netID for c in "/\\") or Path(netID).suffix != ""


def loadNet(netID, layerName: str | None = None, pretrainedDir=None) -> SimpleNN:
    """loadNet.m: the model ``netID`` (vd16, vd19, caffe, places; tiny = matnet's demo
    net) without ``meta.classes``, cropped after ``layerName`` (all layers if None),
    relu/max-pool pairs swapped; ``meta.netID``, ``meta.sessionID`` =
    '<netID>_offtheshelf[_<layerName>]' and ``meta.epoch`` = 0 set.

    Not in MATLAB (whose loadNet knows the four IDs only): ``netID`` may also be a path
    (str or Path with a folder or an extension), read with :func:`matnet.load_net` and
    prepared the same way; its ``meta.netID`` is the ID whose file it is named as
    (``imagenet-vgg-verydeep-16.mat`` -> vd16), else the file's stem."""
    if netID not in PRETRAINED:
        if is_network_path(netID):
            from converters.network import load_net
            fn = Path(netID).expanduser()
            net = load_net(fn)
            netID = next((k for k, v in PRETRAINED.items() if v == fn.name), fn.stem)
            return _prepare(net, netID, layerName)
        raise ValueError(f"loadNet: unknown network ID '{netID}' (known: {', '.join(PRETRAINED)}, or a network "
                         f"file's path); to read any network file as it is, use matnet.load_net(path)")
    folder = Path(pretrainedDir) if pretrainedDir is not None else _pretrained_dir()
    return _prepare(_read_model(folder / PRETRAINED[netID]), netID, layerName)


def _prepare(net: SimpleNN, netID: str, layerName: str | None) -> SimpleNN:
    """loadNet.m's steps after reading the model."""
    net.meta.pop("classes", None)
    if layerName is not None:
        net = cropToLayer(net, layerName)
    net = swapLayersForEfficiency(net)
    net.meta["netID"] = netID
    net.meta["sessionID"] = f"{netID}_offtheshelf" + (f"_{layerName}" if layerName is not None else "")
    net.meta["epoch"] = 0
    return net
