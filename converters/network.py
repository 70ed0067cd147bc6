"""Network files <-> :class:`matnet.SimpleNN`, without MATLAB: ``load_net``/``save_net``.

``load_net(path)`` tells the kind of file from its first bytes, not its name: a MAT
file (v5/v7 or v7.3) or matnet's native safetensors file (:mod:`converters.native`).
MAT files it reads:

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

``save_net(net, path)`` writes by the extension: ``.safetensors`` (native), ``.mat``
as MATLAB NetVLAD saves ``net`` (``-v7.3``, same class names and properties, saveobj
struct for layerVLAD/v2), or ``*_struct.mat`` the plain-struct variant.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from matnet.layers import LayerError, layer_from_struct  # registers every layer type and class
from matnet.simplenn import SimpleNN

from .matfile import MatFileError, MatObject, layers_error, loadmat, savemat, whosmat
from .native import load_native, save_native

__all__ = ["load_net", "save_net", "network_file_kind", "net_from_vars", "net_to_struct", "SAVEOBJ_CLASSES"]

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
    built, failures = [], []
    for i, item in enumerate(layers):  # every layer is tried: all failures are reported at once
        try:
            built.append(_layer(item, i, where))
        except (LayerError, MatFileError) as e:
            failures.append((f"net.layers{{{i + 1}}}", str(e).removeprefix(f"{where}: ")))
    if failures:
        raise layers_error(where, failures, len(layers))
    return SimpleNN(built, _tidy_meta(top))


def network_file_kind(path) -> str:
    """'mat' or 'safetensors', from the file's first bytes; MatFileError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith(b"MATLAB"):
        return "mat"
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    raise MatFileError(f"{path}: not a network file (not a MAT file: no 'MATLAB' header text; "
                       f"not a safetensors file either; starts with {head!r})")


def load_net(path) -> SimpleNN:
    """Read a network from any supported file, told by its content: a released NetVLAD
    ``.mat`` (v7.3, classdef layers), a ``*_struct.mat``, a MatConvNet model, a
    trainWeakly checkpoint (only its ``net`` is read), or a matnet ``.safetensors``."""
    path = Path(path)
    if network_file_kind(path) == "safetensors":
        return load_native(path)
    names = {w[0] for w in whosmat(path)}
    return net_from_vars(loadmat(path, "net") if "net" in names else loadmat(path), str(path))


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


def save_net(net: SimpleNN, path, format: str = "7.3", struct: bool | None = None) -> Path:
    """Write ``net`` by ``path``'s extension: ``.safetensors`` (native), ``.mat`` as the
    variable ``net`` MATLAB NetVLAD loads (``format`` '7.3' or '5'; classdef layers),
    ``*_struct.mat`` (or ``struct=True``) with the classdef layers as plain structs.
    Atomic (temp file + rename); returns the path."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if struct:
            raise ValueError(f"{path}: struct=True applies to .mat files only")
        return save_native(net, path)
    if path.suffix != ".mat":
        raise ValueError(f"{path}: unknown network file extension '{path.suffix}' (use .mat, "
                         f"*_struct.mat or .safetensors)")
    if struct is None:
        struct = path.name.endswith("_struct.mat")
    return savemat(path, {"net": net_to_struct(net, struct)}, format=format)
