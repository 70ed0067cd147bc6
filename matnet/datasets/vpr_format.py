"""The VPR folder format (gmberton/VPR-datasets-downloader, read by VPR-methods-evaluation).

Layout ``<root>/images/<split>/{database,queries}/**/<name>``; a name holds its labels
between ``@`` signs::

    @<utm_east>@<utm_north>@<zone>@<letter>@<lat>@<lon>@<pano_id>@<tile>@<heading>@<pitch>@<roll>@<height>@<timestamp>@<note>@.jpg

Every field but the UTM pair may be empty.  The downloader writes UTM with 2 decimals
(``%010.2f``, so 0.01 m), the zone as 2 digits, lat/lon with 5 decimals, the tile as 2
digits and the time stamp as ``YYYYMMDD_hhmmss`` truncated from the right.  Images of a
folder are those listed, in order, in ``<folder>_images_paths.txt`` (one path relative
to the folder per line) when that file exists, else every ``.jpg/.jpeg/.png`` file
(extension case-insensitive, hidden names skipped) below the folder, sorted by path.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

FIELDS = ("utm_east", "utm_north", "zone", "letter", "lat", "lon", "pano_id", "tile", "heading",
          "pitch", "roll", "height", "timestamp", "note")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_TIMESTAMP = re.compile(r"^(\d{4}(\d{2}(\d{2}(_(\d{2})(\d{2})?(\d{2})?)?)?)?)?$")


class VPRFormatError(ValueError):
    """A folder or file name that does not follow the VPR folder format."""


def _finite(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def parse_name(path) -> dict[str, str]:
    """The 14 label fields of an image file name (missing trailing fields are '').  The
    name is split at ``@`` (VPR-methods-evaluation splits the whole path; only the file
    name is used here, so an ``@`` in a folder name is harmless).

    Parsed strictly (VPRFormatError naming the file and the field): the name starts
    with ``@`` (else every field shifts: the probe read northing = the zone), holds at
    most 14 fields, UTM east/north are finite numbers, a zone is 1..60, lat/lon are
    finite numbers when present.  VPR-methods-evaluation reads fields 1 and 2 as floats
    and accepts any of these silently (issue 24, cases 4 and 14)."""
    name = os.path.basename(str(path))
    parts = name.split("@")
    if len(parts) < 4:
        raise VPRFormatError(f"{path}: file name has no UTM fields (expected "
                             f"@<utm_east>@<utm_north>@...@.jpg)")
    if parts[0]:
        raise VPRFormatError(f"{path}: file name does not start with '@' (expected "
                             f"@<utm_east>@<utm_north>@...@.jpg; read as it is, northing would be "
                             f"{parts[1]!r})")
    if len(parts) - 2 > len(FIELDS):
        raise VPRFormatError(f"{path}: file name has {len(parts) - 2} fields between '@' signs, the VPR "
                             f"format has {len(FIELDS)} ({', '.join(FIELDS)})")
    fields = dict(zip(FIELDS, parts[1:-1]))
    for k in ("utm_east", "utm_north"):
        try:
            float(fields[k])
        except ValueError:
            raise VPRFormatError(f"{path}: {k} field {fields[k]!r} is not a number (expected "
                                 f"@<utm_east>@<utm_north>@...@.jpg)") from None
        if not _finite(fields[k]):
            raise VPRFormatError(f"{path}: {k} field {fields[k]!r} is not a finite number")
    for k in ("lat", "lon"):
        if fields.get(k) and not _finite(fields[k]):
            raise VPRFormatError(f"{path}: {k} field {fields[k]!r} is not a finite number")
    zone = fields.get("zone", "")
    if zone and not (zone.isdigit() and 1 <= int(zone) <= 60):
        raise VPRFormatError(f"{path}: zone field {zone!r} is not a UTM zone (1..60)")
    return {k: fields.get(k, "") for k in FIELDS}


def make_name(utm_east: float, utm_north: float, ext: str, zone: int | None = None, letter: str = "",
              **fields) -> str:
    """A file name in the downloader's formatting (see the module docstring); ``fields``
    are other entries of :data:`FIELDS` as strings ('' when unknown)."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown VPR name fields {sorted(unknown)}")
    ts = fields.get("timestamp", "")
    if not _TIMESTAMP.match(ts):
        raise VPRFormatError(f"time stamp {ts!r} is not YYYYMMDD_hhmmss (truncated from the right)")
    vals = {k: fields.get(k, "") for k in FIELDS}
    vals.update(utm_east=f"{float(utm_east):0=10.2f}", utm_north=f"{float(utm_north):0=10.2f}",
                zone="" if zone is None else f"{int(zone):02d}", letter=letter)
    for k, v in vals.items():
        if "@" in v or "/" in v:
            raise VPRFormatError(f"VPR name field {k}={v!r} may not hold '@' or '/'")
    return "@" + "@".join(vals[k] for k in FIELDS) + "@" + ext


def month_stamp(timestamp: str) -> int | None:
    """TokyoTM-style time stamp YYYYMM of a ``timestamp`` field (None when it has no month)."""
    return int(timestamp[:6]) if len(timestamp) >= 6 and timestamp[:6].isdigit() else None


def list_images(folder) -> list[str]:
    """Image paths relative to ``folder`` (see the module docstring for the order)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VPRFormatError(f"{folder}: folder not found")
    listing = Path(str(folder) + "_images_paths.txt")
    if listing.is_file():
        rels = [ln for ln in listing.read_text().splitlines() if ln.strip()]
        seen, dups = set(), []
        for r in rels:
            if r in seen:
                dups.append(r)
            seen.add(r)
        if dups:
            raise VPRFormatError(f"{listing}: {len(dups)} duplicate image paths, first: {dups[0]}")
        missing = [r for r in rels if not (folder / r).is_file()]
        if missing:
            raise VPRFormatError(f"{listing}: {len(missing)} of {len(rels)} listed images are not in "
                                 f"{folder}, first: {missing[0]}")
    else:
        rels = sorted(walk_images(folder))
    if not rels:
        raise VPRFormatError(f"{folder}: no images (.jpg/.jpeg/.png) in the folder"
                             + (f" nor in {listing}" if listing.is_file() else ""))
    return rels


def walk_images(folder) -> list[str]:
    """Image files (extension case-insensitive, hidden names skipped) below ``folder``,
    relative to it, following symbolic links to folders.  A link that leads back to a
    folder it is in (a loop), or a second way into a folder already listed, is refused
    naming the link(s): glob's ``**`` followed such a loop until the path grew too
    long, listing each image ~41 times (issue 24, case 3)."""
    folder = Path(folder)
    out = []
    seen: dict[tuple[int, int], str] = {}

    def visit(d: str, rel: str, ancestors: tuple) -> None:
        st = os.stat(d)
        key = (st.st_dev, st.st_ino)
        shown = os.path.join(folder, rel) if rel else str(folder)
        if key in ancestors:
            raise VPRFormatError(f"{shown}: a symbolic link to {os.path.realpath(d)}, a folder it is in "
                                 f"(a loop: its images would be listed again and again); remove the link")
        if key in seen:
            raise VPRFormatError(f"{shown} and {seen[key]} are the same folder ({os.path.realpath(d)}): "
                                 f"its images would be listed twice; remove one of the links")
        seen[key] = shown
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.name.startswith("."):
                continue
            r = os.path.join(rel, e.name) if rel else e.name
            if e.is_dir(follow_symlinks=True):
                visit(e.path, r, ancestors + (key,))
            elif os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS and e.is_file(follow_symlinks=True):
                out.append(r)

    visit(str(folder), "", ())
    return out


EXPORT_MARKER = "matnet_export.json"


def check_export_complete(split_folder) -> None:
    """A split written by ``matnet dataset export`` (it holds ``matnet_export.json``) must
    have finished: VPRFormatError naming the marker and the spec otherwise.  Folders
    without the marker (any other VPR dataset) are not concerned."""
    import json
    marker = Path(split_folder) / EXPORT_MARKER
    if not marker.is_file():
        return
    try:
        m = json.loads(marker.read_text())
        complete, spec, counts = bool(m["complete"]), m.get("spec", "?"), m.get("images", {})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise VPRFormatError(f"{marker}: unreadable export marker ({e}); rerun matnet dataset export --force") from None
    if not complete:
        raise VPRFormatError(f"{marker}: the export of {spec} into {split_folder} did not finish "
                             f"({', '.join(f'{v} {k}' for k, v in counts.items())} images expected); rerun "
                             f"matnet dataset export --force, or remove the folder")
