"""MatConvNet's SGD update as trainWeakly.m applies it (not torch.optim.SGD), and
trainWeakly's learning-rate schedule."""
from __future__ import annotations

import math

import torch

from ..simplenn import SimpleNN


def lr_schedule(opts) -> list[tuple[float, int]]:
    """(learning rate, cache refresh period in batches) for epochs 1..nEpoch: both
    start at learningRate and ceil(compFeatsFrequency/batchSize); at every epoch e > 1
    with rem(e, lrDownFreq) == 1 the rate is divided by lrDownFactor and the period
    multiplied by it (rounded).  As MATLAB, lrDownFreq 1 never lowers the rate, and an
    infinite compFeatsFrequency never refreshes the cache within an epoch."""
    lr, period, out = opts.learningRate, batches_per(opts.compFeatsFrequency, opts.batchSize), []
    for e in range(1, opts.nEpoch + 1):
        if e != 1 and e % opts.lrDownFreq == 1:
            lr = lr / opts.lrDownFactor
            period = round(period * opts.lrDownFactor) if math.isfinite(period) else period
        out.append((lr, period))
    return out


def batches_per(frequency, batchSize: int):
    """ceil(frequency / batchSize): a period counted in queries as one in batches
    (inf stays inf: never)."""
    return math.ceil(frequency / batchSize) if math.isfinite(frequency) else math.inf


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
