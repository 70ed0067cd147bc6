"""``matnet evaluate``: any network on any dataset, recall@N with a chosen protocol.

--dataset vpr:ROOT[:split]   VPR folder format, ROOT/images/<split>/{database,queries} (split default test)
--dataset msls:ROOT[:val]    Mapillary SLS, ROOT/train_val/<city>/ (official val cities cph, sf; or train)
--dataset spec:SPEC.mat      a NetVLAD dbStruct spec; --root is its image root (Pittsburgh/, Tokyo247/,
                             TokyoTM/ for the released specs, the dataset root for imported ones)

Extracts features with serialAllFeats (resumable; reused when complete), prints recall@1/5/10/20,
writes <out>/<net>_<dataset>_recall.json (recall at MATLAB's recallNs, the protocol) and
_recall.png.  --protocol matlab: testFromFn with the dataset's rules (Tokyo 24/7 NMS, TokyoTM
time filter; on vpr: datasets with --panorama-nms / --time-filter); vpr: plain kNN within 25 m
as gmberton/VPR-methods-evaluation.
"""
from __future__ import annotations

from pathlib import Path


def add_arguments(p) -> None:
    p.add_argument("--net", required=True, help="network file (.mat released/checkpoint/MatConvNet, .safetensors)")
    p.add_argument("--dataset", required=True, help="vpr:ROOT[:split] | msls:ROOT[:val|train] | spec:SPEC.mat")
    p.add_argument("--root", help="image root of a spec: dataset")
    p.add_argument("--dims", type=int, action="append", help="dimensionality to evaluate (repeatable; fewer "
                   "than the network's output: cropToDim + L2). Default: the full output")
    p.add_argument("--protocol", choices=["matlab", "vpr"], default="matlab",
                   help="matlab: testFromFn with the dataset's rules (default); vpr: plain kNN, 25 m")
    p.add_argument("--panorama-nms", action="store_true", help="vpr: datasets, matlab protocol: Tokyo 24/7's "
                   "per-panorama suppression with panoramas from the pano_id field (e.g. an exported Tokyo 24/7)")
    p.add_argument("--time-filter", action="store_true", help="vpr: datasets, matlab protocol: TokyoTM's rule, "
                   "results with the query's time stamp (YYYYMM from the names) dropped")
    p.add_argument("--out", default=".", help="output folder for features, JSON and plot (default: .)")
    p.add_argument("--batch-size", type=int, default=16, help="images per network batch (default 16)")
    p.add_argument("--cpu", action="store_true", help="do not use the GPU even when present")
    p.add_argument("--precision", choices=["exact", "fast"], default="exact",
                   help="exact: float32 as MatConvNet (default); fast: bf16 trunk, float32 head (not in MATLAB)")
    p.add_argument("--memory-cap", help="stream a database feature file larger than this (e.g. 8GB) "
                   "instead of loading it (default: when larger than half the available memory)")


def parse_dataset(text: str, root=None, panoramaNMS: bool = False, timeFilter: bool = False):
    """The dataset of a ``--dataset`` value (see the module docstring); the two flags
    are dbVPR's."""
    kind, sep, rest = text.partition(":")
    if not sep or kind not in ("vpr", "msls", "spec") or not rest:
        raise ValueError(f"--dataset {text!r}: expected vpr:ROOT[:split], msls:ROOT[:val] or spec:SPEC.mat")
    if kind == "spec":
        from ..datasets import db_from_spec
        if root is None:
            raise ValueError(f"--dataset {text}: a spec needs --root, the folder its image names are relative to")
        return db_from_spec(rest, root)
    path, split = rest, None
    head, _, tail = rest.rpartition(":")
    if head and tail and "/" not in tail:
        path, split = head, tail
    if kind == "vpr":
        from ..datasets import dbVPR
        return dbVPR(path, split or "test", panoramaNMS=panoramaNMS, timeFilter=timeFilter)
    if panoramaNMS or timeFilter:
        raise ValueError(f"--dataset {text}: --panorama-nms and --time-filter apply to vpr: datasets only")
    from ..datasets import dbMSLS
    return dbMSLS(path, split or "val")


def run(args) -> int:
    import matnet
    from ..evaluation import evaluate_dataset
    db = parse_dataset(args.dataset, args.root, args.panorama_nms, args.time_filter)
    net = matnet.load_net(args.net)
    evaluate_dataset(net, db, Path(args.out), Path(args.net).stem, dims=args.dims, protocol=args.protocol,
                     useGPU=False if args.cpu else None, batchSize=args.batch_size, netFile=args.net,
                     precision=args.precision, memoryCap=args.memory_cap)
    return 0
