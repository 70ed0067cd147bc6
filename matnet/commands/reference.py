"""``matnet reference``: a released network on a real dataset, ours vs the published recall.

The data root (``--data-root``, default ``$MATNET_REFERENCE_ROOT``) holds
``networks/<name>.mat``, ``datasets/<spec>.mat`` and the image roots ``Pittsburgh/``,
``Tokyo247/``, ``TokyoTM/`` (layout in reference/harness.py); ``--spec-dir`` and ``--root``
override the spec folder and the image root of a MATLAB-named dataset.
"""
from __future__ import annotations

from pathlib import Path

from . import options as o


def add_arguments(p) -> None:
    o.add_net(p, help="released network: a .mat/.safetensors path, or a name looked up as "
                      "<data-root>/networks/<name>.mat")
    o.add_dataset(p, help="test set (its published recall is looked up by name; protocol: Tokyo 24/7 NMS)")
    o.add_dims(p, help="output dimensionality to evaluate (repeatable; fewer than the network's D uses "
                       "cropToDim). Default 4096")
    p.add_argument("--data-root", metavar="DIR", help="data root (default $MATNET_REFERENCE_ROOT): networks/, "
                   "datasets/ and the image roots; layout in reference/harness.py")
    o.add_root(p, help="image root of the dataset (default <data-root>/Pittsburgh, Tokyo247 or TokyoTM)",
               old=("--db-root",))
    o.add_spec_dir(p, help="folder of the dbStruct specs (default <data-root>/datasets)", old=())
    o.add_out(p, help="output folder, created when missing (default <data-root>/output)")
    o.add_batch_size(p, 16, help="images per forward pass")
    o.add_device(p)
    o.add_num_threads(p)
    o.add_precision(p)


def _data_root_given_as_root(args) -> None:
    """``--root`` named the data root before it meant the image root in every command:
    a ``--root`` holding ``networks/`` or ``datasets/`` without ``--data-root`` is still
    taken as the data root, for one release, with a deprecation message."""
    if args.root and not args.data_root and any((Path(args.root).expanduser() / d).is_dir()
                                                 for d in ("networks", "datasets")):
        o.warn_deprecated("--root DATA_ROOT", "--data-root DATA_ROOT (--root is the image root in every command)")
        args.data_root, args.root = args.root, None


def run(args) -> int:
    from reference.harness import run_reference
    _data_root_given_as_root(args)
    run_reference(args.net, args.dataset, dims=args.dims or [4096], root=args.data_root, specDir=args.spec_dir,
                  dbRoot=args.root, outDir=args.out, useGPU=o.use_gpu(args), batchSize=args.batch_size,
                  numThreads=args.num_threads, precision=args.precision)
    return 0
