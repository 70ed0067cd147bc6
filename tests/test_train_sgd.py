import numpy as np
import pytest
import torch

from matnet.simplenn import SimpleNN
from matnet.nettools import netPrepareForTrain
from matnet.train.sgd import set_backprop_depth, sgd_step, trainable_layers


def _net():
    rng = np.random.default_rng(0)
    structs = [
        {"type": "conv", "name": "conv1", "weights": [rng.standard_normal((3, 3, 2, 4)).astype(np.float32),
                                                     rng.standard_normal((1, 4)).astype(np.float32)]},
        {"type": "relu", "name": "relu1"},
        {"type": "conv", "name": "conv2", "weights": [rng.standard_normal((1, 1, 4, 3)).astype(np.float32),
                                                     rng.standard_normal((1, 3)).astype(np.float32)],
         "learningRate": np.array([[2.0, 0.5]]), "weightDecay": np.array([[1.0, 0.0]])},
        {"type": "conv", "name": "conv3", "weights": [rng.standard_normal((1, 1, 3, 2)).astype(np.float32),
                                                     rng.standard_normal((1, 2)).astype(np.float32)]},
    ]
    return SimpleNN.from_structs(structs, {})


def _hand_step(w, m, g, lr, lrMult, wd, wdMult, mu, n):
    """The update written out element by element (MatConvNet's SGD)."""
    w, m, g = (np.asarray(a, np.float64).ravel() for a in (w, m, g))
    m2 = np.empty_like(m)
    w2 = np.empty_like(w)
    for k in range(w.size):
        m2[k] = mu * m[k] - wd * wdMult * w[k] - g[k] / n
        w2[k] = w[k] + lr * lrMult * m2[k]
    return w2, m2


@pytest.mark.parametrize("backPropToLayer,fixLayers", [(1, []), (3, []), (1, ["conv2"])])
def test_two_steps_against_hand_computation(backPropToLayer, fixLayers):
    net = netPrepareForTrain(_net(), backPropToLayer)
    set_backprop_depth(net, backPropToLayer)
    lr, mu, wd, nTrip = 0.1, 0.9, 1e-2, 3
    before = {(i, j): w.detach().numpy().copy() for i, l in enumerate(net.layers) for j, w in enumerate(l.weights)}
    mom = {k: np.zeros_like(v) for k, v in before.items()}
    x = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    for step in range(2):
        net(x).pow(2).sum().backward()
        grads = {(i, j): (w.grad.numpy().copy() if w.grad is not None else None)
                 for i, l in enumerate(net.layers) for j, w in enumerate(l.weights)}
        sgd_step(net, lr, nTrip, mu, wd, backPropToLayer, fixLayers)
        for (i, j), w0 in before.items():
            l = net.layers[i]
            now = l.weights[j].detach().numpy()
            if i + 1 < backPropToLayer:
                assert grads[(i, j)] is None  # no gradient below backPropToLayer
                np.testing.assert_array_equal(now, w0)
                continue
            if l.name in fixLayers:
                np.testing.assert_array_equal(now, w0)
                continue
            lrMult = l.learningRate[j]
            wdMult = l.weightDecay[j]
            w1, m1 = _hand_step(w0, mom[(i, j)], grads[(i, j)], lr, lrMult, wd, wdMult, mu, nTrip)
            np.testing.assert_allclose(now.ravel(), w1, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(l.momentum[j].numpy().ravel(), m1, rtol=1e-5, atol=1e-6)
            before[(i, j)], mom[(i, j)] = now.copy(), l.momentum[j].numpy().copy()
    assert all(w.grad is None for w in net.parameters())


def test_trainable_layers_and_bad_count():
    net = _net()
    assert trainable_layers(net, 1) == [0, 2, 3]
    assert trainable_layers(net, 3, ["conv3"]) == [2]
    with pytest.raises(ValueError):
        sgd_step(net, 0.1, 0, 0.9, 0.0)
