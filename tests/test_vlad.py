"""layerVLAD / layerVLADv2 against independent numpy references of the MATLAB
forward_ and backward_ (written out with loops over clusters and samples), and
finite differences."""
import numpy as np
import pytest
import torch

from matnet.layers.base import LayerError
from matnet.layers.vlad import layerVLAD, layerVLADv2, vlad_aggregate
from matnet.layout import torch_to_matlab
from helpers.reference_layers import ref_backward, ref_forward


# ---------------------------------------------------------------- references (MATLAB layout)


def mat_x(x_t):
    return torch_to_matlab(x_t).astype(np.float64)


def make(K, D, seed, v2=False):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((D, K))
    if v2:
        alpha = 0.7
        return layerVLADv2("vlad:core").constructor(
            [2 * alpha * c, -alpha * (c ** 2).sum(0, keepdims=True), -c]), c
    return layerVLAD("vlad:core").constructor([rng.standard_normal((D, K)) * 0.5, c]), c


def layer_params(layer, v2):
    w = [p.detach().double().numpy() for p in layer.weights]
    D, K = layer.D, layer.K
    if v2:
        return w[0].reshape(D, K), w[1].reshape(K), w[2].reshape(D, K)
    return w[0].reshape(D, K), None, w[1].reshape(D, K)


CASES = [(8, 6, (2, 5, 3)), (64, 16, (3, 4, 7)), (8, 5, (1, 1, 1))]
# NCHW and channels_last inputs take different product orders (N x D x HW columns vs
# N x HW x D rows and 1x1 convolutions); both must give the MATLAB function.
LAYOUTS = [torch.contiguous_format, torch.channels_last]


def in_layout(x, layout):
    return x.detach().contiguous(memory_format=layout).requires_grad_(x.requires_grad)


# ---------------------------------------------------------------- forward / backward
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("K,D,nhw", CASES)
def test_forward_matches_reference(K, D, nhw, v2, layout):
    layer, _ = make(K, D, K + D, v2)
    n, h, w = nhw
    x = torch.randn(n, D, h, w, generator=torch.Generator().manual_seed(1))
    y = layer(in_layout(x, layout))
    assert y.shape == (n, D, 1, K)
    ref = ref_forward(mat_x(x), *layer_params(layer, v2))
    np.testing.assert_allclose(torch_to_matlab(y), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("K,D,nhw", CASES)
def test_backward_matches_matlab_formulas(K, D, nhw, v2, layout):
    layer, _ = make(K, D, 3 * K + D, v2)
    layer = layer.double()
    n, h, w = nhw
    g = torch.Generator().manual_seed(2)
    x = in_layout(torch.randn(n, D, h, w, generator=g, dtype=torch.float64), layout).requires_grad_(True)
    dzdy_t = torch.randn(n, D, 1, K, generator=g, dtype=torch.float64)
    layer(x).backward(dzdy_t)
    aw, ab, off = layer_params(layer, v2)
    dzdx, dw, db, doff = ref_backward(mat_x(x.detach()), aw, ab, off, mat_x(dzdy_t))
    np.testing.assert_allclose(mat_x(x.grad), dzdx, rtol=1e-9, atol=1e-10)
    grads = [p.grad.numpy() for p in layer.weights]
    np.testing.assert_allclose(grads[0].reshape(D, K), dw, rtol=1e-9, atol=1e-10)
    if v2:
        np.testing.assert_allclose(grads[1].reshape(K), db, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(grads[-1].reshape(D, K), doff, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("v2", [False, True])
def test_gradcheck_finite_differences(v2, layout):
    layer, _ = make(4, 3, 5, v2)
    layer = layer.double()
    x = in_layout(torch.randn(2, 3, 3, 2, dtype=torch.float64), layout).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: layer(x), (x,))
    # the weights, through the layer's functional core
    D, K = 3, 4
    ws = [p.detach().clone().requires_grad_(True) for p in layer.weights]
    if v2:
        fn = lambda x, a, b, c: vlad_aggregate(x, a.reshape(D, K), b.reshape(-1), c.reshape(D, K))
    else:
        fn = lambda x, a, c: vlad_aggregate(x, a.reshape(D, K), None, c.reshape(D, K))
    assert torch.autograd.gradcheck(fn, (x, *ws))


def test_zero_input_gives_mass_times_offsets():
    """All-zero features: uniform assignment (v1), V(k, d) = HW/K * (-c(d, k))."""
    layer, c = make(8, 5, 0)
    y = layer(torch.zeros(2, 5, 3, 4))
    expect = (12 / 8) * -c.T  # K x D
    np.testing.assert_allclose(torch_to_matlab(y)[0, :, :, 1], expect, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- descriptor order
def test_descriptor_order_k_plus_K_times_d():
    """Flattened output element (k, d) sits at k + K*d, as MATLAB's reshape of 1xKxDxN."""
    K, D = 5, 3
    # one pixel, assignment filters zero -> uniform assignment 1/K; offsets = -c
    c = np.arange(D * K, dtype=np.float64).reshape(D, K) * 0.1 + 1
    layer = layerVLAD("v").constructor([np.zeros((D, K)), c])
    y = layer(torch.zeros(1, D, 1, 1)).detach().reshape(-1).numpy()
    for k in range(K):
        for d in range(D):
            assert y[k + K * d] == pytest.approx(-c[d, k] / K, rel=1e-6)


# ---------------------------------------------------------------- properties / structs
def test_constructor_stores_matlab_weights():
    rng = np.random.default_rng(0)
    a, c = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    layer = layerVLAD("vlad:core").constructor([a, c])
    assert (layer.K, layer.D, layer.vladDim) == (4, 6, 24)
    assert tuple(layer.weights[0].shape) == (1, 1, 6, 4)
    np.testing.assert_allclose(layer.weights[0].detach().numpy()[0, 0], a, rtol=1e-6)
    np.testing.assert_allclose(layer.weights[1].detach().numpy()[0, 0], -c, rtol=1e-6)
    assert layer.type == "custom" and layer.class_name == "layerVLAD"


def test_struct_round_trip_and_truncated_shapes():
    rng = np.random.default_rng(1)
    layer = layerVLADv2("vlad:core").constructor(
        [rng.standard_normal((6, 1)), rng.standard_normal((1, 1)), rng.standard_normal((6, 1))])
    s = layer.to_struct()
    assert list(s) == ["type", "name", "K", "D", "vladDim", "weights", "momentum",
                       "learningRate", "weightDecay", "precious"]
    # MATLAB drops trailing singletons: 1x1x6x1 -> 1x1x6, 1x1 bias -> scalar
    s2 = dict(s, weights=[s["weights"][0].reshape(1, 1, 6), s["weights"][1].reshape(()),
                          s["weights"][2].reshape(1, 1, 6)], learningRate=np.array([[1, 2, 3]]))
    back = layerVLADv2.from_struct(s2)
    assert back.K == 1 and back.D == 6 and back.learningRate == [1, 2, 3]
    x = torch.randn(2, 6, 3, 2)
    torch.testing.assert_close(back(x), layer(x))
    from matnet.layers.base import layer_from_struct
    assert isinstance(layer_from_struct(s, class_name="layerVLADv2"), layerVLADv2)


def test_struct_property_mismatch_is_an_error():
    layer, _ = make(4, 3, 0)
    s = dict(layer.to_struct(), K=5.0)
    with pytest.raises(LayerError, match="K=5"):
        layerVLAD.from_struct(s)


# ---------------------------------------------------------------- bad input
def test_wrong_D_between_centres_and_features():
    layer, _ = make(4, 3, 0)
    with pytest.raises(LayerError, match="D=3"):
        layer(torch.zeros(1, 5, 2, 2))


def test_constructor_shape_mismatch():
    with pytest.raises(LayerError, match="D x K"):
        layerVLAD("v").constructor([np.zeros((3, 4)), np.zeros((5, 4))])
    with pytest.raises(LayerError, match="1 x K|inconsistent"):
        layerVLADv2("v").constructor([np.zeros((3, 4)), np.zeros((1, 5)), np.zeros((3, 4))])


def test_nan_centres_rejected():
    c = np.ones((3, 4))
    c[1, 2] = np.nan
    with pytest.raises(LayerError, match="NaN"):
        layerVLAD("v").constructor([np.ones((3, 4)), c])


def test_forward_without_weights():
    with pytest.raises(LayerError, match="constructor"):
        layerVLAD("v")(torch.zeros(1, 3, 2, 2))


def test_channels_last_input_same_result_and_gradients():
    layer, _ = make(8, 6, 0)
    x = torch.randn(2, 6, 5, 3)
    g = torch.randn(2, 6, 1, 8)
    outs = []
    for xx in (x.clone(), x.clone().to(memory_format=torch.channels_last)):
        xx.requires_grad_(True)
        layer.zero_grad()
        y = layer(xx)
        y.backward(g)
        outs.append((y.detach(), xx.grad.clone(), layer.weights[0].grad.clone()))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_weight_gradients_without_input_gradient(layout):
    """A frozen trunk (x without grad) skips dz/dx; the weight gradients are unchanged."""
    layer, _ = make(8, 6, 4, v2=True)
    layer = layer.double()
    x = in_layout(torch.randn(3, 6, 4, 5, dtype=torch.float64), layout)
    g = torch.randn(3, 6, 1, 8, dtype=torch.float64)
    grads = []
    for requires in (True, False):
        layer.zero_grad()
        layer(x.detach().requires_grad_(requires)).backward(g)
        grads.append([p.grad.clone() for p in layer.weights])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
