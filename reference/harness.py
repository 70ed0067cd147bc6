"""The reference harness: a released network on a real dataset, ours vs published.

Layout of the data root (``--root`` or ``$MATNET_REFERENCE_ROOT``), as the original
``localPaths`` has it::

    <root>/networks/<name>.mat      released networks, e.g. vd16_pitts30k_conv5_3_vlad_preL2_intra_white.mat
    <root>/datasets/<spec>.mat      dbStruct specs (netvlad_v100_datasets.tar.gz): pitts250k_test.mat, tokyo247.mat, ...
    <root>/Pittsburgh/images/ and queries/   (dsetRootPitts)
    <root>/Tokyo247/images/ and query/       (dsetRootTokyo247)
    <root>/TokyoTM/images/                   (dsetRootTokyoTM)
    <root>/output/                  features (.bin, resumable), JSON records and plots written here

The dataset root is checked against its spec (counts, missing files, PNG/JPG) before
any compute; features go through serialAllFeats (queries with batch size 1 where
their sizes vary); recall through testFromFn with the dataset's protocol.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from matnet.images import resolve_image_path, vl_imreadjpeg
from reference.published import published

RECALL_NS = [1, 2, 3, 4, 5] + list(range(10, 101, 5))

# dataset name -> (spec name, db root folder under <root>, query batch size)
DATASETS = {
    "pitts30k_test": ("pitts30k_test", "Pittsburgh", 16),
    "pitts30k_val": ("pitts30k_val", "Pittsburgh", 16),
    "pitts250k_test": ("pitts250k_test", "Pittsburgh", 16),
    "pitts250k_val": ("pitts250k_val", "Pittsburgh", 16),
    "tokyo247": ("tokyo247", "Tokyo247", 1),
    "tokyoTM_val": ("tokyoTM_val", "TokyoTM", 16),
}


class ReferenceError_(ValueError):
    """The data root does not hold what the harness needs; the message says what is missing."""


def reference_root(root=None) -> Path | None:
    r = root or os.environ.get("MATNET_REFERENCE_ROOT")
    return Path(r).expanduser() if r else None


def make_db(dataset: str, specDir, dbRoot):
    """The matnet db object for a harness dataset name."""
    from matnet.datasets import dbPitts, dbTokyo247, dbTokyoTimeMachine
    if dataset not in DATASETS:
        raise ReferenceError_(f"unknown dataset '{dataset}' (known: {', '.join(DATASETS)})")
    spec = DATASETS[dataset][0]
    if spec.startswith("pitts"):
        size, which = spec[len("pitts"):].split("_")
        return dbPitts(size == "250k", which, specDir=str(specDir), dbRoot=str(dbRoot))
    if spec == "tokyo247":
        return dbTokyo247(specDir=str(specDir), dbRoot=str(dbRoot))
    return dbTokyoTimeMachine(spec.split("_")[1], specDir=str(specDir), dbRoot=str(dbRoot))


@dataclass
class RootCheck:
    found: int = 0
    other_extension: int = 0
    missing: list[str] = field(default_factory=list)

    def line(self, what: str, total: int) -> str:
        s = f"{what}: {self.found + self.other_extension}/{total} images present"
        if self.other_extension:
            s += f" ({self.other_extension} under the other extension, e.g. .png for a listed .jpg)"
        if self.missing:
            s += f"; {len(self.missing)} missing, first: {self.missing[0]}"
        return s


def check_images(folder: str, fns) -> RootCheck:
    """Count the listed images under ``folder``: present, present as .png/.jpg instead, missing."""
    chk = RootCheck()
    with warnings.catch_warnings():  # the substitution is reported in the summary line instead
        warnings.simplefilter("ignore")
        for fn in fns:
            p = Path(folder) / fn
            try:
                found = resolve_image_path(p)
            except FileNotFoundError:
                chk.missing.append(str(p))
                continue
            if found == p:
                chk.found += 1
            else:
                chk.other_extension += 1
    return chk


def published_table(network: str, dataset: str, dims: int):
    return {r.n: r for r in published(network=network, test_set=dataset, dims=dims)}


def format_table(recallNs, recall, nQ, pub) -> str:
    """Ours vs published per N, with counts and the difference in queries."""
    lines = [f"{'N':>4} {'ours %':>8} {'ours #':>7} {'published %':>12} {'pub #':>6} {'diff (queries)':>15}"]
    for n, r in zip(recallNs, recall):
        ours_n = int(round(r * nQ))
        p = pub.get(n)
        if p is None:
            lines.append(f"{n:>4} {100 * r:8.3f} {ours_n:7d} {'-':>12} {'-':>6} {'-':>15}")
        else:
            pub_n = p.count if p.count is not None else int(round(p.recall / 100 * p.num_queries))
            lines.append(f"{n:>4} {100 * r:8.3f} {ours_n:7d} {p.recall:12.3f} {pub_n:6d} {ours_n - pub_n:+15d}")
    return "\n".join(lines)


def plot_recall(path: Path, recallNs, curves: dict, title: str) -> None:
    """recall@N curves (label -> (Ns, recall %)) written as a PNG, atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (ns, rec) in curves.items():
        ax.plot(ns, rec, marker="o" if "published" in label else None, linestyle="--" if "published" in label else "-",
                label=label)
    ax.set_xlabel("N (number of top database candidates)")
    ax.set_ylabel("recall@N (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def run_reference(net_path, dataset: str, dims=(4096,), root=None, specDir=None, dbRoot=None,
                  outDir=None, useGPU=None, batchSize: int = 16, numThreads: int | None = None,
                  network_name: str | None = None, log=print) -> dict:
    """Run the released network ``net_path`` on ``dataset`` and compare with the published numbers.

    ``dims``: output dimensionalities to evaluate (cropToDim for fewer than the full D).
    Returns the JSON record (also written, with the plot, to ``outDir``)."""
    from converters.network import load_net
    from matnet.extract import computeRepresentation, serialAllFeats
    from matnet.evaluate import testFromFn

    root = reference_root(root)
    net_path = Path(net_path)
    if not net_path.is_file() and root is not None:
        net_path = root / "networks" / (str(net_path) + ("" if net_path.suffix else ".mat"))
    if not net_path.is_file():
        raise ReferenceError_(f"network not found: {net_path} (put the released .mat under <root>/networks/)")
    name = network_name or net_path.stem
    specDir = Path(specDir or (root / "datasets" if root else "."))
    dbRoot = Path(dbRoot or (root / DATASETS[dataset][1] if root else "."))
    outDir = Path(outDir or (root / "output" if root else "."))
    outDir.mkdir(parents=True, exist_ok=True)
    if not (specDir / f"{DATASETS[dataset][0]}.mat").is_file():
        raise ReferenceError_(f"dataset spec not found: {specDir / (DATASETS[dataset][0] + '.mat')}")

    db = make_db(dataset, specDir, dbRoot)
    log(f"dataset {dataset}: {db.numImages} database images, {db.numQueries} queries; root {dbRoot}")
    chk_db, chk_q = check_images(db.dbPath, db.dbImageFns), check_images(db.qPath, db.qImageFns)
    log(chk_db.line("database", db.numImages))
    log(chk_q.line("queries", db.numQueries))
    if chk_db.missing or chk_q.missing:
        raise ReferenceError_(f"{len(chk_db.missing)} database and {len(chk_q.missing)} query images of "
                              f"{dataset} are missing under {dbRoot} (first: "
                              f"{(chk_db.missing + chk_q.missing)[0]})")

    useGPU = torch.cuda.is_available() if useGPU is None else useGPU
    net = load_net(net_path).eval()
    if useGPU:
        net = net.cuda()
    t0 = time.perf_counter()
    computeRepresentation(net, vl_imreadjpeg(Path(db.dbPath) / db.dbImageFns[0]), useGPU=useGPU)
    per_image = time.perf_counter() - t0
    total = db.numImages + db.numQueries
    log(f"estimated extraction time: {per_image * total / 3600:.1f} h ({per_image:.2f} s/image x {total} images, "
        f"{'GPU' if useGPU else 'CPU'})")

    base = outDir / f"{name}_{dataset}"
    dbFn, qFn = f"{base}_db.bin", f"{base}_q.bin"
    t0 = time.perf_counter()
    serialAllFeats(net, db.dbPath, db.dbImageFns, dbFn, batchSize=batchSize, useGPU=useGPU,
                   numThreads=numThreads)
    serialAllFeats(net, db.qPath, db.qImageFns, qFn, batchSize=DATASETS[dataset][2], useGPU=useGPU,
                   numThreads=numThreads)
    extract_s = time.perf_counter() - t0
    fullD = os.path.getsize(qFn) // (4 * db.numQueries)

    record = {"network": name, "network_file": str(net_path), "dataset": dataset,
              "num_queries": int(db.numQueries), "num_images": int(db.numImages), "recallNs": RECALL_NS,
              "device": "GPU" if useGPU else "CPU", "extract_seconds": extract_s,
              "images_per_second": total / extract_s if extract_s > 0 else None, "results": []}
    curves = {}
    for d in dims:
        crop = 0 if d >= fullD else int(d)
        recall, _, _, _ = testFromFn(db, dbFn, qFn, recallNs=RECALL_NS, cropToDim=crop)
        recall = np.asarray(recall, dtype=np.float64)
        pub = published_table(name, dataset, int(d))
        log(f"\n{name} on {dataset}, {d}-D ({'cropToDim %d' % crop if crop else 'full'}):")
        log(format_table(RECALL_NS, recall, db.numQueries, pub))
        record["results"].append({
            "dims": int(d), "cropToDim": crop, "recall": recall.tolist(),
            "counts": [int(round(r * db.numQueries)) for r in recall],
            "published": {str(n): p.recall for n, p in pub.items()},
            "published_source": next(iter(pub.values())).source if pub else None})
        curves[f"ours {d}-D"] = (RECALL_NS, 100 * recall)
        if pub:
            ns = sorted(pub)
            curves[f"published {d}-D"] = (ns, [pub[n].recall for n in ns])
    write_json(Path(f"{base}_recall.json"), record)
    plot_recall(Path(f"{base}_recall.png"), RECALL_NS, curves, f"{name} on {dataset}")
    log(f"\nwrote {base}_recall.json and {base}_recall.png")
    return record
