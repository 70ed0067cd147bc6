"""matnet.nn.NetVLAD against a plain numpy statement of NetVLAD, its MATLAB
initialisation by hand, and lossless conversion to and from layerVLAD/layerVLADv2."""
import io
import math

import numpy as np
import pytest
import torch

from matnet import SimpleNN, layerVLAD, layerVLADv2
from matnet.nn import NetVLAD


def ref_netvlad(x, w, b, c, preL2=True, intra=True, order="D"):
    """Plain float64 NetVLAD: x N x D x H x W, w K x D, b K or None, c K x D."""
    x = np.asarray(x, np.float64)
    n, d = x.shape[:2]
    k = w.shape[0]
    out = []
    for i in range(n):
        f = x[i].reshape(d, -1)
        if preL2:
            f = f / np.sqrt(1e-12 + (f ** 2).sum(0, keepdims=True))
        logits = w @ f + (0 if b is None else np.asarray(b, np.float64)[:, None])
        a = np.exp(logits - logits.max(0, keepdims=True))
        a /= a.sum(0, keepdims=True)
        v = np.zeros((k, d))
        for j in range(k):
            v[j] = ((f - c[j][:, None]) * a[j][None, :]).sum(1)
            if intra:
                v[j] /= math.sqrt(1e-12 + (v[j] ** 2).sum())
        vec = v.T.reshape(-1) if order == "D" else v.reshape(-1)   # (k, d) at k + K*d or d + D*k
        out.append(vec / (np.linalg.norm(vec) + 1e-12))
    return np.stack(out)


def params(m):
    k, d = m.num_clusters, m.dim
    w = m.conv.weight.detach().reshape(k, d).double().numpy()
    b = m.conv.bias.detach().double().numpy() if m.vladv2 else None
    return w, b, m.centroids.detach().double().numpy()


def random_module(k, d, v2, seed, **kw):
    torch.manual_seed(seed)
    m = NetVLAD(k, d, vladv2=v2, **kw)
    with torch.no_grad():
        m.conv.weight.normal_(0, 3)
        if v2:
            m.conv.bias.normal_()
        m.centroids.normal_(0, 0.3)
    return m


@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("order", ["D", "K"])
@pytest.mark.parametrize("preL2,intra", [(True, True), (False, False), (True, False)])
def test_forward_matches_plain_reference(v2, layout, order, preL2, intra):
    m = random_module(3, 5, v2, 0, normalize_input=preL2, intra_norm=intra, order=order)
    x = torch.randn(2, 5, 3, 7)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    y = m(x)
    assert y.shape == (2, 15)
    np.testing.assert_allclose(y.detach().numpy(), ref_netvlad(x.numpy(), *params(m), preL2, intra, order),
                               rtol=1e-5, atol=1e-6)


def test_any_size_and_backbone_width():
    m = random_module(4, 17, False, 1)
    for h, w in [(1, 1), (9, 2), (13, 11)]:
        x = torch.randn(3, 17, h, w)
        np.testing.assert_allclose(m(x).detach().numpy(), ref_netvlad(x.numpy(), *params(m)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("v2", [False, True])
def test_gradients_match_autograd_of_plain_torch(v2):
    m = random_module(3, 4, v2, 2)
    x = torch.randn(2, 4, 3, 5, requires_grad=True)
    g = torch.randn(2, 12)
    (m(x) * g).sum().backward()
    # the same function in plain torch ops, differentiated by autograd
    w = m.conv.weight.detach().reshape(3, 4).clone().requires_grad_()
    b = m.conv.bias.detach().clone().requires_grad_() if v2 else None
    c = m.centroids.detach().clone().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    f = x2.reshape(2, 4, -1)
    f = f / torch.sqrt(1e-12 + (f * f).sum(1, keepdim=True))
    logits = torch.einsum("kd,ndi->nki", w, f) + (0 if b is None else b[None, :, None])
    a = torch.softmax(logits, 1)
    v = torch.einsum("nki,ndi->nkd", a, f) - a.sum(2)[:, :, None] * c[None]
    v = v / torch.sqrt(1e-12 + (v * v).sum(2, keepdim=True))
    vec = v.transpose(1, 2).reshape(2, -1)
    vec = vec / (vec.norm(dim=1, keepdim=True) + 1e-12)
    (vec * g).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(m.conv.weight.grad.reshape(3, 4), w.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(m.centroids.grad, c.grad, rtol=1e-4, atol=1e-6)
    if v2:
        torch.testing.assert_close(m.conv.bias.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_init_from_applies_matlab_alpha_rule_by_hand():
    c = np.array([[2.0, 0.0], [0.0, 3.0]], np.float32)                 # K x D
    descs = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], np.float32)  # N x D
    # layerVLAD: dot products with the unit centres: (1, 0), (0, 1), (0.6, 0.8): gaps 1, 1, 0.2
    m = NetVLAD(2, 2, vladv2=False).init_from(c, descs)
    alpha = math.log(100) / ((1 + 1 + 0.2) / 3)
    assert m.alpha == pytest.approx(alpha, rel=1e-6)
    np.testing.assert_allclose(m.conv.weight.detach().reshape(2, 2).numpy(), alpha * np.eye(2), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(m.centroids.detach().numpy(), c)
    # layerVLADv2: squared distances to the centres (1, 10), (5, 4), (2.6, 5.2): gaps 9, 1, 2.6
    m2 = NetVLAD(2, 2, vladv2=True).init_from(torch.from_numpy(c), torch.from_numpy(descs))
    alpha2 = math.log(100) / ((9 + 1 + 2.6) / 3)
    assert m2.alpha == pytest.approx(alpha2, rel=1e-6)
    np.testing.assert_allclose(m2.conv.weight.detach().reshape(2, 2).numpy(), 2 * alpha2 * c, rtol=1e-6)
    np.testing.assert_allclose(m2.conv.bias.detach().numpy(), [-4 * alpha2, -9 * alpha2], rtol=1e-6)


def test_init_from_shape_errors():
    m = NetVLAD(4, 3)
    with pytest.raises(ValueError, match="4 x 3"):
        m.init_from(np.zeros((3, 4)), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="N x 3"):
        m.init_from(np.ones((4, 3)), np.zeros((10, 4)))


@pytest.mark.parametrize("v2", [False, True])
def test_layer_round_trips_are_lossless(v2):
    rng = np.random.default_rng(3)
    a, c = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((6, 4)).astype(np.float32)
    if v2:
        layer = layerVLADv2("vlad:core").constructor([a, rng.standard_normal((1, 4)), -c])
    else:
        layer = layerVLAD("vlad:core").constructor([a, c])
    m = NetVLAD.from_layer(layer)
    assert (m.num_clusters, m.dim, m.vladv2) == (4, 6, v2)
    back = m.to_layer()
    assert type(back) is type(layer)
    for w0, w1 in zip(layer.weights, back.weights):
        assert w0.shape == w1.shape and torch.equal(w0, w1)
    again = NetVLAD.from_layer(back)
    for (n0, p0), (n1, p1) in zip(m.state_dict().items(), again.state_dict().items()):
        assert n0 == n1 and torch.equal(p0, p1)
    # the module computes what the SimpleNN head computes, in both layouts
    net = SimpleNN(m.to_layers())
    assert [l.name for l in net.layers] == ["preL2", "vlad:core", "vlad:intranorm", "postL2"]
    x = torch.randn(2, 6, 5, 3)
    for xx in (x, x.contiguous(memory_format=torch.channels_last)):
        torch.testing.assert_close(m(xx), net(xx).reshape(2, -1), rtol=1e-5, atol=1e-7)
    # K-major on request: a permutation of MATLAB's order
    mk = NetVLAD.from_layer(layer, order="K")
    torch.testing.assert_close(mk(x).reshape(2, 4, 6).transpose(1, 2).reshape(2, -1), m(x), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="order 'K'"):
        mk.to_layers()


def test_input_errors():
    m = NetVLAD(2, 8)
    with pytest.raises(ValueError, match="N x 8 x H x W"):
        m(torch.zeros(1, 7, 2, 2))
    with pytest.raises(ValueError, match="order"):
        NetVLAD(2, 8, order="C")
    with pytest.raises(TypeError, match="layerVLAD"):
        NetVLAD.from_layer(torch.nn.Linear(2, 2))


def test_traces_for_export_on_any_size():
    """torch.jit.trace records the kernel's forward as plain ops (layers.base.exporting):
    the traced module equals the eager one on other batch and image sizes."""
    m = random_module(3, 6, True, 4).eval()
    with torch.no_grad():
        buf = io.BytesIO()
        torch.jit.save(torch.jit.trace(m, torch.randn(2, 6, 4, 5)), buf)  # fails on a Python Function
        buf.seek(0)
        traced = torch.jit.load(buf)
        for shape in [(1, 6, 7, 3), (3, 6, 2, 9)]:
            x = torch.randn(shape)
            torch.testing.assert_close(traced(x), m(x), rtol=0, atol=0)
