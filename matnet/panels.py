"""Prediction panels: one JPEG per query, the query then its top-N database images
(not in MATLAB; VPR-methods-evaluation's ``--num_preds_to_save``).

Each tile is the image resized to a common height inside a frame of ``FRAME`` pixels:
blue for the query, green for a correct result, red for a wrong one; a black strip at
the bottom of each result gives its rank, distance (squared L2) and metres from the
query.  Tiles are laid left to right with ``GAP`` white pixels between them, so a panel
of a query with k results has k + 1 tiles.

Panels are written in parallel (Pillow decodes, resizes and encodes outside the GIL;
JPEGs are decoded at a reduced scale when much larger than the tile) with a progress
bar, each atomically.  Each file carries a signature of its content (query, results,
flags, tile height, and each shown image file's size and modification time) in its JPEG
comment; a rerun reuses a panel whose signature matches and redraws the others, so an
image replaced under the same name is never shown stale.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from converters.atomic_file import atomic_write

from .images import resolve_image_path
from .predictions import Predictions

QUERY_COLOUR = (30, 90, 230)
CORRECT_COLOUR = (0, 170, 0)
WRONG_COLOUR = (220, 20, 20)
FRAME = 8
GAP = 6
DEFAULT_HEIGHT = 200
_VERSION = 2


def panel_name(query_id: int, query: str) -> str:
    """File name of a query's panel: its 0-based id and image name."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(query).stem)[:80]
    return f"{int(query_id):06d}_{stem}.jpg"


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def load_tile(path, height: int) -> Image.Image:
    """The image at ``path`` resized to ``height`` (aspect kept); a grey placeholder
    when it cannot be read (a warning names it)."""
    try:
        im = Image.open(resolve_image_path(path))
        w, h = im.size
        target = (max(1, round(w * height / h)), height)
        if im.format == "JPEG":
            im.draft("RGB", target)  # DCT-domain downscale: decodes 1/2, 1/4 or 1/8 of the pixels
        im = im.convert("RGB")
        return im.resize(target, Image.BILINEAR, reducing_gap=2.0) if im.size != target else im
    except (OSError, ValueError) as e:
        warnings.warn(f"panel: cannot read {path} ({e}); drawn as a grey tile", stacklevel=2)
        return Image.new("RGB", (round(height * 4 / 3), height), (128, 128, 128))


def render_panel(query_path, db_paths, correct, labels, height: int = DEFAULT_HEIGHT) -> Image.Image:
    """The panel image: query tile, then one tile per ``db_paths`` entry framed by
    ``correct``, with the text ``labels`` (one per result) on a black strip."""
    tiles = [(load_tile(query_path, height), QUERY_COLOUR, "query")]
    tiles += [(load_tile(p, height), CORRECT_COLOUR if c else WRONG_COLOUR, t)
              for p, c, t in zip(db_paths, correct, labels)]
    H = height + 2 * FRAME
    W = sum(t.width + 2 * FRAME for t, _, _ in tiles) + GAP * (len(tiles) - 1)
    out = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    fsize = max(10, height // 14)
    font = _font(fsize)
    x = 0
    for im, colour, text in tiles:
        w = im.width + 2 * FRAME
        draw.rectangle([x, 0, x + w - 1, H - 1], fill=colour)
        out.paste(im, (x + FRAME, FRAME))
        strip = fsize + 6
        draw.rectangle([x + FRAME, H - FRAME - strip, x + w - FRAME - 1, H - FRAME - 1], fill=(0, 0, 0))
        draw.text((x + FRAME + 4, H - FRAME - strip + 2), text, fill=(255, 255, 255), font=font)
        x += w + GAP
    return out


def _label(rank: int, dist: float, meters: float) -> str:
    d = "?" if not np.isfinite(dist) else f"{dist:.3f}"
    return f"#{rank}  d={d}  {meters:.0f} m"


def _file_stats(paths) -> list:
    """(size, modification time in ns) of each image file, None where it cannot be read:
    an image replaced under the same name changes its panel's signature."""
    out = []
    for p in paths:
        try:
            st = os.stat(resolve_image_path(p))
            out.append([st.st_size, st.st_mtime_ns])
        except (OSError, ValueError):
            out.append(None)
    return out


def _signature(query, dbs, correct, labels, height, stats) -> str:
    key = json.dumps([_VERSION, query, dbs, [bool(c) for c in correct], labels, height, stats])
    return hashlib.sha1(key.encode()).hexdigest()


def _finished(path: Path, sig: str) -> bool:
    try:
        with Image.open(path) as im:
            c = im.info.get("comment", b"")
            return (c.decode() if isinstance(c, bytes) else c) == sig
    except OSError:
        return False


def selected_queries(pred: Predictions, onlyWrong: bool = False) -> np.ndarray:
    """Rows of ``pred`` that get a panel: all, or those whose top-1 is wrong."""
    rows = np.arange(pred.queries.size)
    return rows[~pred.correct_at(1)] if onlyWrong else rows


def write_panels(pred: Predictions, outDir, onlyWrong: bool = False, height: int = DEFAULT_HEIGHT,
                 workers: int | None = None, quality: int = 85, progress: bool = True) -> dict:
    """One panel per query (or per query wrong at 1 with ``onlyWrong``) under
    ``outDir``; image paths are ``pred.root`` + the table's names.  Returns
    ``{"written": k, "reused": k, "files": {row: file name}}``."""
    outDir = Path(outDir)
    outDir.mkdir(parents=True, exist_ok=True)
    rows = selected_queries(pred, onlyWrong)
    workers = workers or min(8, os.cpu_count() or 1)
    files, counts = {}, {"written": 0, "reused": 0}

    def one(r: int) -> str:
        k = int(pred.valid[r].sum())
        ids = [int(i) for i in pred.ids[r, :k]]
        labels = [_label(j + 1, pred.distance[r, j], pred.meters[r, j]) for j in range(k)]
        dbs = [pred.db_names[i] for i in ids]
        paths = [pred.query_path(r)] + [pred.db_path(i) for i in ids]
        sig = _signature(pred.query_names[r], dbs, pred.correct[r, :k], labels, height, _file_stats(paths))
        path = outDir / panel_name(pred.queries[r], pred.query_names[r])
        if _finished(path, sig):
            return "reused"
        im = render_panel(paths[0], paths[1:], pred.correct[r, :k], labels, height)
        with atomic_write(path, "wb") as f:
            im.save(f, "JPEG", quality=quality, comment=sig)
        return "written"

    bar = tqdm(total=rows.size, desc="panels", unit="q", disable=not progress, leave=False)
    with ThreadPoolExecutor(workers) as pool:
        for r, what in zip(rows, pool.map(one, rows)):
            counts[what] += 1
            files[int(r)] = panel_name(pred.queries[r], pred.query_names[r])
            bar.update(1)
    bar.close()
    return {**counts, "files": files}
