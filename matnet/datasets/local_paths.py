"""``localPaths``: where the dataset specs, dataset images, networks and outputs live.

Values come from, in increasing priority: the defaults of MATLAB's ``localPaths.m.setup``,
a JSON file (``$MATNET_LOCAL_PATHS``, else ``~/.config/matnet/localPaths.json``) mapping
the MATLAB field names (``dsetSpecDir``, ``dsetRootPitts``, ...) to folders, and
environment variables ``MATNET_`` + the field name in upper snake case
(``MATNET_DSET_SPEC_DIR``, ``MATNET_DSET_ROOT_PITTS``, ``MATNET_DSET_ROOT_TOKYO247``,
``MATNET_DSET_ROOT_TOKYO_TM``, ``MATNET_OUR_CNNS``, ``MATNET_OUT_PREFIX``, ...).
``~`` is expanded.  Every db class also takes ``specDir=`` and ``dbRoot=`` directly.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

DEFAULTS = {
    "dsetSpecDir": "~/Data/netvlad/datasets/",
    "dsetRootPitts": "~/Databases/Pittsburgh/",
    "dsetRootTokyo247": "~/Databases/Tokyo247/",
    "dsetRootTokyoTM": "~/Databases/TokyoTM/",
    "ourCNNs": "~/Data/models/",
    "pretrainedCNNs": "~/Data/pretrained/",
    "initData": "~/Data/netvlad/initdata/",
    "outPrefix": "~/Data/netvlad/output/",
}


def env_name(field: str) -> str:
    """``dsetRootTokyoTM`` -> ``MATNET_DSET_ROOT_TOKYO_TM``, ``pretrainedCNNs`` -> ``MATNET_PRETRAINED_CNNS``."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", field.replace("CNNs", "Cnns"))
    return "MATNET_" + snake.upper()


def config_file() -> Path:
    return Path(os.environ.get("MATNET_LOCAL_PATHS", "~/.config/matnet/localPaths.json")).expanduser()


def localPaths() -> dict[str, str]:
    """The paths dict (MATLAB's field names), see the module docstring."""
    paths = dict(DEFAULTS)
    cfg = config_file()
    if cfg.is_file():
        try:
            extra = json.loads(cfg.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg}: not valid JSON ({e})") from e
        if not isinstance(extra, dict):
            raise ValueError(f"{cfg}: expected a JSON object of name -> folder")
        paths.update({str(k): str(v) for k, v in extra.items()})
    for k in list(paths):
        if env_name(k) in os.environ:
            paths[k] = os.environ[env_name(k)]
    return {k: os.path.expanduser(v) for k, v in paths.items()}


def folder(root, sub: str = "") -> str:
    """MATLAB-style folder string ``[root, sub]`` with a trailing separator."""
    return os.path.join(os.path.expanduser(str(root)), sub, "")
