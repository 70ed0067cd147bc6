"""MatConvNet's SGD update as trainWeakly.m applies it (not torch.optim.SGD)."""
from __future__ import annotations

import torch

from ..simplenn import SimpleNN


def trainable_layers(net: SimpleNN, backPropToLayer: int, fixLayers=()) -> list[int]:
    """0-based indices of the layers trainWeakly updates: at or above
    ``backPropToLayer`` (1-based, MATLAB) and not named in ``fixLayers``."""
    fixed = set(fixLayers)
    return [i for i, l in enumerate(net.layers)
            if i + 1 >= backPropToLayer and len(l.weights) and l.name not in fixed]


def set_backprop_depth(net: SimpleNN, backPropToLayer: int) -> None:
    """Weights below ``backPropToLayer`` get no gradient (vl_simplenn's backPropDepth);
    those at or above it do (fixLayers too: MATLAB computes but discards theirs)."""
    for i, l in enumerate(net.layers):
        for w in l.weights:
            w.requires_grad_(i + 1 >= backPropToLayer)


@torch.no_grad()
def sgd_step(net: SimpleNN, lr: float, nTriplets: int, momentum: float, weightDecay: float,
            backPropToLayer: int = 1, fixLayers=()) -> None:
    """One update from the gradients accumulated (summed over the batch's queries) in
    each weight's ``.grad``; for every weight j of every trainable layer:
    m <- momentum*m - weightDecay*wdMult_j*w - grad/nTriplets;  w <- w + lr*lrMult_j*m.
    Multipliers come from ``layer.weightDecay`` / ``layer.learningRate`` (1 if absent),
    the momentum buffers from ``layer.momentum`` (netPrepareForTrain).  Gradients
    are cleared afterwards.
    """
    if nTriplets <= 0:
        raise ValueError(f"sgd_step: nTriplets must be positive, got {nTriplets}")
    for i in trainable_layers(net, backPropToLayer, fixLayers):
        l = net.layers[i]
        if l.momentum is None:
            l.momentum = [torch.zeros_like(w) for w in l.weights]
        for j, w in enumerate(l.weights):
            g = w.grad
            if g is None:
                continue
            wdMult = l.weightDecay[j] if l.weightDecay else 1.0
            lrMult = l.learningRate[j] if l.learningRate else 1.0
            m = l.momentum[j].to(w.device)
            m.mul_(momentum).sub_(w, alpha=weightDecay * wdMult).sub_(g, alpha=1.0 / nTriplets)
            l.momentum[j] = m
            w.add_(m, alpha=lr * lrMult)
    net.zero_grad(set_to_none=True)
