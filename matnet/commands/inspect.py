"""``matnet inspect FILE``: the layer table of a network (.mat or .safetensors): index
(0-based), name, type or class, weight shapes (MatConvNet H x W x Cin x Cout), and the
MATLAB size H x W x C of each layer's output for one image (a layer that cannot run at
that size shows why, the layers after it '?').  A file whose layers cannot be built
is an error listing every failing layer (stderr, exit status 1); so is a network that
cannot run at any image size (channels that do not match, a WPCA of the wrong input
size: :func:`matnet.nettools.size_free_problem`), naming the layer after the table,
whose later rows show '-'.  '?' is kept for a size below the receptive field."""
from __future__ import annotations

from . import options as o



def add_arguments(p) -> None:
    p.add_argument("file", metavar="NET", help="network file (.mat or .safetensors; the kind is read from its content)")
    o.add_image_size(p, (224, 224), help="image size used to compute output sizes")


def input_channels(net) -> int:
    """The channels of the network's input: averageImage's third dimension, else 3."""
    import numpy as np
    avg = net.meta.get("normalization", {}).get("averageImage") if isinstance(net.meta, dict) else None
    return avg.shape[2] if isinstance(avg, np.ndarray) and avg.ndim == 3 else 3


def layer_table(net, size=(224, 224), problem=None) -> list[tuple[int, str, str, str, str]]:
    """(index, name, type/class, weight shapes, output H x W x C [= dim]) per layer.
    ``problem``: :func:`size_free_problem`'s (index, reason); that layer's row says it
    cannot run at any size and the later rows show '-'."""
    import torch
    outs, x = [], torch.zeros(1, input_channels(net), *size)
    with torch.no_grad():
        for i, layer in enumerate(net.eval().layers):
            if problem is not None and i == problem[0]:
                outs.append(f"cannot run at any size: {problem[1]}")
                break
            try:
                x = layer(x)
            except Exception as e:  # noqa: BLE001  (cannot run at this size: say why, keep the table)
                outs.append(f"fails: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
                break
            outs.append(f"{x.shape[2]}x{x.shape[3]}x{x.shape[1]} [{x[0].numel()}]")
    outs += ["-" if problem is not None else "?"] * (len(net.layers) - len(outs))
    return [(i, l.name, l.class_name or l.type,
             ", ".join("x".join(map(str, w.shape)) for w in l.weights) or "-", outs[i])
            for i, l in enumerate(net.layers)]


def run(args) -> int:
    from converters.network import load_net

    from ..nettools import size_free_problem
    net = load_net(args.file)
    problem = size_free_problem(net, input_channels(net))
    rows = [("#", "name", "type/class", "weights", "output HxWxC [dim]")] + \
        [tuple(map(str, r)) for r in layer_table(net, tuple(args.size), problem)]
    widths = [max(len(r[j]) for r in rows) for j in range(5)]
    for r in rows:
        print("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())
    n = sum(p.numel() for p in net.parameters())
    print(f"{len(net.layers)} layers, {n} weights; meta: {', '.join(net.meta) or '-'}")
    if problem is not None:
        i, why = problem
        layer = net.layers[i]
        raise ValueError(f"{args.file}: layer {i} '{layer.name}' ({layer.class_name or layer.type}) cannot run "
                         f"at any image size: {why}")
    return 0
