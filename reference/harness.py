"""The reference harness: a released network on a real dataset, ours vs published.

Layout of the data root (``--root`` or ``$MATNET_REFERENCE_ROOT``), as the original
``localPaths`` has it::

    <root>/networks/<name>.mat      released networks, e.g. vd16_pitts30k_conv5_3_vlad_preL2_intra_white.mat
    <root>/datasets/<spec>.mat      dbStruct specs (netvlad_v100_datasets.tar.gz): pitts250k_test.mat, tokyo247.mat, ...
    <root>/Pittsburgh/images/ and queries/   (dsetRootPitts)
    <root>/Tokyo247/images/ and query/       (dsetRootTokyo247)
    <root>/TokyoTM/images/                   (dsetRootTokyoTM)
    <root>/output/                  features (.bin, resumable), JSON records and plots written here

This module only finds the files under the data root and the published numbers: the
evaluation itself is :func:`matnet.evaluation.evaluate_dataset`, what ``matnet
evaluate`` runs (images checked against the spec before any compute, serialAllFeats
resumable, testFromFn with the dataset's protocol, table, JSON record and plot).
"""
from __future__ import annotations

import os
from pathlib import Path

from matnet.recall_at_n import RECALL_NS
from reference.published import published

# dataset name -> (spec name, db root folder under <root>, query batch size)
DATASETS = {
    "pitts30k_test": ("pitts30k_test", "Pittsburgh", 16),
    "pitts30k_val": ("pitts30k_val", "Pittsburgh", 16),
    "pitts250k_test": ("pitts250k_test", "Pittsburgh", 16),
    "pitts250k_val": ("pitts250k_val", "Pittsburgh", 16),
    "tokyo247": ("tokyo247", "Tokyo247", 1),
    "tokyoTM_val": ("tokyoTM_val", "TokyoTM", 16),
}

__all__ = ["DATASETS", "RECALL_NS", "ReferenceError_", "reference_root", "published_reference", "run_reference"]


class ReferenceError_(ValueError):
    """The data root does not hold what the harness needs; the message says what is missing."""


PROJECT_PAGE = "https://www.di.ens.fr/willow/research/netvlad/"  # the released networks and dataset specs


def reference_root(root=None) -> Path | None:
    r = root or os.environ.get("MATNET_REFERENCE_ROOT")
    return Path(r).expanduser() if r else None


def _root_source(root) -> str:
    """Where the data root came from, or that none is set, for error messages."""
    if root:
        return f"the data root {reference_root(root)} (--data-root)"
    if os.environ.get("MATNET_REFERENCE_ROOT"):
        return f"the data root {reference_root()} ($MATNET_REFERENCE_ROOT)"
    return "no data root: neither --data-root nor $MATNET_REFERENCE_ROOT is set"


def _missing(what: str, looked: list, root_arg, hint: str) -> "ReferenceError_":
    return ReferenceError_(f"{what} not found; looked for {' and '.join(str(p) for p in looked)} "
                           f"({_root_source(root_arg)}). {hint} The released networks and the dataset "
                           f"specs are on the authors' project page, {PROJECT_PAGE}")


def published_reference(network: str, dataset: str):
    """``dims -> ({N: (recall %, count or None)}, source)`` from reference/published.csv."""
    def lookup(dims: int):
        rows = {r.n: r for r in published(network=network, test_set=dataset, dims=dims)}
        source = next(iter(rows.values())).source if rows else None
        return {n: (r.recall, r.count) for n, r in rows.items()}, source
    return lookup


def _folder_of(name: str) -> str | None:
    """The image folder under the data root of a MATLAB dataset name."""
    if name in DATASETS:
        return DATASETS[name][1]
    return ("Pittsburgh" if name.startswith("pitts") else "TokyoTM" if name.startswith(("tokyoTM", "tokyoTinyTM"))
            else None)


def run_reference(net_path, dataset: str, dims=(4096,), root=None, specDir=None, dbRoot=None,
                  outDir=None, useGPU=None, batchSize: int = 16, numThreads: int | None = None,
                  network_name: str | None = None, log=print, precision: str = "exact") -> dict:
    """Run the released network ``net_path`` on ``dataset`` and compare with the published numbers.

    ``dataset``: any form :func:`matnet.datasets.parse_dataset` reads; a MATLAB name
    (pitts30k_test, tokyo247, ...) has its spec under ``specDir`` (default
    ``<root>/datasets``) and images under ``dbRoot`` (default ``<root>/Pittsburgh``,
    ``Tokyo247``, ``TokyoTM``), ``root`` being the data root; published numbers are looked
    up by the dataset's name (none for a dataset the paper does not report).
    ``dims``: output dimensionalities to evaluate (cropToDim for fewer than the full D).
    ``precision``: 'exact' (float32, the published setting) or 'fast' (bf16 trunk).
    Returns the JSON record (also written, with the plot, to ``outDir``)."""
    from converters.network import load_net
    from matnet.datasets import parse_dataset
    from matnet.datasets.named import MATLAB_NAMES
    from matnet.evaluation import EvaluationError, evaluate_dataset

    root_arg, root = root, reference_root(root)
    net_path = Path(net_path)
    looked = [net_path]
    if not net_path.is_file() and root is not None:
        net_path = root / "networks" / (str(net_path) + ("" if net_path.suffix else ".mat"))
        looked.append(net_path)
    if not net_path.is_file():
        where = f"{root / 'networks'}/" if root is not None else "networks/ under a data root"
        raise _missing(f"network '{looked[0]}'", looked, root_arg,
                       f"Give --net a file, or put the released .mat in {where} and name it without the "
                       f"folder (set $MATNET_REFERENCE_ROOT or --data-root).")
    name = network_name or net_path.stem
    if dataset in MATLAB_NAMES and root is not None:
        specDir = specDir or root / "datasets"
        folder = _folder_of(dataset)
        dbRoot = dbRoot or (root / folder if folder else None)
    if dataset in MATLAB_NAMES:  # its spec: under the data root, --spec-dir, else localPaths' dsetSpecDir
        from matnet.datasets.local_paths import localPaths
        spec = Path(specDir if specDir is not None else localPaths()["dsetSpecDir"]) / f"{dataset}.mat"
        if not spec.is_file():
            raise _missing(f"dataset spec '{dataset}'", [spec], root_arg,
                           "Put the spec in datasets/ under the data root, or give --spec-dir.")
    outDir = Path(outDir or (root / "output" if root else "."))
    db = parse_dataset(dataset, dbRoot, specDir)
    qBatch = DATASETS[db.name][2] if db.name in DATASETS else None
    log(f"root {db.dbPath}")
    try:
        return evaluate_dataset(load_net(net_path), db, outDir, name, dims=list(dims), protocol="matlab",
                                useGPU=useGPU, batchSize=batchSize, qBatchSize=qBatch, numThreads=numThreads,
                                reference=published_reference(name, db.name), netFile=net_path, log=log,
                                precision=precision)
    except EvaluationError as e:
        raise ReferenceError_(f"{e} under {db.dbPath}") from e
