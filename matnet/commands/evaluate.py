"""``matnet evaluate``: any network on any dataset, recall@N with a chosen protocol.

--dataset vpr:ROOT[:split]   VPR folder format, ROOT/images/<split>/{database,queries} (split default test)
--dataset msls:ROOT[:val]    Mapillary SLS, ROOT/train_val/<city>/ (official val cities cph, sf; or train)
--dataset spec:SPEC.mat      a NetVLAD dbStruct spec; --root is its image root (Pittsburgh/, Tokyo247/,
                             TokyoTM/ for the released specs, the dataset root for imported ones)

Extracts features with serialAllFeats (resumable; reused when complete), prints recall@1/5/10/20,
writes <out>/<net>_<dataset>_<protocol>[_<method>]_recall.json (recall at MATLAB's recallNs; the
record, written last) and _recall.png (matnet.evaluation.result_stem; <net> gets a hash suffix
when another network file of the same name already wrote into --out).  --protocol matlab: testFromFn with the dataset's rules (Tokyo 24/7 NMS, TokyoTM
time filter; on vpr: datasets with --panorama-nms / --time-filter); vpr: plain kNN within 25 m
as gmberton/VPR-methods-evaluation.

Search (not in MATLAB): exact by default; --search-method flat | ivfpq | <faiss index_factory>
searches with faiss instead and checks it against exact search on --search-check-sample
queries: both recalls are printed and stored as "search_check" in the JSON record
(<out>/<net>_<dataset>_<protocol>_<method>_recall.json), so the loss of an approximate index is visible.

Predictions (not in MATLAB): --save-predictions N writes each query's top-N (the recall's own
search), a JPEG panel per query and one self-contained HTML report beside the JSON record;
`matnet report A.json B.json` compares two such runs (docs/reports.md).
"""
from __future__ import annotations

import argparse
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
    p.add_argument("--search-method", default="exact", metavar="METHOD",
                   help="nearest-neighbour search for recall (not in MATLAB): exact (default, matnet's exact L2, "
                   "streamed under --memory-cap); flat (faiss IndexFlatL2, also exact); ivfpq (faiss "
                   "IVF<nlist>,PQ<m>x<nbits>: approximate, compressed); or any faiss index_factory string, e.g. "
                   "'IVF4096,PQ64', 'HNSW32', 'OPQ64,IVF4096,PQ64'. Checked before any extraction; the record is "
                   "then <net>_<dataset>_<protocol>_<method>_recall.json")
    p.add_argument("--search-params", metavar="NAME=INT,...",
                   help="faiss parameters, comma-separated integers: nlist (ivfpq: k-means cells, default 4 sqrt(N), "
                   "at most 65536), m (ivfpq: codes per vector, default D/16 rounded down to a divisor of D), "
                   "nbits (ivfpq: bits per code, default 8), nprobe (cells searched per query on IVF indexes, "
                   "default 32: higher = closer to exact, slower), efSearch (HNSW search breadth), trainSize "
                   "(database vectors sampled to train the index, default min(N, max(100000, 64 nlist))), seed "
                   "(of that sample, default 43). E.g. nlist=1024,m=64,nprobe=16")
    p.add_argument("--search-check-sample", type=int, metavar="COUNT",
                   help="with a faiss --search-method: recall@N of that search and of exact search on COUNT "
                   "sampled queries (all when fewer), printed side by side and stored as search_check (index, queries, "
                   "recallNs, approximate, exact) in the JSON record; 0 skips the check. Default 1000")
    p.add_argument("--save-predictions", "--num_preds_to_save", dest="save_predictions", type=int, default=0,
                   metavar="N", help="each query's top-N of the recall's own search (after Tokyo 24/7's NMS / "
                   "TokyoTM's time filter) as <stem>_predictions.csv, one JPEG panel per query in "
                   "<stem>_predictions/ and a self-contained <stem>_report.html (not in MATLAB; N <= 100)")
    p.add_argument("--save-predictions-images", action=argparse.BooleanOptionalAction, default=True,
                   help="with --save-predictions: write the panels (default; --no-save-predictions-images: "
                   "CSV and report only)")
    p.add_argument("--only-wrong", "--save_only_wrong_preds", dest="only_wrong", action="store_true",
                   help="with --save-predictions: panels only for queries whose top-1 is wrong (the CSV and "
                   "report keep every query)")


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


def search_options(args):
    """evaluate_dataset's SearchOptions from --memory-cap and the --search-* options;
    ValueError naming a bad one."""
    from ..search import SearchOptions
    from ..search.approximate import parse_search_params
    params = parse_search_params(args.search_params)
    if args.search_method == "exact" and (params or args.search_check_sample is not None):
        raise ValueError("--search-params and --search-check-sample apply to a faiss --search-method "
                         "(flat, ivfpq, an index_factory string), not to exact search")
    if args.search_check_sample is not None and args.search_check_sample < 0:
        raise ValueError(f"--search-check-sample {args.search_check_sample}: must be >= 0")
    sample = 1000 if args.search_check_sample is None else args.search_check_sample
    return SearchOptions(args.search_method, params, sample, args.memory_cap)


def run(args) -> int:
    import matnet
    from ..evaluation import evaluate_dataset
    search = search_options(args)
    if args.only_wrong and not args.save_predictions:
        raise ValueError("--only-wrong applies to --save-predictions N")
    db = parse_dataset(args.dataset, args.root, args.panorama_nms, args.time_filter)
    net = matnet.load_net(args.net)
    evaluate_dataset(net, db, Path(args.out), Path(args.net).stem, dims=args.dims, protocol=args.protocol,
                     useGPU=False if args.cpu else None, batchSize=args.batch_size, netFile=args.net,
                     precision=args.precision, search=search, savePredictions=args.save_predictions,
                     savePredictionsImages=args.save_predictions_images, onlyWrong=args.only_wrong)
    return 0
