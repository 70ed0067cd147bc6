"""``matnet demo``: train and evaluate NetVLAD end to end on a synthetic dataset, offline.

Generates three synthetic streets (train/val/test, :mod:`matnet.synthetic`) and a
small base network, then runs the MATLAB demo's chain: loadNet -> addLayers
(clusters) -> trainWeakly -> pickBestNet -> addPCA -> serialAllFeats -> testFromFn,
and prints recall@1/5/10 on the test street, off-the-shelf vs trained (plotted at
N = 1..25 in <out>/output/<session>_test_recall.png).  It ends with ``matnet report``'s
comparison of off-the-shelf and trained on the test street: the queries training fixed
and broke, McNemar's test, and an HTML page with both runs' top-10 per query
(<out>/report.html, the numbers in <out>/report.json).  Everything goes under --out.
The trained networks are written as network files and their paths printed:
<out>/output/<session>_best.mat (the best epoch, pickBestNet's choice) and
<out>/output/<session>_best_wpca<dim>.mat (with its WPCA); matnet inspect, export and
evaluate --net take either (<session>_latest.mat is the last epoch's checkpoint).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from . import options as o

# trainWeakly options of the demo (sized for 64x80 images and a few hundred images per street)
_DEMO_OPTS = dict(netID="tiny", layerName="conv3", method="vlad_preL2_intra", batchSize=4, lrDownFreq=3,
                  nNegChoice=60, nNegCap=6, nNegCache=6, margin=0.1, useGPU=False, saveFrequency=200,
                  compFeatsFrequency=200, computeBatchSize=20, nTestSample=1000, nTestRankSample=100, doDraw=True)


def add_arguments(p) -> None:
    o.add_out(p, default="matnet-demo", help="folder for the synthetic data, networks, features and plots "
                                             "(default: ./%(default)s)")
    p.add_argument("--n-epoch", "--nEpoch", dest="n_epoch", type=int, default=8, metavar="N",
                   help="training epochs, trainWeakly's nEpoch (default: %(default)s)")
    p.add_argument("--num-images", dest="num_images", type=int, default=400, metavar="N",
                   help="database images per street (default: %(default)s)")
    p.add_argument("--num-queries", dest="num_queries", type=int, default=200, metavar="N",
                   help="queries per street (default: %(default)s)")
    p.add_argument("--learning-rate", "--learningRate", dest="learning_rate", type=float, default=0.0015,
                   metavar="LR", help="trainWeakly's learningRate (default: %(default)s)")
    p.add_argument("--pca-dim", "--pcaDim", dest="pca_dim", type=int, default=128, metavar="N",
                   help="addPCA's pcaDim, the whitened PCA dimension (default: %(default)s)")
    o.add_num_threads(p, default=2, help="CPU threads", old=("--threads",))
    p.add_argument("--seed", type=int, default=0, help="dataset and network seed (default: %(default)s)")
    o.add_precision(p)
    for old, new, dest, type_ in (("--epochs", "--n-epoch", "n_epoch", int),
                                  ("--images", "--num-images", "num_images", int),
                                  ("--queries", "--num-queries", "num_queries", int),
                                  ("--lr", "--learning-rate", "learning_rate", float)):
        o.deprecated(p, old, new, dest, type=type_)


def set_demo_paths(root: Path) -> None:
    """localPaths' folders of a demo run under ``root`` (created), through their environment variables."""
    from ..datasets.local_paths import env_name
    for field, sub in (("dsetSpecDir", "data/datasets"), ("pretrainedCNNs", "pretrained"),
                       ("initData", "initdata"), ("outPrefix", "output")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        os.environ[env_name(field)] = str(root / sub) + "/"


def dataset_mean_colour(db):
    """The mean RGB colour of a dataset's database images (the tiny base network's averageImage)."""
    import numpy as np

    from ..images import imread_uint8
    return np.mean([imread_uint8(db.dbPath + fn).reshape(-1, 3).mean(0) for fn in db.dbImageFns], axis=0)


# recall@N computed on the test street: printed at 1, 5, 10 and plotted at all of them
RECALL_NS = [1, 2, 3, 4, 5, 10, 15, 20, 25]
PRINTED_NS = [1, 5, 10]
SAVED_PREDICTIONS = 10  # top-N per query kept for the closing report (off-the-shelf vs trained)


def _test(net, db, tag: str, out: str, threads: int, precision: str = "exact", runs: dict | None = None):
    """recall@RECALL_NS of ``net`` on ``db`` (serialAllFeats + testFromFn); with ``runs``,
    the top-SAVED_PREDICTIONS of each query and a record (``matnet evaluate``'s files)
    are written too and the record's path kept in ``runs[tag]``."""
    import numpy as np

    from ..extract import serialAllFeats
    from ..prediction_files import write_run
    from ..recall_at_n import testFromFn
    dbFn, qFn = f"{out}demo_{tag}_{db.name}_db.bin", f"{out}demo_{tag}_{db.name}_q.bin"
    serialAllFeats(net, db.dbPath, db.dbImageFns, dbFn, useGPU=False, numThreads=threads, precision=precision)
    serialAllFeats(net, db.qPath, db.qImageFns, qFn, useGPU=False, numThreads=threads, precision=precision)
    recall, _, _, opts = testFromFn(db, dbFn, qFn, recallNs=RECALL_NS,
                                    savePredictions=SAVED_PREDICTIONS if runs is not None else 0)
    if runs is not None:
        runs[tag] = write_run(db, opts["predictions"], f"{out}demo_{tag}_{db.name}", RECALL_NS, recall, tag)
    return np.asarray(recall)


def _print_test_table(rows, dbTest, out: str, sessionID: str) -> str:
    """The demo's test table (recall at PRINTED_NS per network), the trained - off-the-shelf
    gain and the recall plot of ``rows`` ((name, recall at RECALL_NS)); returns the plot's path."""
    from ..plots import plot_recall_at_n
    print(f"\n[demo] test street '{dbTest.name}': {dbTest.numImages} database images, {dbTest.numQueries} queries")
    cols = [RECALL_NS.index(n) for n in PRINTED_NS]
    print(f"{'':28s} " + "  ".join(f"R@{n:<4d}" for n in PRINTED_NS))
    for name, r in rows:
        print(f"{name:28s} " + "  ".join(f"{r[i]:.3f} " for i in cols))
    gain = rows[1][1] - rows[0][1]
    print(f"[demo] trained - off-the-shelf recall@{'/'.join(map(str, PRINTED_NS))}: "
          + " ".join(f"{gain[i]:+.3f}" for i in cols))
    recallPlot = f"{out}{sessionID}_test_recall.png"
    plot_recall_at_n(recallPlot, {name: (RECALL_NS, r) for name, r in rows},
                     f"test street '{dbTest.name}' ({dbTest.numImages} database images, {dbTest.numQueries} queries)")
    return recallPlot


def run(args) -> int:
    import torch

    from converters.network import save_net

    from ..add_layers import addLayers
    from ..pca import addPCA
    from ..pick_best import best_net_path, best_wpca_path, pickBestNet
    from ..pretrained import loadNet
    from ..run_comparison import compare_runs
    from ..synthetic import dbSynthetic, make_places, save_tiny_net
    from ..train.opts import TrainWeaklyOpts
    from ..train.train_weakly import trainWeakly
    t0 = time.time()
    torch.manual_seed(args.seed)
    root = Path(args.out).resolve()
    print(f"[demo] writing everything under {root}")
    set_demo_paths(root)
    torch.set_num_threads(args.num_threads)
    print(f"[demo] synthetic streets in {root / 'data'}")
    make_places(root / "data", numImages=args.num_images, numQueries=args.num_queries, imSize=(64, 80),
                seed=args.seed)
    dbTrain, dbVal, dbTest = (dbSynthetic(s, root / "data") for s in ("train", "val", "test"))
    save_tiny_net(root / "pretrained", dataset_mean_colour(dbTrain), imSize=(64, 80), seed=args.seed)
    opts = TrainWeaklyOpts(**{**_DEMO_OPTS, "learningRate": args.learning_rate, "nEpoch": args.n_epoch,
                              "numThreads": args.num_threads, "precision": args.precision})
    sessionID = trainWeakly(dbTrain, dbVal, opts)
    out = str(root / "output") + "/"
    bestEpoch, bestNet = pickBestNet(sessionID, 5, verbose=1, outPrefix=out)  # validation table
    finalNet = addPCA(bestNet, dbTrain, pcaDim=args.pca_dim, doWhite=True, useGPU=False,
                      numThreads=args.num_threads, outPrefix=out)
    finalFn = save_net(finalNet, best_wpca_path(out, sessionID, args.pca_dim))
    offNet = addLayers(loadNet("tiny", "conv3"), opts, dbTrain)  # the same clusters (cached in initData)
    p, threads = args.precision, args.num_threads
    runs = {}
    rows = [("off-the-shelf", _test(offNet, dbTest, "offtheshelf", out, threads, p, runs)),
            (f"trained (epoch {bestEpoch})", _test(bestNet, dbTest, f"{sessionID}_best", out, threads, p, runs)),
            (f"trained + WPCA {args.pca_dim}", _test(finalNet, dbTest, f"{sessionID}_wpca", out, threads, p))]
    recallPlot = _print_test_table(rows, dbTest, out, sessionID)
    print("[demo] (the PCA is estimated on the training street's few hundred images, so whitening may not "
          "transfer to the test street at this scale)")
    print(f"[demo] plots: {out}{sessionID}_training.png (training curves, validation recall), {recallPlot} "
          f"(the test recall above)")
    print("\n[demo] which test queries training fixed and broke (matnet report):")
    cmp = compare_runs(runs["offtheshelf"], runs[f"{sessionID}_best"], root, log=lambda s: print("  " + s),
                       name="report")
    print(f"[demo] report: {root / 'report.html'} (off-the-shelf vs trained, top-{SAVED_PREDICTIONS} per query; "
          f"{cmp['mcnemar']['fixed']} fixed, {cmp['mcnemar']['broken']} broken at N = 1)")
    print(f"[demo] trained network (epoch {bestEpoch}): {best_net_path(out, sessionID)}")
    print(f"[demo] with WPCA {args.pca_dim}: {finalFn}")
    print("[demo] (matnet inspect FILE, matnet export FILE ..., matnet evaluate --net FILE take either)")
    print(f"[demo] done in {time.time() - t0:.0f} s")
    return 0
