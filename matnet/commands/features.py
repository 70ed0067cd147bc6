"""``matnet features --net NET (--dataset DATASET --which db|q | --images LIST) --out OUT.bin``:
serialAllFeats, the representations of a dataset's database or query images (or of
the images listed one per line in LIST) written to OUT.bin as MATLAB does
(little-endian float32, D values per image, in list order).

Resumable: an interrupted run continues where it stopped.  Under ``torchrun
--nproc_per_node=N -m matnet features ...`` each process extracts a contiguous shard
and the merged file is byte for byte the one a single process writes.
"""
from __future__ import annotations

from pathlib import Path

from . import options as o


def add_arguments(p) -> None:
    o.add_net(p)
    src = p.add_mutually_exclusive_group(required=True)
    o.add_dataset(src, required=False, help="dataset whose images to extract (with --which)", old=("--spec",))
    src.add_argument("--images", metavar="LIST", help="text file of image names, one per line (relative to --root)")
    p.add_argument("--which", choices=["db", "q"], default="db",
                   help="with --dataset: database or query images (default db)")
    o.add_root(p, help="image root: of a MATLAB-named or spec: --dataset (default: localPaths' folder of that "
                       "dataset), or the folder the --images names are relative to", old=("--dbRoot", "--imPath"))
    o.add_spec_dir(p)
    o.add_out(p, required=True, metavar="FILE", help="output .bin file (its folder is created when missing)")
    o.add_batch_size(p, 10)
    o.add_device(p)
    o.add_num_threads(p)
    o.add_precision(p)


def image_list(args) -> tuple[str, list[str]]:
    """(imPath, image names) the arguments designate."""
    if args.images:
        fn = Path(args.images)
        try:
            names = [l.strip() for l in fn.read_text().splitlines() if l.strip()]
        except OSError as e:
            raise OSError(f"{fn}: cannot read the image list ({e.strerror or e})") from e
        imPath = args.root or ""
        if imPath and not imPath.endswith(("/", "\\")):
            imPath += "/"
        return imPath, names
    from ..datasets import parse_dataset
    db = parse_dataset(args.dataset, args.root, args.spec_dir)
    return (db.dbPath, list(db.dbImageFns)) if args.which == "db" else (db.qPath, list(db.qImageFns))


def run(args) -> int:
    from converters.network import load_net
    from .. import distributed
    from ..extract import serialAllFeats
    useGPU = o.use_gpu(args)
    imPath, names = image_list(args)
    net = load_net(args.net)
    Path(args.out).expanduser().parent.mkdir(parents=True, exist_ok=True)  # once the inputs are read
    with distributed.process_group(useGPU):  # auto (None): NCCL where the extraction runs on a GPU
        serialAllFeats(net, imPath, names, args.out, useGPU=useGPU, numThreads=args.num_threads,
                       batchSize=args.batch_size, precision=args.precision)
        if distributed.is_rank0():
            print(f"{args.out}: {len(names)} images, {distributed.world_size()} process(es)")
    return 0
