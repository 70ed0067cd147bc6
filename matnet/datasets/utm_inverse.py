"""UTM (WGS84) to latitude/longitude, for the lat/lon fields of exported VPR names.

The inverse transverse Mercator series of Snyder (1987, "Map Projections: A Working
Manual", eqs. 8-18 to 8-25; k0 = 0.9996, false easting 500 km, false northing 10 000 km
south of the equator): centimetre accuracy within a zone, far below the 5 decimals
(about 1 m) the names keep.
"""
from __future__ import annotations

import numpy as np

A, F, K0 = 6378137.0, 1 / 298.257223563, 0.9996
E2 = F * (2 - F)
EP2 = E2 / (1 - E2)


def utm_to_latlon(easting, northing, zone: int, northern: bool = True):
    """Degrees (lat, lon) of UTM positions (arrays broadcast) in ``zone`` (1..60)."""
    x = np.asarray(easting, np.float64) - 500000.0
    y = np.asarray(northing, np.float64) - (0.0 if northern else 10000000.0)
    mu = y / K0 / (A * (1 - E2 / 4 - 3 * E2 ** 2 / 64 - 5 * E2 ** 3 / 256))
    e1 = (1 - np.sqrt(1 - E2)) / (1 + np.sqrt(1 - E2))
    phi1 = (mu + (3 * e1 / 2 - 27 * e1 ** 3 / 32) * np.sin(2 * mu)
            + (21 * e1 ** 2 / 16 - 55 * e1 ** 4 / 32) * np.sin(4 * mu)
            + 151 * e1 ** 3 / 96 * np.sin(6 * mu) + 1097 * e1 ** 4 / 512 * np.sin(8 * mu))
    s, c, t = np.sin(phi1), np.cos(phi1), np.tan(phi1)
    C1, T1 = EP2 * c ** 2, t ** 2
    N1 = A / np.sqrt(1 - E2 * s ** 2)
    R1 = A * (1 - E2) / (1 - E2 * s ** 2) ** 1.5
    D = x / (N1 * K0)
    lat = phi1 - N1 * t / R1 * (D ** 2 / 2 - (5 + 3 * T1 + 10 * C1 - 4 * C1 ** 2 - 9 * EP2) * D ** 4 / 24
                                + (61 + 90 * T1 + 298 * C1 + 45 * T1 ** 2 - 252 * EP2 - 3 * C1 ** 2) * D ** 6 / 720)
    lon = (D - (1 + 2 * T1 + C1) * D ** 3 / 6
           + (5 - 2 * C1 + 28 * T1 - 3 * C1 ** 2 + 8 * EP2 + 24 * T1 ** 2) * D ** 5 / 120) / c
    return np.degrees(lat), (zone - 1) * 6 - 177 + np.degrees(lon)
