"""The files of a feature extraction and what they say: whether ``<outFn>`` holds the
features of this network for this image list (reuse), how far an interrupted run got
(resume), so that serialAllFeats (:mod:`matnet.extract`) computes only the rest.

- :func:`fingerprint`: a network, image root and list, and precision, as a hash;
- ``<outFn>.done.json`` (evaluate's reuse) and ``<outFn>.shard<r>of<W>.json`` (a rank's
  finished shard): ``{"fingerprint": ..., "images": ...}``, written after the data
  (:func:`mark_complete`), read by :func:`is_complete`;
- ``<outFn>.partial`` + ``<outFn>.partial.json``: :class:`PartialFeatures`, the rows of
  the first images done and ``{"fingerprint", "nImages", "D", "done"}``.
"""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from converters.atomic_file import write_text

from .simplenn import SimpleNN


def _settings(v, h) -> None:
    """Feed a layer setting (number, string, array, list, dict) to hash ``h``
    deterministically; other objects by type name only (no memory addresses)."""
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    if isinstance(v, np.ndarray):
        h.update(f"a{v.dtype.str}{v.shape}".encode() + np.ascontiguousarray(v).tobytes())
    elif isinstance(v, dict):
        h.update(b"{")
        for k in sorted(v, key=str):
            h.update(f"{k!s}:".encode())
            _settings(v[k], h)
        h.update(b"}")
    elif isinstance(v, (list, tuple)):
        h.update(b"[")
        for x in v:
            _settings(x, h)
        h.update(b"]")
    elif v is None or isinstance(v, (str, bool, int, float, np.generic)):
        h.update(f"{type(v).__name__}={v!r};".encode())
    else:
        h.update(f"<{type(v).__name__}>".encode())


def fingerprint(net: SimpleNN, imPath: str, imageFns, precision: str = "exact", stats: bool = True) -> str:
    """Identifies a run for resuming and for reusing finished features: image list and
    each image's size and modification time (``os.stat``; a missing image counts as
    such), ``meta.normalization.averageImage``, every layer's settings (its struct
    fields but the weights and training ones: stride, pad, dilate, method, pool, param,
    leak, rate, other fields kept verbatim) and sampled weight values; a precision other
    than 'exact' is appended (``+fast``).  Images replaced under the same names were
    reused before (issue 24, case 2: 75.5 % printed, 59.5 % fresh); MATLAB never reuses.
    ``stats`` False leaves the sizes and times out (a partial run checks those of the
    images it has done only: :class:`PartialFeatures`)."""
    h = hashlib.sha1()
    h.update(str(imPath).encode())
    for fn in imageFns:
        h.update(b"\0" + fn.encode())
        if stats:
            h.update(_stat_key(str(imPath) + fn))
    h.update(b"|averageImage")
    _settings(np.asarray(net.meta.get("normalization", {}).get("averageImage")), h)
    with torch.no_grad():
        for l in net.layers:
            h.update(f"|{l.name}:{l.type}:{l.class_name}".encode())
            _settings(l.struct_fields(), h)
            _settings(l.extra, h)
            for w in l.weights:  # up to 2^16 evenly spaced values per weight (cheap on big nets)
                flat = w.detach().reshape(-1)
                sample = flat[::max(1, flat.numel() >> 16)].double().cpu().numpy()
                h.update(repr(tuple(w.shape)).encode() + sample.tobytes())
    return h.hexdigest() + ("" if precision == "exact" else f"+{precision}")


def _stat_key(path: str) -> bytes:
    """An image's size and modification time as bytes (-1 when it cannot be read)."""
    try:
        st = os.stat(path)
        return f"\0{st.st_size}:{st.st_mtime_ns}".encode()
    except OSError:
        return b"\0-1:-1"


def _hash_stats(h, paths):
    """``h`` (a hashlib object) fed the sizes and modification times of ``paths``."""
    for p in paths:
        h.update(_stat_key(p))
    return h


def images_signature(paths) -> str:
    """A hash of the sizes and modification times of the images ``paths``."""
    return _hash_stats(hashlib.sha1(), paths).hexdigest()


class PartialFeatures:
    """``<outFn>.partial`` (features of the first ``done`` images, MATLAB order) and
    ``<outFn>.partial.json`` (fingerprint, D, done, and with ``paths`` the
    :func:`images_signature` of the done images: a rerun resumes only when those images
    are unchanged, issue 24 case 2).  Write errors (disk full included) name the file."""

    def __init__(self, outFn: Path, fingerprint: str, nImages: int, paths=None):
        self.data, self.meta = Path(str(outFn) + ".partial"), Path(str(outFn) + ".partial.json")
        self.fp, self.n, self.D, self.done, self.f = fingerprint, nImages, None, 0, None
        self.paths, self._sig = paths, hashlib.sha1()

    @contextmanager
    def _writing(self, path: Path):
        try:
            yield
        except OSError as e:
            raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from e

    def resume(self) -> int:
        """Images already done by an interrupted run with the same fingerprint; 0 (and
        an empty ``.partial`` opened, so an unwritable output fails now) if none."""
        try:
            m = json.loads(self.meta.read_text())
            ok = m.get("fingerprint") == self.fp and m.get("nImages") == self.n
            D, done = int(m["D"]), int(m["done"])
            ok = ok and self.data.is_file() and self.data.stat().st_size >= D * done * 4
            if ok and self.paths is not None:
                sig = _hash_stats(hashlib.sha1(), self.paths[:done])  # images_signature, continued by append
                ok = m.get("images") == sig.hexdigest()
                if ok:
                    self._sig = sig
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        with self._writing(self.data):
            if not ok:
                self.f = open(self.data, "wb")
                return 0
            self.D, self.done = D, done
            self.f = open(self.data, "r+b")
            self.f.truncate(D * done * 4)
            self.f.seek(0, os.SEEK_END)
        return done

    def append(self, feats: np.ndarray) -> None:
        self.D = feats.shape[1] if self.D is None else self.D
        with self._writing(self.data):
            self.f.write(np.ascontiguousarray(feats, "<f4").data)  # not tofile: it loses ENOSPC
            self.f.flush()
            os.fsync(self.f.fileno())
        if self.paths is not None:
            _hash_stats(self._sig, self.paths[self.done:self.done + feats.shape[0]])
        self.done += feats.shape[0]
        meta = {"fingerprint": self.fp, "nImages": self.n, "D": self.D, "done": self.done}
        if self.paths is not None:
            meta["images"] = self._sig.copy().hexdigest()
        with self._writing(self.meta):
            write_text(self.meta, json.dumps(meta))

    def finish(self, outFn: Path) -> None:
        with self._writing(outFn):
            self.f.close()
            os.replace(self.data, outFn)
        self.meta.unlink(missing_ok=True)

    def close(self) -> None:
        """Cleanup after an error or finish (an error already raised is the one reported)."""
        if self.f is not None and not self.f.closed:
            try:
                self.f.close()
            except OSError:
                pass


def done_path(outFn) -> Path:
    """The sidecar saying ``outFn`` is complete (evaluate's reuse)."""
    return Path(str(outFn) + ".done.json")


def is_complete(sidecar: Path, data: Path, fp: str) -> bool:
    """Whether ``sidecar`` records fingerprint ``fp`` and ``data`` exists."""
    try:
        return json.loads(Path(sidecar).read_text()).get("fingerprint") == fp and Path(data).is_file()
    except (OSError, ValueError):
        return False


def mark_complete(sidecar: Path, fp: str, images) -> None:
    """Write ``sidecar`` (``{"fingerprint": fp, "images": images}``), after the data."""
    write_text(sidecar, json.dumps({"fingerprint": fp, "images": images}))


def features_complete(net, imPath, imageFns, outFn, precision: str = "exact") -> bool:
    """Is ``outFn`` complete for this network, image list and precision (its
    ``.done.json`` sidecar holds the fingerprint)?"""
    return is_complete(done_path(outFn), Path(outFn), fingerprint(net, str(imPath), list(imageFns), precision))
