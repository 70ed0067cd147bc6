"""torch.hub's entry point :func:`netvlad` (see ``hubconf.py``): a network file or URL
-> a ready :class:`~matnet.descriptor_net.DescriptorNet` in eval mode.

Nothing is fetched at import; a URL is downloaded only when :func:`netvlad` is given
one, by torch.hub's own downloader into its cache (``<torch.hub.get_dir()>/checkpoints``).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch

from converters.network import load_net

from .descriptor_net import DescriptorNet, preprocess

__all__ = ["netvlad", "preprocess", "resolve_weights"]

URL_SCHEMES = ("http", "https", "ftp", "file")


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_sha256(path: Path, sha256: str | None, what: str) -> None:
    if sha256 is None:
        return
    got = file_sha256(path)
    if got != sha256.lower():
        raise ValueError(f"{what}: SHA-256 is {got}, expected {sha256.lower()}; refusing to load it")


def resolve_weights(weights, sha256: str | None = None) -> Path:
    """A local network file for ``weights``: a path as is, or a URL (http, https, ftp,
    file) downloaded once with ``torch.hub.download_url_to_file`` to
    ``<hub dir>/checkpoints/<file name>``.  With ``sha256`` the file's SHA-256 must match
    (a mismatching download is deleted)."""
    text = str(weights)
    scheme = urlparse(text).scheme.lower()
    if scheme not in URL_SCHEMES:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: network file not found")
        _check_sha256(path, sha256, str(path))
        return path
    name = os.path.basename(unquote(urlparse(text).path))
    if not name:
        raise ValueError(f"{text}: the URL names no file")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    if cached.is_file() and (sha256 is None or file_sha256(cached) == sha256.lower()):
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(text, str(cached), progress=True)
    try:
        _check_sha256(cached, sha256, f"{text} (downloaded to {cached})")
    except ValueError:
        cached.unlink()
        raise
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
