"""Each SimpleNN layer type against the plain MatConvNet formulas in reference_layers.py,
plus finite-difference gradients."""
import numpy as np
import pytest
import torch

from helpers import reference_layers as ref
from matnet import layer_from_struct, matlab_to_torch, torch_to_matlab

rng = np.random.default_rng(0)


def run(layer, x_matlab):
    with torch.no_grad():
        return torch_to_matlab(layer(matlab_to_torch(x_matlab)))


@pytest.mark.parametrize("stride,pad,dilate,fsize", [
    ((1, 1), (0, 0, 0, 0), (1, 1), (3, 3)),
    ((2, 3), (1, 2, 0, 3), (1, 1), (3, 2)),      # stride > 1, asymmetric pad
    ((1, 1), (1, 1, 1, 1), (1, 1), (1, 1)),      # 1x1 filters with padding
    ((1, 1), (0, 0, 0, 0), (1, 1), (1, 1)),      # 1x1 filters: the matmul path
    ((1, 2), (2, 2, 2, 2), (2, 2), (3, 3)),      # dilation
])
def test_conv_matches_formula(stride, pad, dilate, fsize):
    x = rng.standard_normal((7, 9, 4, 2)).astype(np.float32)
    w = rng.standard_normal(fsize + (4, 5)).astype(np.float32)
    b = rng.standard_normal((1, 5)).astype(np.float32)
    layer = layer_from_struct(dict(name="c", type="conv", weights=[w, b], stride=list(stride),
                                   pad=list(pad), dilate=list(dilate)))
    np.testing.assert_allclose(run(layer, x), ref.conv(x, w, b[0], stride, pad, dilate), rtol=1e-4, atol=1e-4)


def test_conv_grouped_and_no_bias():
    x = rng.standard_normal((5, 6, 6, 1)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)  # 3 groups of 2 input channels
    w = w[..., :3]  # 3 filters, one per group
    layer = layer_from_struct(dict(name="g", type="conv", weights=[w, np.zeros((0, 0), np.float32)], pad=1))
    np.testing.assert_allclose(run(layer, x), ref.conv(x, w, None, pad=(1, 1, 1, 1)), rtol=1e-4, atol=1e-4)


def test_conv_old_field_layout_and_truncated_filters():
    # MatConvNet < beta17: filters/biases; a single 3x3x4 filter saved by MATLAB loses its last dim
    x = rng.standard_normal((6, 5, 4, 1)).astype(np.float32)
    w = rng.standard_normal((3, 3, 4)).astype(np.float32)
    layer = layer_from_struct(dict(name="old", type="conv", filters=w, biases=np.float32(0.5)))
    assert tuple(layer.weights[0].shape) == (3, 3, 4, 1)
    np.testing.assert_allclose(run(layer, x), ref.conv(x, w[..., None], [0.5]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["max", "avg"])
@pytest.mark.parametrize("size,stride,pad", [
    ((2, 2), (2, 2), (0, 0, 0, 0)),
    ((3, 2), (2, 1), (1, 2, 0, 1)),   # asymmetric pad
    ((3, 3), (2, 2), (0, 1, 0, 1)),   # caffe-style bottom/right pad
    ((2, 3), (3, 2), (1, 0, 2, 0)),
])
def test_pool_matches_formula(method, size, stride, pad):
    x = rng.standard_normal((7, 10, 3, 2)).astype(np.float32)
    layer = layer_from_struct(dict(name="p", type="pool", pool=list(size), stride=list(stride),
                                   pad=list(pad), method=method))
    want = ref.pool(x, size, stride, pad, method)
    got = run(layer, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_pool_avg_divides_by_pixels_inside_image():
    x = np.ones((2, 2, 1, 1), np.float32)
    layer = layer_from_struct(dict(name="p", type="pool", pool=[2, 2], stride=1, pad=1, method="avg"))
    # every window holds only ones from the image: the mean is 1 everywhere, padding excluded
    np.testing.assert_allclose(run(layer, x), np.ones((3, 3, 1, 1)))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 16])
def test_normalize_matches_formula(n):
    x = rng.standard_normal((3, 4, 7, 2)).astype(np.float32)
    param = [n, 1.5, 0.3, 0.75]
    layer = layer_from_struct(dict(name="lrn", type="lrn", param=param))
    np.testing.assert_allclose(run(layer, x), ref.normalize(x, *param), rtol=1e-5, atol=1e-6)


def test_normalize_full_window_is_l2_normalisation():
    d = 6
    x = rng.standard_normal((2, 3, d, 2)).astype(np.float32)
    layer = layer_from_struct(dict(name="preL2", type="normalize", param=[2 * d, 1e-12, 1, 0.5]))
    got = run(layer, x)
    np.testing.assert_allclose(np.linalg.norm(got, axis=2), 1.0, rtol=1e-5)
    zero = run(layer, np.zeros((2, 3, d, 1), np.float32))  # epsilon path: zeros stay zeros, no NaN
    assert np.all(zero == 0)


def test_relu_leak_softmax_dropout():
    x = rng.standard_normal((3, 4, 5, 2)).astype(np.float32)
    np.testing.assert_allclose(run(layer_from_struct(dict(name="r", type="relu", leak=0.1)), x),
                               ref.relu(x, 0.1), rtol=1e-6)
    np.testing.assert_allclose(run(layer_from_struct(dict(name="r", type="relu")), x), ref.relu(x), rtol=1e-6)
    np.testing.assert_allclose(run(layer_from_struct(dict(name="s", type="softmax")), x), ref.softmax(x),
                               rtol=1e-5, atol=1e-7)
    drop = layer_from_struct(dict(name="d", type="dropout", rate=0.5)).eval()
    np.testing.assert_array_equal(run(drop, x), x)
    drop.train()
    y = drop(torch.ones(1, 1000, 1, 1))
    assert set(torch.unique(y).tolist()) <= {0.0, 2.0} and 300 < int((y == 0).sum()) < 700


def _gradcheck(layer, shape):
    layer = layer.double()
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    params = [p for p in layer.parameters()]
    assert torch.autograd.gradcheck(lambda inp, *ps: layer(inp), (x, *params), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("struct,shape", [
    (dict(type="conv", weights=[rng.standard_normal((3, 2, 3, 4)), rng.standard_normal((4,))],
          stride=[2, 1], pad=[1, 0, 2, 1]), (2, 3, 6, 5)),
    (dict(type="conv", weights=[rng.standard_normal((1, 1, 3, 4)), rng.standard_normal((1, 4))]), (2, 3, 2, 3)),
    (dict(type="pool", pool=[3, 2], stride=[2, 1], pad=[1, 2, 0, 1], method="avg"), (2, 3, 5, 7)),
    (dict(type="pool", pool=[2, 3], stride=[1, 2], pad=[0, 1, 1, 0], method="max"), (2, 3, 5, 7)),
    (dict(type="normalize", param=[3, 2.0, 0.5, 0.75]), (2, 5, 3, 4)),
    (dict(type="normalize", param=[4, 2.0, 0.5, 0.75]), (2, 5, 3, 4)),
    (dict(type="normalize", param=[10, 1e-12, 1, 0.5]), (2, 5, 3, 4)),
    (dict(type="relu", leak=0.2), (2, 3, 4, 4)),
    (dict(type="softmax"), (2, 3, 4, 4)),
])
def test_gradients_by_finite_differences(struct, shape):
    _gradcheck(layer_from_struct(dict(name="g", **struct)), shape)
