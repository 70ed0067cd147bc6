"""torch.hub's entry point :func:`netvlad` (see ``hubconf.py``): a network file or URL
-> a ready :class:`~matnet.descriptor_net.DescriptorNet` in eval mode.

Nothing is fetched at import; a URL is downloaded only when :func:`netvlad` is given
one, by torch.hub's own downloader into its cache (``<torch.hub.get_dir()>/checkpoints/matnet/``,
keyed by the URL, checked before reuse: see :func:`resolve_weights`).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch

from converters.atomic_file import write_text
from converters.network import load_net

from .descriptor_net import DescriptorNet, preprocess

__all__ = ["cache_path", "netvlad", "preprocess", "resolve_weights"]

URL_SCHEMES = ("http", "https", "ftp", "file")


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_sha256(path: Path, sha256: str | None, what: str, got: str | None = None) -> None:
    """``path``'s SHA-256 (``got`` when already computed) must be ``sha256`` when given."""
    if sha256 is None:
        return
    got = file_sha256(path) if got is None else got
    if got != sha256.lower():
        raise ValueError(f"{what}: SHA-256 is {got}, expected {sha256.lower()}; refusing to load it")


def cache_path(url: str) -> Path:
    """Where a download of ``url`` is cached: ``<hub dir>/checkpoints/matnet/<16 hex of
    sha256(url)>/<file name>``, so two URLs whose files have the same name never share a
    file (the cache was keyed by the file name alone: a second URL returned the first
    network, issue 24 case 7)."""
    name = os.path.basename(unquote(urlparse(url).path))
    if not name:
        raise ValueError(f"{url}: the URL names no file")
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(torch.hub.get_dir()) / "checkpoints" / "matnet" / key / name


def _record(cached: Path) -> Path:
    return cached.with_name(cached.name + ".json")


def _cached_ok(cached: Path, url: str, sha256: str | None) -> bool:
    """The cached file is whole: its size and SHA-256 equal those recorded when it was
    downloaded (and ``sha256`` when given).  A file without its record (an interrupted or
    foreign download) or that changed since is not reused."""
    try:
        rec = json.loads(_record(cached).read_text())
        if rec.get("url") != url or cached.stat().st_size != rec["size"]:
            return False
        digest = file_sha256(cached)
        return digest == rec["sha256"] and (sha256 is None or digest == sha256.lower())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def resolve_weights(weights, sha256: str | None = None) -> Path:
    """A local network file for ``weights``: a path as is, or a URL (http, https, ftp,
    file) downloaded with ``torch.hub.download_url_to_file`` into :func:`cache_path`
    (keyed by the URL) with a record ``<file>.json`` of its URL, size and SHA-256,
    written after the download.  The cached file is reused only when its size and
    SHA-256 still equal the record's; otherwise it is downloaded again (with a warning).
    With ``sha256`` the file's SHA-256 must match (a mismatching download is deleted)."""
    text = str(weights)
    scheme = urlparse(text).scheme.lower()
    if scheme not in URL_SCHEMES:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: network file not found")
        _check_sha256(path, sha256, str(path))
        return path
    cached = cache_path(text)
    if _cached_ok(cached, text, sha256):
        return cached
    if cached.exists():
        warnings.warn(f"{cached}: the cached download of {text} is incomplete or changed (size/SHA-256 differ "
                      f"from {_record(cached).name}, or no record): downloading it again", stacklevel=2)
        _record(cached).unlink(missing_ok=True)
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(text, str(cached), progress=True)
    digest = file_sha256(cached)  # once: for the check and the record
    try:
        _check_sha256(cached, sha256, f"{text} (downloaded to {cached})", digest)
    except ValueError:
        cached.unlink()
        raise
    write_text(_record(cached), json.dumps({"url": text, "size": cached.stat().st_size,
                                            "sha256": digest}) + "\n")
    return cached


def netvlad(weights, dims: int | None = None, sha256: str | None = None) -> DescriptorNet:
    """A NetVLAD network as an image -> descriptor module, in eval mode.

    ``weights``: a network file ``load_net`` reads (released ``.mat``, ``*_struct.mat``,
    trainWeakly checkpoint, matnet ``.safetensors``) or a URL to one (cached by
    torch.hub; ``sha256`` checks it).  ``dims``: keep the first ``dims`` values and
    L2-normalise again (testFromFn's cropToDim; after WPCA the leading components).
    Input: N x 3 x H x W RGB float in 0..255 (``model.preprocess(pil_images)`` makes it;
    the network's average colour is subtracted inside); output: N x dims, L2-normalised,
    MATLAB's descriptor order.
    """
    path = resolve_weights(weights, sha256)
    return DescriptorNet(load_net(path), dims).eval()
