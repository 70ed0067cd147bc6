"""MatConvNet / NetVLAD network files <-> :class:`matnet.SimpleNN`, without MATLAB.

Reads (``load_net``):

* the released NetVLAD networks and trainWeakly checkpoints: a variable ``net``
  (checkpoints also hold ``opts``, ``obj``, ``auxData``, ignored here) whose
  ``layers`` mix MatConvNet structs and NetVLAD classdef objects (``layerVLAD``,
  ``layerVLADv2`` saved through ``saveobj``; ``layerWholeL2Normalize``,
  ``layerTotalMaxPool``, ``layerTotalAvgPool`` as plain objects);
* struct-converted variants (``*_struct.mat``): the classdef layers are structs with
  ``type`` 'custom'; their class is told by their weights (3: layerVLADv2, 2:
  layerVLAD) or, without weights, by their name (``...L2...``: layerWholeL2Normalize,
  ``max...``: layerTotalMaxPool, ``avg...``: layerTotalAvgPool);
* MatConvNet models (``imagenet-vgg-verydeep-16.mat``, ``imagenet-caffe-ref.mat``):
  variables ``layers`` + ``meta``, or the older ``layers`` + ``normalization`` +
  ``classes`` with ``filters``/``biases`` conv fields.

Like ``relja_simplenn_tidy`` + ``vl_simplenn_tidy``, top-level ``classes``,
``normalization``, ``netID``, ``sessionID`` and ``epoch`` move into ``net.meta`` and
``normalization.cropSize`` is derived from ``imageSize``/``border`` when absent;
layers are recognised by type/class and name, never by position, and shapes MATLAB
truncated (trailing singleton dims) are rebuilt by the layer classes.

Writes (``save_net``): ``net`` as MATLAB NetVLAD saves it (``-v7.3``, same class
names and properties, saveobj struct for layerVLAD/v2) or, with ``struct=True``,
the plain-struct variant.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import matnet.layers.heads  # noqa: F401  (registers the NetVLAD classdef layers)
import matnet.layers.vlad  # noqa: F401
from matnet import LayerError, SimpleNN, layer_from_struct

from .matfile import MatFileError, MatObject, loadmat, savemat

__all__ = ["load_net", "save_net", "net_from_vars", "net_to_struct", "SAVEOBJ_CLASSES"]

# NetVLAD classes whose objects MATLAB writes through saveobj (relja_saveobj).
SAVEOBJ_CLASSES = frozenset({"layerVLAD", "layerVLADv2"})
# Fields relja_simplenn_tidy moves from the top of ``net`` into ``net.meta``.
_TO_META = ("classes", "normalization", "netID", "sessionID", "epoch")


def _custom_class(s: dict) -> str | None:
    """The NetVLAD class of a struct-converted classdef layer (type 'custom')."""
    if isinstance(s.get("class"), str):
        return s["class"]
    w = s.get("weights")
    n = len(w) if isinstance(w, list) else (w.size if isinstance(w, np.ndarray) and w.dtype == object else 0)
    if n == 3:
        return "layerVLADv2"
    if n == 2:
        return "layerVLAD"
    name = str(s.get("name", "")).lower()
    if "l2" in name:
        return "layerWholeL2Normalize"
    if name.startswith("max"):
        return "layerTotalMaxPool"
    if name.startswith("avg"):
        return "layerTotalAvgPool"
    return None


def _layer(item, i: int, where: str):
    """One element of ``net.layers`` (struct dict or MatObject) -> matnet Layer."""
    if isinstance(item, MatObject):
        return layer_from_struct(dict(item.props), class_name=item.class_name, index=i)
    if not isinstance(item, dict):
        raise MatFileError(f"{where}: net.layers{{{i + 1}}} is a {type(item).__name__}, "
                           f"not a layer struct or object")
    if item.get("type") == "custom":
        cls = _custom_class(item)
        if cls is None:
            raise MatFileError(f"{where}: net.layers{{{i + 1}}} ('{item.get('name', '')}') is a "
                               f"'custom' struct of unknown class (no weights, name not recognised)")
        s = {k: v for k, v in item.items() if k != "class"}
        return layer_from_struct(s, class_name=cls, index=i)
    return layer_from_struct(item, index=i)


def _tidy_meta(top: dict) -> dict:
    meta = dict(top.get("meta") or {})
    for k in _TO_META:
        if k in top:
            meta[k] = top[k]
    norm = meta.get("normalization")
    if isinstance(norm, dict) and "cropSize" not in norm and "border" in norm and "imageSize" in norm:
        insz = np.asarray(norm["imageSize"], dtype=np.float64).reshape(-1)[:2]
        border = np.asarray(norm["border"], dtype=np.float64).reshape(-1)
        norm = dict(norm)
        norm["cropSize"] = (insz / (insz + border)).reshape(1, 2)
        meta["normalization"] = norm
    return meta


def net_from_vars(variables: dict, where: str = "<memory>") -> SimpleNN:
    """A SimpleNN from a loaded MAT file's variables (``net``, or ``layers`` at top)."""
    if "net" in variables:
        top, label = variables["net"], "variable 'net'"
    elif "layers" in variables:
        top, label = variables, "file"
    else:
        raise MatFileError(f"{where}: no network: expected a variable 'net' or 'layers' "
                           f"(has: {', '.join(variables) or 'nothing'})")
    if not isinstance(top, dict) or "layers" not in top:
        raise MatFileError(f"{where}: {label} has no field 'layers'")
    layers = top["layers"]
    if isinstance(layers, dict):  # a single layer saved as a 1x1 struct
        layers = [layers]
    elif isinstance(layers, np.ndarray) and layers.dtype == object:
        layers = list(layers.reshape(-1, order="F"))
    elif not isinstance(layers, list):
        raise MatFileError(f"{where}: net.layers is a {type(layers).__name__}, not a cell of layers")
    built = []
    for i, item in enumerate(layers):
        try:
            built.append(_layer(item, i, where))
        except LayerError as e:
            raise MatFileError(f"{where}: net.layers{{{i + 1}}}: {e}") from e
    return SimpleNN(built, _tidy_meta(top))


def load_net(path) -> SimpleNN:
    """Read a network from a MAT file (v5 or v7.3); see the module doc for the layouts."""
    path = Path(path)
    return net_from_vars(loadmat(path), str(path))


def net_to_struct(net: SimpleNN, struct: bool = False) -> dict:
    """The MATLAB ``net`` struct: ``{'layers': [...], 'meta': {...}}``.

    Classdef layers become :class:`MatObject` (saveobj for layerVLAD/v2), or, with
    ``struct=True``, plain structs with ``type`` 'custom'.
    """
    layers = []
    for layer in net.layers:
        s = layer.to_struct()
        if layer.class_name is None or struct:
            layers.append(s)
        else:
            layers.append(MatObject(layer.class_name, s, saveobj=layer.class_name in SAVEOBJ_CLASSES))
    return {"layers": layers, "meta": dict(net.meta)}


def save_net(net: SimpleNN, path, format: str = "7.3", struct: bool = False) -> Path:
    """Write ``net`` as the variable ``net`` MATLAB NetVLAD loads (``format`` '7.3' or '5';
    ``struct=True`` for the plain-struct variant).  Atomic (temp file + rename)."""
    return savemat(path, {"net": net_to_struct(net, struct)}, format=format)
