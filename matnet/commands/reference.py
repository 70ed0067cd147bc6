"""``matnet reference``: a released network on a real dataset, ours vs the published recall."""
from __future__ import annotations


def add_arguments(p) -> None:
    from reference.harness import DATASETS
    p.add_argument("--net", required=True, help="released network: a .mat/.safetensors path, or a name "
                   "looked up as <root>/networks/<name>.mat")
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS),
                   help="test set, with its protocol (Tokyo 24/7: NMS)")
    p.add_argument("--dims", type=int, action="append", help="output dimensionality to evaluate "
                   "(repeatable; fewer than the network's D uses cropToDim). Default 4096")
    p.add_argument("--root", help="data root (default $MATNET_REFERENCE_ROOT); layout in reference/harness.py")
    p.add_argument("--spec-dir", help="folder of the dbStruct specs (default <root>/datasets)")
    p.add_argument("--db-root", help="dataset image root (default <root>/Pittsburgh, Tokyo247, ...)")
    p.add_argument("--out", help="output folder (default <root>/output)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: %(default)s)")
    p.add_argument("--cpu", action="store_true", help="do not use the GPU even when present")
    p.add_argument("--precision", choices=["exact", "fast"], default="exact",
                   help="exact: float32 as MatConvNet (default); fast: bf16 trunk, float32 head (not in MATLAB)")


def run(args) -> int:
    from reference.harness import run_reference
    run_reference(args.net, args.dataset, dims=args.dims or [4096], root=args.root, specDir=args.spec_dir,
                  dbRoot=args.db_root, outDir=args.out, useGPU=False if args.cpu else None,
                  batchSize=args.batch_size, precision=args.precision)
    return 0
