"""What the suite's steps share: the sizes, the device, the network, the synthetic street
and JPEG files (each built once, when first needed; a failure to build is the failure of
every step that needs it), timing with the device synchronised, peak memory."""
from __future__ import annotations

import copy
import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..synthetic.vgg16_netvlad import VGG16_WIDTHS
from .flops import network_flops


@dataclass(frozen=True)
class Sizes:
    """The workload of one suite run: ``FULL`` (the released network at 480 x 640, the
    figures the README quotes) or ``SMALL`` (every step of the same code in seconds on a
    CPU, for CI)."""
    name: str
    widths: tuple           # channels of VGG16's five blocks
    clusters: int           # NetVLAD's K
    pca_dim: int            # WPCA output
    image: tuple            # (H, W) of every image
    n_exact: int            # images of the exactness check
    batch_sizes: tuple      # extraction batch sizes
    n_jpegs: int            # JPEG files of the file pipeline
    n_jpegs_bs1: int        # ... at batch size 1
    min_seconds: float      # least time of one in-memory throughput measurement
    street_images: int      # database images of the training street
    street_queries: int
    train_batches: int      # trainWeakly batches timed per precision
    search_rows: int
    search_dim: int
    search_queries: int
    search_k: int
    search_cap: str         # memoryCap of the streamed search
    kmeans: tuple           # (descriptors, D, K)
    ddp_images: int         # images of the sharded extraction
    warmup: int = 2         # untimed runs before a timed one
    min_iters: int = 3      # least timed batches of an in-memory throughput measurement


FULL = Sizes("full", VGG16_WIDTHS, 64, 4096, (480, 640), n_exact=8, batch_sizes=(1, 8, 32, 64), n_jpegs=2000,
             n_jpegs_bs1=400, min_seconds=2.0, street_images=80, street_queries=24, train_batches=6,
             search_rows=1_000_000, search_dim=4096, search_queries=1000, search_k=100, search_cap="4GiB",
             kmeans=(50_000, 512, 64), ddp_images=256)
SMALL = Sizes("small", (8, 16, 32, 32, 32), 16, 128, (64, 80), n_exact=8, batch_sizes=(1, 8, 32, 64), n_jpegs=32,
              n_jpegs_bs1=8, min_seconds=0.0, street_images=32, street_queries=8, train_batches=1,
              search_rows=10_000, search_dim=256, search_queries=100, search_k=100, search_cap="30MiB",
              kmeans=(5_000, 64, 16), ddp_images=24, warmup=0, min_iters=1)

PITTS30K_QUERIES = 7416       # query tuples of one Pitts30k training epoch
PITTS30K_IMAGES = 10_000 + 7416  # images of one cache refresh (database + queries)
PITTS30K_REFRESHES = 8        # per epoch at compFeatsFrequency 1000, batchSize 4: 7 inside + 1 at its end


class Workspace:
    """The suite's shared state (see the module doc)."""

    def __init__(self, record, device: torch.device, sizes: Sizes, tmp: Path, threads: int):
        self.record, self.device, self.sizes, self.tmp, self.threads = record, device, sizes, Path(tmp), threads
        self.cuda = device.type == "cuda"
        self._made: dict = {}

    # ----- timing and memory
    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def timed(self, fn, *a, **kw):
        """(fn's result, seconds) with the device idle before and after."""
        self.sync()
        t = time.perf_counter()
        out = fn(*a, **kw)
        self.sync()
        return out, time.perf_counter() - t

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mib(self) -> float:
        """Peak GPU memory allocated since :meth:`reset_peak` (MiB); on the CPU the process's
        peak resident memory so far."""
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    @property
    def memory_unit(self) -> str:
        return "MiB (GPU, peak allocated)" if self.cuda else "MiB (process peak RSS)"

    def free_device_memory(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()

    # ----- shared inputs, built once
    def _once(self, key, make):
        if key not in self._made:
            try:
                self._made[key] = (True, make())
            except Exception as e:
                self._made[key] = (False, e)
        ok, v = self._made[key]
        if not ok:
            raise RuntimeError(f"building the suite's {key} failed: {type(v).__name__}: {v}") from v
        return v

    @property
    def street(self):
        """The synthetic training street (dbSynthetic) at the suite's image size."""
        def make():
            from ..synthetic.db import dbSynthetic
            from ..synthetic.places import SplitSpec, make_split
            root = self.tmp / "street"
            make_split(root, SplitSpec("synth_train", "train", self.sizes.street_images, self.sizes.street_queries, 7),
                       self.sizes.image)
            return dbSynthetic("train", root)
        return self._once("street", make)

    def images(self, fns, root) -> list[np.ndarray]:
        from ..images import imread_uint8
        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(lambda f: imread_uint8(root + f), fns))

    @property
    def net(self):
        """VGG16-NetVLAD-WPCA in the released layout (CPU, eval mode), random weights with
        realistic scales, the released averageImage; centres from conv5_3 features of the
        street's query images (as getClusters samples training images), computed at half
        the image size."""
        def make():
            from ..synthetic.vgg16_netvlad import vgg16_netvlad
            db = self.street
            ims = self.images(db.qImageFns[:4], db.qPath)
            x = torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).float()
            x = torch.nn.functional.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True)
            return vgg16_netvlad(widths=self.sizes.widths, num_clusters=self.sizes.clusters,
                                 pca_dim=self.sizes.pca_dim, centre_images=x, seed=0).eval()
        return self._once("network", make)

    def net_copy(self, device=None):
        """A copy of :attr:`net` on ``device`` (default: the suite's)."""
        return copy.deepcopy(self.net).to(self.device if device is None else device)

    @property
    def flops(self) -> dict:
        """The network's FLOPs per image at the suite's size (see :mod:`.flops`)."""
        return self._once("flops", lambda: network_flops(self.net, *self.sizes.image))

    @property
    def jpegs(self) -> tuple[str, list[str]]:
        """(root, file names): ``n_jpegs`` JPEG files of the street's database images
        (their encoded bytes repeated: every file is decoded in full, as any JPEG)."""
        def make():
            db = self.street
            root = self.tmp / "jpegs"
            root.mkdir(parents=True, exist_ok=True)
            blobs = [Path(db.dbPath + f).read_bytes() for f in db.dbImageFns]
            fns = [f"im{i:05d}.jpg" for i in range(self.sizes.n_jpegs)]
            for i, fn in enumerate(fns):
                (root / fn).write_bytes(blobs[i % len(blobs)])
            return str(root) + os.sep, fns
        return self._once("JPEG files", make)

    def device_batch(self, n: int, precision_layout: bool = True) -> torch.Tensor:
        """``n`` street images (cycled) as serialAllFeats feeds them: float32, mean
        subtracted, NCHW view of NHWC (channels_last), on the device."""
        from ..images import mean_colour
        db = self.street
        key = ("batch-src", self.device.type)
        src = self._once(key, lambda: torch.from_numpy(np.stack(self.images(db.dbImageFns[:8], db.dbPath))))
        idx = torch.arange(n) % src.shape[0]
        x = src[idx].to(self.device).permute(0, 3, 1, 2).float()
        mean = torch.from_numpy(mean_colour(self.net.meta["normalization"]["averageImage"])).to(self.device)
        return x - mean.view(1, 3, 1, 1)
