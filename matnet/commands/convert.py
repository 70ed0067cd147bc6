"""``matnet convert IN OUT``: a network from any file ``load_net`` reads (.mat v5/v7.3,
``*_struct.mat``, MatConvNet models, trainWeakly checkpoints, .safetensors) to OUT,
whose extension picks the format: .safetensors (native), .mat (v7.3 with NetVLAD's
classdef layers, as MATLAB saves it) or ``*_struct.mat`` (layers as plain structs)."""
from __future__ import annotations

import time


def add_arguments(p) -> None:
    p.add_argument("input", metavar="NET", help="network file (.mat or .safetensors; the kind is read from its content)")
    p.add_argument("output", metavar="OUT", help="output file: .safetensors (native), .mat, or *_struct.mat (plain structs)")
    p.add_argument("--mat-format", choices=["7.3", "5"], default="7.3",
                   help="MAT version when writing .mat (default 7.3, as NetVLAD saves)")
    p.add_argument("--struct", action="store_true",
                   help="write NetVLAD layers as plain structs instead of classdef objects (.mat; "
                        "implied by a name ending in _struct.mat)")


def run(args) -> int:
    from converters.network import load_net, save_net
    t0 = time.perf_counter()
    net = load_net(args.input)
    t1 = time.perf_counter()
    from converters.file_lock import output_lock
    with output_lock(args.output):  # a killed convert's temporary of this output removed first
        save_net(net, args.output, format=args.mat_format, struct=True if args.struct else None)
    n = sum(p.numel() for p in net.parameters())
    print(f"{args.input} -> {args.output}: {len(net.layers)} layers, {n} weights "
          f"(read {t1 - t0:.2f} s, write {time.perf_counter() - t1:.2f} s)")
    return 0
