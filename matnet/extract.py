"""Image representations from a network (serialAllFeats.m, computeRepresentation.m).

Images are read as ``vl_imreadjpeg`` does (RGB float 0..255, grayscale replicated,
no resizing), ``averageImage(1,1,c)`` is subtracted per channel and the network's
last output is flattened in MATLAB order (``reshape(res(end).x, [], nIms)``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from glob import escape as glob_escape
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from converters.atomic_file import atomic_write, write_bytes
from converters.file_lock import output_lock

from . import distributed
from .device import compute_device
from .feature_files import PartialFeatures, done_path, features_complete, fingerprint, is_complete, mark_complete
from .images import ImageNetworkError, imread_uint8, mean_colour, resolve_image_path
from .nettools import netPrepareForTest
from .precision import check_precision
from .precision import forward as precision_forward
from .simplenn import SimpleNN, failure_text, is_device_failure

_CHUNK_BATCHES = 8  # batches decoded, computed and checkpointed together


def _mean(net: SimpleNN) -> np.ndarray:
    norm = net.meta.get("normalization") if isinstance(net.meta, dict) else None
    return mean_colour(norm.get("averageImage") if isinstance(norm, dict) else None)


@contextmanager
def _on(net: SimpleNN, device: torch.device):
    """The net in test mode on ``device``, all CPU cores (this rank's share) for torch; restored afterwards."""
    was_training, old_dev, old_threads = net.training, net.device, torch.get_num_threads()
    netPrepareForTest(net)
    net.to(device)
    torch.set_num_threads(distributed.cpu_share())
    try:
        yield net
    finally:
        torch.set_num_threads(old_threads)
        net.to(old_dev)
        net.train(was_training)


def batch_tensor(ims, device: torch.device) -> torch.Tensor:
    """The N x H x W x 3 uint8 images of a batch as one tensor: stacked straight into
    pinned (page-locked) memory for a GPU, so that :func:`_forward`'s copy to the device
    is asynchronous (from pageable memory a copy waits for the GPU to finish its
    queue); a plain stack on the CPU."""
    if device.type != "cuda":
        return torch.from_numpy(np.stack(ims))
    t = torch.empty((len(ims),) + tuple(ims[0].shape), dtype=torch.uint8, pin_memory=True)
    np.stack(ims, out=t.numpy())
    return t


def device_mean(mean: np.ndarray, device: torch.device) -> torch.Tensor:
    """The average colour as a 1 x 3 x 1 x 1 tensor on ``device`` (copied there once
    per extraction, not once per batch: a small copy from pageable memory waits for
    everything queued on the GPU)."""
    return torch.from_numpy(np.ascontiguousarray(mean, np.float32)).to(device).view(1, 3, 1, 1)


def _forward(net: SimpleNN, ims_uint8, mean, device, precision="exact") -> torch.Tensor:
    """N x H x W x 3 uint8 (array, or :func:`batch_tensor`'s tensor) -> N x D float32
    (MATLAB order) on ``device``, not waited for: a GPU gets the images from pinned
    memory asynchronously.  ``mean``: 3 values, or :func:`device_mean`'s tensor.  The
    NHWC buffer viewed as NCHW is channels_last, the fast layout for CPU convolutions."""
    x = ims_uint8 if torch.is_tensor(ims_uint8) else torch.from_numpy(ims_uint8)
    if device.type == "cuda" and not x.is_pinned():
        x = x.pin_memory()
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    if not torch.is_tensor(mean):
        mean = device_mean(mean, device)
    x = x - mean.to(device)
    with torch.no_grad():
        y = precision_forward(net, x, precision)
    # MATLAB H x W x C per image, column-major: C slowest, then W, then H
    return y.permute(0, 1, 3, 2).reshape(y.shape[0], -1).float()


def computeRepresentation(net: SimpleNN, im, useGPU=None, precision: str = "exact") -> np.ndarray:
    """Representation (1-D, D values in MATLAB order) of one image ``im``: H x W x C
    float32 in 0..255 as vl_imreadjpeg gives (uint8 is converted with a warning,
    grayscale replicated).  ``useGPU`` None = when available.  ``precision`` (not in
    MATLAB): 'exact' float32 or 'fast' bf16 trunk (see :mod:`matnet.precision`)."""
    check_precision(precision)
    im = np.asarray(im)
    if im.dtype == np.uint8:
        warnings.warn("computeRepresentation: the image is uint8, converting to float32 0..255")
    elif im.dtype != np.float32:
        raise TypeError(f"computeRepresentation: image must be float32 0..255 (vl_imreadjpeg), got {im.dtype}")
    if im.ndim == 2:
        im = im[:, :, None]
    if im.ndim != 3 or im.shape[2] not in (1, 3):
        raise ValueError(f"computeRepresentation: expected H x W x 3 (or 1), got {im.shape}")
    if im.shape[2] == 1:
        im = np.repeat(im, 3, axis=2)
    device = compute_device(useGPU)
    with _on(net, device):
        x = torch.from_numpy(np.ascontiguousarray(im, np.float32))[None].to(device).permute(0, 3, 1, 2)
        x = x - torch.from_numpy(_mean(net)).to(device).view(1, 3, 1, 1)
        with torch.no_grad():
            y = precision_forward(net, x, precision)
    return y.permute(0, 1, 3, 2).reshape(-1).float().cpu().numpy()


def seconds_per_image(net: SimpleNN, im, batchSize: int, useGPU=None, precision: str = "exact") -> float:
    """The network's time per image, measured on one batch of ``batchSize`` copies of
    ``im`` (vl_imreadjpeg's float32 H x W x 3) after an untimed warm-up image (first
    calls allocate and initialise kernels: timing the very first image overestimated a
    run ~100 times).  Decoding is not included."""
    import time
    device = compute_device(useGPU)
    im = np.asarray(im, np.float32)
    if im.ndim == 2:
        im = im[:, :, None]
    if im.shape[2] == 1:
        im = np.repeat(im, 3, axis=2)
    batch = np.ascontiguousarray(np.clip(im, 0, 255).astype(np.uint8)[None])
    mean = _mean(net)
    n = max(1, int(batchSize))
    with _on(net, device):
        _forward(net, batch, mean, device, precision).cpu()
        many = np.repeat(batch, n, axis=0)
        t0 = time.perf_counter()
        _forward(net, many, mean, device, precision).cpu()
        return (time.perf_counter() - t0) / n


def _check_output(outFn: Path) -> None:
    """The output can be written: not a folder, in an existing writable folder."""
    if outFn.is_dir():
        raise IsADirectoryError(f"{outFn}: the output file is a folder")
    folder = outFn.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"{outFn}: the output folder {folder} does not exist"
                                + (" (it is a file)" if folder.exists() else ""))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{outFn}: the output folder {folder} is not writable")


def _check_images(paths: list[str], imPath) -> None:
    """Every image exists (a .jpg/.png swap counts, see resolve_image_path)."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        missing = [p for p in missing if not _exists_swapped(p)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(paths)} images not found under {imPath}: "
                                + ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else ""))


def _exists_swapped(p: str) -> bool:
    try:
        resolve_image_path(p)
        return True
    except FileNotFoundError:
        return False


def _forward_named(net, batch, mean, device, names, precision="exact") -> torch.Tensor:
    """_forward, with an error naming the image files when the network fails on them."""
    try:
        return _forward(net, batch, mean, device, precision)
    except (RuntimeError, ValueError, MemoryError) as e:
        if is_device_failure(e):  # the GPU, not the images
            raise
        raise ImageNetworkError(f"{names[0]}"
                                + (f" (and {len(names) - 1} more images of this size)" if len(names) > 1 else "")
                                + f": {failure_reason(e, batch.shape[1], batch.shape[2], len(names))}: "
                                f"{failure_text(e)}") from e


_OUT_OF_MEMORY = re.compile(r"can't allocate memory|Cannot allocate memory|not enough memory|std::bad_alloc")
_TOO_SMALL = re.compile(r"too small|can't be greater than actual input size|smaller than|non-positive")


def failure_reason(e: BaseException, h: int, w: int, n: int, plural: bool = False) -> str:
    """What a failure of the network on ``n`` H x W images says: out of memory (an
    oversized image was blamed as "smaller than its receptive field?": issue 24, case 18),
    an image below the receptive field (only when the error says so), or a plain failure.
    ``plural``: "these H x W images" (a training tuple) instead of "this H x W image"."""
    what = f"these {h} x {w} images" if plural else f"this {h} x {w} image"
    if isinstance(e, MemoryError) or _OUT_OF_MEMORY.search(str(e)):
        return (f"the network ran out of memory on {what} (a batch of {n}): resize the images "
                f"or lower the batch size (--batch-size)")
    if _TOO_SMALL.search(failure_text(e)):
        return f"the network fails on {what} (smaller than its receptive field?)"
    return f"the network fails on {what}"


def serialAllFeats(net: SimpleNN, imPath, imageFns, outFn, useGPU=None, numThreads=None,
                   batchSize: int = 10, precision: str = "exact") -> None:
    """Write the representations of ``imPath + imageFns[i]`` to ``outFn`` as MATLAB's
    ``.bin`` (little-endian float32, image after image).

    Images are decoded by ``numThreads`` threads (default: all cores) ahead of the
    network; consecutive images of equal size run in batches of up to ``batchSize``
    (mixed sizes are fine: grouped by size, written in list order).  Progress goes
    to a ``<outFn>.partial`` file plus a ``.partial.json`` sidecar, checkpointed every
    few batches; a rerun with the same network (weights, layer settings, average
    image) and list resumes there, and the file is renamed to ``outFn`` only when
    complete.  ``useGPU`` None = when available (MATLAB's default is true).
    ``precision`` (not in MATLAB): 'exact' (float32, TF32 off: MatConvNet's numbers) or
    'fast' (bf16 trunk, float32 head; see :mod:`matnet.precision`).  On a GPU the
    batches go from pinned memory asynchronously and the features come back once per
    checkpoint, not once per batch.

    Checked before any image is computed: the list is not empty, every image exists,
    the output folder exists and is writable.  An image that cannot be read, that
    fails in the network (e.g. smaller than its receptive field) or whose
    representation has a different length from the others (MATLAB would write a
    garbled file) raises an error naming it; write errors name the file.

    Under torch.distributed (torchrun, more than one rank) every rank calls it with
    the same arguments: each extracts its contiguous shard (whole groups of
    ``batchSize*8`` images, so the batches and the bytes are those of one process)
    into ``<outFn>.shard<r>of<W>`` (resumable as above), and rank 0 concatenates the
    shards into ``outFn``; ``outFn``'s folder must be one every rank sees.
    """
    check_precision(precision)
    if distributed.is_distributed():
        _serial_all_feats_sharded(net, imPath, imageFns, outFn, useGPU, numThreads, batchSize, precision)
    else:
        _extract(net, imPath, imageFns, outFn, useGPU, numThreads, batchSize, precision)


def extraction_shard(n: int, batchSize: int) -> range:
    """This rank's contiguous share of ``n`` images: whole chunks of batchSize*8 (the
    groups one process decodes and batches together), so sharding keeps the bits."""
    return distributed.shard(n, unit=max(1, int(batchSize)) * _CHUNK_BATCHES)


def _serial_all_feats_sharded(net, imPath, imageFns, outFn, useGPU, numThreads, batchSize, precision) -> None:
    outFn = Path(outFn)
    imageFns = list(imageFns)
    if not imageFns:
        raise ValueError(f"{outFn}: the image list is empty (imPath {imPath}): nothing to compute")
    r, W = distributed.rank(), distributed.world_size()
    distributed.check_same(f"{len(imageFns)} images, {fingerprint(net, str(imPath), imageFns)[:16]}, "
                           f"batchSize {batchSize}, {outFn.name}", "serialAllFeats inputs (images, network)")
    mine = extraction_shard(len(imageFns), batchSize)
    part = Path(f"{outFn}.shard{r}of{W}")
    done = Path(f"{part}.json")
    fp = fingerprint(net, str(imPath), imageFns[mine.start:mine.stop], precision)
    if not is_complete(done, part, fp):  # a shard completed by an earlier, interrupted run is kept
        if len(mine):
            _extract(net, imPath, imageFns[mine.start:mine.stop], part, useGPU, numThreads, batchSize, precision)
        else:  # more ranks than chunks of images
            write_bytes(part, b"")
        mark_complete(done, fp, [mine.start, mine.stop])
    sizes = distributed.all_gather_json(part.stat().st_size, "serialAllFeats: shards done")
    shards = [distributed.shard(len(imageFns), max(1, int(batchSize)) * _CHUNK_BATCHES, rr, W) for rr in range(W)]
    dims = {sz // (4 * len(sh)) for sz, sh in zip(sizes, shards) if len(sh)}
    if len(dims) > 1:  # images of other sizes in another shard, no fixed-size head: one process raises too
        raise ValueError(f"{outFn}: the shards hold representations of different lengths "
                         f"({', '.join(str(d) for d in sorted(dims))} values): a .bin holds one D for all "
                         f"images (use a network ending in a fixed-size head or images of one size)")

    def merge():
        with output_lock(outFn, lock=f"{outFn}.partial.lock"):  # a killed merge's temporary removed first
            with atomic_write(outFn) as out:
                for rr, size in enumerate(sizes):
                    p = Path(f"{outFn}.shard{rr}of{W}")
                    if not p.is_file() or p.stat().st_size != size:
                        raise FileNotFoundError(
                            f"{p}: rank {rr}'s shard ({size} bytes) is not visible from rank 0; "
                            f"the output folder must be on a filesystem every rank shares")
                    with open(p, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 24)
        for rr in range(W):
            Path(f"{outFn}.shard{rr}of{W}").unlink(missing_ok=True)
            Path(f"{outFn}.shard{rr}of{W}.json").unlink(missing_ok=True)
    distributed.on_rank0(merge, "serialAllFeats: merge the shards")


def _extract(net: SimpleNN, imPath, imageFns, outFn, useGPU, numThreads, batchSize, precision="exact") -> None:
    """serialAllFeats in this process (see there)."""
    outFn = Path(outFn)
    imageFns = list(imageFns)
    n = len(imageFns)
    if n == 0:
        raise ValueError(f"{outFn}: the image list is empty (imPath {imPath}): nothing to compute")
    batchSize = max(1, int(batchSize))
    numThreads = numThreads or distributed.cpu_share()
    device = compute_device(useGPU)
    mean = _mean(net)
    _check_output(outFn)
    # a killed write's temporaries (the .bin's, its .partial.json's, its .done.json's) removed first
    with output_lock(outFn, lock=f"{outFn}.partial.lock", sidecars=(f"{outFn}.partial.json", done_path(outFn))):
        _extract_locked(net, imPath, imageFns, outFn, device, numThreads, batchSize, precision, mean)


def _extract_locked(net, imPath, imageFns, outFn, device, numThreads, batchSize, precision, mean) -> None:
    """_extract's work, under the output's lock: one run at a time writes ``<outFn>.partial``
    (two runs into one output mixed their features: issue 24, case 1)."""
    if _from_shards(net, imPath, imageFns, outFn, device, numThreads, batchSize, precision, mean):
        return
    n = len(imageFns)
    paths = [str(imPath) + fn for fn in imageFns]
    ck = PartialFeatures(outFn, fingerprint(net, str(imPath), imageFns, precision, stats=False), n, paths)
    start = ck.resume()
    chunk = batchSize * _CHUNK_BATCHES
    try:
        _check_images(paths[start:], imPath)
        mean_t = device_mean(mean, device)
        with _on(net, device), ThreadPoolExecutor(numThreads) as pool, \
                tqdm(total=n, initial=start, desc="serialAllFeats", unit="im", smoothing=0.1,
                     disable=not distributed.is_rank0()) as bar:
            def submit(s):
                return [pool.submit(imread_uint8, p) for p in paths[s:s + chunk]]
            pending = submit(start) if start < n else []
            for s in range(start, n, chunk):
                ims = [f.result() for f in pending]
                pending = submit(s + chunk) if s + chunk < n else []  # decode ahead
                order, parts = [], []  # device results of this chunk, copied back together
                by_size: dict[tuple, list[int]] = {}
                for i, im in enumerate(ims):
                    by_size.setdefault(im.shape, []).append(i)
                for idx in by_size.values():
                    for b in range(0, len(idx), batchSize):
                        sel = idx[b:b + batchSize]
                        names = [paths[s + i] for i in sel]
                        feats = _forward_named(net, batch_tensor([ims[i] for i in sel], device), mean_t,
                                               device, names, precision)
                        if ck.D is None:
                            ck.D = feats.shape[1]
                        if feats.shape[1] != ck.D:
                            raise ValueError(
                                f"{names[0]}: its {ims[sel[0]].shape[0]} x {ims[sel[0]].shape[1]} image gives "
                                f"{feats.shape[1]} values, earlier images {ck.D} (a .bin holds one D for all "
                                f"images: use a network ending in a fixed-size head or images of one size)")
                        order += sel
                        parts.append(feats)
                        bar.update(len(sel))
                out = np.empty((len(ims), ck.D), np.float32)
                out[order] = torch.cat(parts).cpu().numpy()
                ck.append(out)
            ck.finish(outFn)
    finally:
        ck.close()


_SHARD = re.compile(r"\.shard(\d+)of(\d+)(\.json|\.partial|\.partial\.json|\.partial\.lock)?$")


def _from_shards(net, imPath, imageFns, outFn, device, numThreads, batchSize, precision, mean) -> bool:
    """A one-process run after a killed torchrun run of the same output: the finished
    shards (``<outFn>.shard<r>of<W>`` whose ``.json`` records this network and these
    images, sizes and times included) are reused, the images between them computed, all
    concatenated into ``outFn``; every shard file is removed, and what was reused or
    removed is said on stderr.  Before, the shards were ignored and left on disk (issue
    24, case 12).  Returns False when there are no shard files."""
    files = sorted(p for p in Path(outFn).parent.glob(glob_escape(Path(outFn).name) + ".shard*")
                   if _SHARD.fullmatch(p.name[len(Path(outFn).name):]))
    if not files:
        return False
    say = lambda m: print(f"{outFn}: {m}", file=sys.stderr, flush=True)  # noqa: E731
    keep = _finished_shards(files, net, imPath, imageFns, precision)
    gone = [f.name for f in files if not any(f == d or f.name == d.name + ".json" for _, _, d in keep)]
    if gone:
        say(f"removed shard files of an earlier multi-process run that do not match this network and image "
            f"list or were unfinished: {', '.join(gone)}")
    if not keep:
        for f in files:
            f.unlink(missing_ok=True)
        return False
    segments, pos = [], 0
    for start, stop, data in keep + [(len(imageFns), len(imageFns), None)]:
        if start > pos:
            gap = Path(f"{outFn}.images{pos}-{start}")
            _extract_locked(net, imPath, imageFns[pos:start], gap, device, numThreads, batchSize, precision, mean)
            segments.append(gap)
        if data is not None:
            segments.append(data)
        pos = stop
    dims = {p.stat().st_size // 4 // max(1, n) for p, n in
            zip(segments, [b - a for a, b in _ranges(keep, len(imageFns))])}
    if len(dims) > 1:
        raise ValueError(f"{outFn}: the reused shards and the images computed now give representations of "
                         f"different lengths ({', '.join(map(str, sorted(dims)))} values)")
    with atomic_write(outFn) as out:
        for p in segments:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 24)
    for p in segments + files:
        Path(p).unlink(missing_ok=True)
    say(f"reused {len(keep)} finished shard(s) of an earlier multi-process run ("
        + ", ".join(f"{d.name[len(Path(outFn).name) + 1:]}: images {a}-{b}" for a, b, d in keep)
        + f"), computed the other {len(imageFns) - sum(b - a for a, b, _ in keep)} images")
    return True


def _finished_shards(files, net, imPath, imageFns, precision) -> list:
    """(start, stop, data file) of the shards among ``files`` whose ``.json`` records this
    network and these images (sizes and times included), non-overlapping, in order."""
    found = []
    for js in (f for f in files if f.name.endswith(".json") and not f.name.endswith(".partial.json")):
        data = js.with_name(js.name[:-len(".json")])
        try:
            start, stop = json.loads(js.read_text())["images"]
            ok = 0 <= start < stop <= len(imageFns) and is_complete(
                js, data, fingerprint(net, str(imPath), imageFns[start:stop], precision))
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        if ok:
            found.append((start, stop, data))
    keep, end = [], 0
    for start, stop, data in sorted(found):
        if start >= end:
            keep.append((start, stop, data))
            end = stop
    return keep


def _ranges(keep, n):
    """The image ranges of the segments _from_shards concatenates (reused shards and gaps), in order."""
    out, pos = [], 0
    for a, b, _ in keep + [(n, n, None)]:
        if a > pos:
            out.append((pos, a))
        if b > a:
            out.append((a, b))
        pos = b
    return out


def extract_features(net, imPath, imageFns, outFn: Path, log=print, **kw) -> bool:
    """serialAllFeats into ``outFn``, skipped when ``outFn`` is complete for this network,
    image list and precision (:func:`matnet.feature_files.features_complete`); its
    ``.done.json`` written after.  Returns whether anything was computed."""
    precision = kw.get("precision", "exact")
    if features_complete(net, imPath, imageFns, outFn, precision):
        log(f"{outFn}: complete for this network and image list (names, sizes, modification times), reused")
        return False
    done = done_path(outFn)
    done.unlink(missing_ok=True)
    serialAllFeats(net, imPath, imageFns, outFn, **kw)
    mark_complete(done, fingerprint(net, str(imPath), list(imageFns), precision), len(imageFns))
    return True
