"""``matnet evaluate``: any network on any dataset, recall@N with a chosen protocol.

--dataset pitts30k_test      a MATLAB name (pitts30k_*, pitts250k_*, tokyoTM_*, tokyo247): the spec under
                             --spec-dir, images under --root (default: localPaths' folders)
--dataset spec:SPEC.mat      a NetVLAD dbStruct spec; --root is its image root (Pittsburgh/, Tokyo247/,
                             TokyoTM/ for the released specs, the dataset root for imported ones)
--dataset vpr:ROOT[:split]   VPR folder format, ROOT/images/<split>/{database,queries} (split default test)
--dataset msls:ROOT[:split][:city,city]   Mapillary SLS, ROOT/train_val/<city>/ (split val (default) or
                             train; cities default the split's official ones, e.g. msls:ROOT:val:cph,sf)

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

from . import options as o


def add_arguments(p) -> None:
    o.add_net(p)
    o.add_dataset(p, help="dataset to evaluate on")
    o.add_root(p, old=())
    o.add_spec_dir(p)
    o.add_dims(p)
    p.add_argument("--protocol", choices=["matlab", "vpr"], default="matlab",
                   help="matlab: testFromFn with the dataset's rules (default); vpr: plain kNN, 25 m")
    p.add_argument("--panorama-nms", action="store_true", help="vpr: datasets, matlab protocol: Tokyo 24/7's "
                   "per-panorama suppression with panoramas from the pano_id field (e.g. an exported Tokyo 24/7)")
    p.add_argument("--time-filter", action="store_true", help="vpr: datasets, matlab protocol: TokyoTM's rule, "
                   "results with the query's time stamp (YYYYMM from the names) dropped")
    o.add_out(p, default=".", help="output folder for features, JSON and plot, created when missing (default: .)")
    o.add_batch_size(p, 16)
    o.add_device(p)
    o.add_num_threads(p)
    o.add_precision(p)
    o.add_memory_cap(p)
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
    from ..datasets import parse_dataset
    from ..evaluation import evaluate_dataset
    search = search_options(args)
    if args.only_wrong and not args.save_predictions:
        raise ValueError("--only-wrong applies to --save-predictions N")
    db = parse_dataset(args.dataset, args.root, args.spec_dir, args.panorama_nms, args.time_filter)
    net = matnet.load_net(args.net)
    evaluate_dataset(net, db, Path(args.out), Path(args.net).stem, dims=args.dims, protocol=args.protocol,
                     useGPU=o.use_gpu(args), batchSize=args.batch_size, numThreads=args.num_threads,
                     netFile=args.net, precision=args.precision, search=search, savePredictions=args.save_predictions,
                     savePredictionsImages=args.save_predictions_images, onlyWrong=args.only_wrong)
    return 0
