"""NetVLAD dataset specifications (MATLAB's datasets/*.m); ids are 0-based."""
from .close_position import closePosition
from .db_base import dbBase
from .local_paths import localPaths
from .pitts import dbPitts
from .tiny import dbTiny
from .tokyo247 import dbTokyo247
from .tokyo_tm import dbTokyoTimeMachine

__all__ = ["closePosition", "dbBase", "localPaths", "dbPitts", "dbTiny", "dbTokyo247",
           "dbTokyoTimeMachine"]
