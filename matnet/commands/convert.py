"""``matnet convert IN OUT``: a network between MAT (.mat, v5 or v7.3) and matnet's native
safetensors format (.safetensors); the output kind follows OUT's extension."""
from __future__ import annotations

import time
from pathlib import Path

from converters.matfile import MatFileError
from converters.native import load_native, save_native
from converters.network import load_net, save_net


def read_any(path):
    """A network from a .mat or .safetensors file."""
    return load_native(path) if Path(path).suffix == ".safetensors" else load_net(path)


def add_arguments(p) -> None:
    p.add_argument("input", help="network file (.mat or .safetensors)")
    p.add_argument("output", help="output file: .safetensors (native) or .mat")
    p.add_argument("--mat-format", choices=["7.3", "5"], default="7.3",
                   help="MAT version when writing .mat (default 7.3, as NetVLAD saves)")
    p.add_argument("--struct", action="store_true",
                   help="write NetVLAD layers as plain structs instead of classdef objects (.mat)")


def run(args) -> int:
    t0 = time.perf_counter()
    try:
        net = read_any(args.input)
        t1 = time.perf_counter()
        if Path(args.output).suffix == ".safetensors":
            save_native(net, args.output)
        elif Path(args.output).suffix == ".mat":
            save_net(net, args.output, format=args.mat_format, struct=args.struct)
        else:
            raise MatFileError(f"{args.output}: output must end in .safetensors or .mat")
    except MatFileError as e:
        print(f"matnet convert: {e}")
        return 1
    n = sum(p.numel() for p in net.parameters())
    print(f"{args.input} -> {args.output}: {len(net.layers)} layers, {n} weights "
          f"(read {t1 - t0:.2f} s, write {time.perf_counter() - t1:.2f} s)")
    return 0
