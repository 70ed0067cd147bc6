"""NetVLAD dataset specifications (MATLAB's datasets/*.m); ids are 0-based."""
from .close_position import closePosition
from .db_base import dbBase
from .local_paths import localPaths
from .msls import dbMSLS
from .pitts import dbPitts
from .spec import dbSpec, db_from_spec
from .tiny import dbTiny
from .tokyo247 import dbTokyo247
from .tokyo_tm import dbTokyoTimeMachine
from .vpr import dbVPR

__all__ = ["closePosition", "dbBase", "localPaths", "dbPitts", "dbTiny", "dbTokyo247",
           "dbTokyoTimeMachine", "dbVPR", "dbMSLS", "dbSpec", "db_from_spec"]
