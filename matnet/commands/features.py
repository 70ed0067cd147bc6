"""``matnet features --net NET (--spec DATASET --which db|q | --images LIST) --out OUT.bin``:
serialAllFeats, the representations of a dataset's database or query images (or of
the images listed one per line in LIST) written to OUT.bin as MATLAB does
(little-endian float32, D values per image, in list order).

Resumable: an interrupted run continues where it stopped.  Under ``torchrun
--nproc_per_node=N -m matnet features ...`` each process extracts a contiguous shard
and the merged file is byte for byte the one a single process writes.
"""
from __future__ import annotations

import sys
from pathlib import Path


def add_arguments(p) -> None:
    p.add_argument("--net", required=True, help="network file (anything matnet.load_net reads)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--spec", metavar="DATASET",
                     help="dataset: pitts30k_test, tokyo247, a spec .mat (with --dbRoot), vpr:ROOT:SPLIT, msls:ROOT:SPLIT")
    src.add_argument("--images", metavar="LIST", help="text file of image names, one per line (relative to --imPath)")
    p.add_argument("--which", choices=["db", "q"], default="db", help="with --spec: database or query images (default db)")
    p.add_argument("--dbRoot", help="with --spec: the dataset's image folder (default: localPaths')")
    p.add_argument("--specDir", help="with --spec: folder of named datasets' specs (default: localPaths')")
    p.add_argument("--imPath", default="", help="with --images: folder the names are relative to")
    p.add_argument("--out", required=True, help="output .bin file")
    p.add_argument("--batchSize", type=int, default=10, help="images per batch (default 10)")
    p.add_argument("--useGPU", choices=["true", "false", "auto"], default="auto",
                   help="run on the GPU (default auto: when one exists)")
    p.add_argument("--numThreads", type=int, help="image decoding threads (default: this process's cores)")
    p.add_argument("--precision", choices=["exact", "fast"], default="exact",
                   help="exact: float32 as MatConvNet (default); fast: bf16 trunk, float32 head (not in MATLAB)")


def image_list(args) -> tuple[str, list[str]]:
    """(imPath, image names) the arguments designate."""
    if args.images:
        fn = Path(args.images)
        try:
            names = [l.strip() for l in fn.read_text().splitlines() if l.strip()]
        except OSError as e:
            raise OSError(f"{fn}: cannot read the image list ({e.strerror or e})") from e
        imPath = args.imPath
        if imPath and not imPath.endswith(("/", "\\")):
            imPath += "/"
        return imPath, names
    from ..datasets.named import dataset_by_name
    db = dataset_by_name(args.spec, args.dbRoot, args.specDir)
    return (db.dbPath, list(db.dbImageFns)) if args.which == "db" else (db.qPath, list(db.qImageFns))


def run(args) -> int:
    from converters.network import load_net
    from .. import distributed
    from ..extract import serialAllFeats
    useGPU = None if args.useGPU == "auto" else args.useGPU == "true"
    imPath, names = image_list(args)
    net = load_net(args.net)
    try:
        with distributed.process_group(bool(useGPU)):
            serialAllFeats(net, imPath, names, args.out, useGPU=useGPU, numThreads=args.numThreads,
                           batchSize=args.batchSize, precision=args.precision)
            if distributed.is_rank0():
                print(f"{args.out}: {len(names)} images, {distributed.world_size()} process(es)")
    except distributed.DistributedError as e:
        print(f"matnet: error: {e}", file=sys.stderr)
        return 1
    return 0
