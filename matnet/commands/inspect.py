"""``matnet inspect FILE``: the layer table of a network (.mat or .safetensors): index
(0-based), name, type or class, weight shapes (MatConvNet H x W x Cin x Cout), and the
MATLAB size H x W x C of each layer's output for one image (a layer that cannot run at
that size shows why, the layers after it '?').  A file whose layers cannot be built
is an error listing every failing layer (stderr, exit status 1)."""
from __future__ import annotations

import numpy as np
import torch

from converters.network import load_net



def add_arguments(p) -> None:
    p.add_argument("file", help="network file (.mat or .safetensors; the kind is read from its content)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=(224, 224),
                   help="image size used to compute output sizes (default 224 224)")


def layer_table(net, size=(224, 224)) -> list[tuple[int, str, str, str, str]]:
    """(index, name, type/class, weight shapes, output H x W x C [= dim]) per layer."""
    c = 3
    avg = net.meta.get("normalization", {}).get("averageImage") if isinstance(net.meta, dict) else None
    if isinstance(avg, np.ndarray) and avg.ndim == 3:
        c = avg.shape[2]
    outs, x = [], torch.zeros(1, c, *size)
    with torch.no_grad():
        for layer in net.eval().layers:
            try:
                x = layer(x)
            except Exception as e:  # noqa: BLE001  (cannot run at this size: say why, keep the table)
                outs.append(f"fails: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
                break
            outs.append(f"{x.shape[2]}x{x.shape[3]}x{x.shape[1]} [{x[0].numel()}]")
    outs += ["?"] * (len(net.layers) - len(outs))
    return [(i, l.name, l.class_name or l.type,
             ", ".join("x".join(map(str, w.shape)) for w in l.weights) or "-", outs[i])
            for i, l in enumerate(net.layers)]


def run(args) -> int:
    net = load_net(args.file)
    rows = [("#", "name", "type/class", "weights", "output HxWxC [dim]")] + \
        [tuple(map(str, r)) for r in layer_table(net, tuple(args.size))]
    widths = [max(len(r[j]) for r in rows) for j in range(5)]
    for r in rows:
        print("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())
    n = sum(p.numel() for p in net.parameters())
    print(f"{len(net.layers)} layers, {n} weights; meta: {', '.join(net.meta) or '-'}")
    return 0
