"""NetVLAD dataset specifications (MATLAB's datasets/*.m); ids are 0-based.

The names below load on first use (PEP 562), so that the command line can read
:data:`matnet.datasets.named.DATASET_FORMS` without importing numpy."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {"closePosition": "close_position", "dbBase": "db_base", "localPaths": "local_paths",
            "dbPitts": "pitts", "dbTiny": "tiny", "dbTokyo247": "tokyo247", "dbTokyoTimeMachine": "tokyo_tm",
            "dbVPR": "vpr", "dbMSLS": "msls", "dbSpec": "spec", "db_from_spec": "spec",
            "parse_dataset": "named"}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from .close_position import closePosition
    from .db_base import dbBase
    from .local_paths import localPaths
    from .msls import dbMSLS
    from .named import parse_dataset
    from .pitts import dbPitts
    from .spec import dbSpec, db_from_spec
    from .tiny import dbTiny
    from .tokyo247 import dbTokyo247
    from .tokyo_tm import dbTokyoTimeMachine
    from .vpr import dbVPR


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'matnet.datasets' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
