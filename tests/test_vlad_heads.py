"""The parameter-free layers and whole NetVLAD heads (preL2 -> VLAD -> intra -> postL2,
max, avg) against numpy references of the MATLAB forward and backward formulas
(MATLAB layout H x W x C x N), including the all-zero input (epsilon paths)."""
import numpy as np
import pytest
import torch

from matnet.layers.base import layer_from_struct
from matnet.layers.heads import layerTotalAvgPool, layerTotalMaxPool, layerWholeL2Normalize
from matnet.layers.normalize import Normalize
from matnet.layers.vlad import layerVLAD, layerVLADv2
from matnet.layout import torch_to_matlab
from helpers.reference_layers import ref_backward, ref_forward


def mat(t):
    return torch_to_matlab(t.detach()).astype(np.float64)


# ---------------------------------------------------------------- per-layer references
def ref_norm(x):
    """vl_nnnormalize [2D, 1e-12, 1, 0.5]: x / sqrt(1e-12 + sum_c x^2)."""
    return x / np.sqrt(1e-12 + (x ** 2).sum(axis=2, keepdims=True))


def ref_norm_back(x, g):
    L = 1e-12 + (x ** 2).sum(axis=2, keepdims=True)
    return g * L ** -0.5 - 2 * 0.5 * x * (g * x).sum(axis=2, keepdims=True) * L ** -1.5


def ref_wholel2(x):
    n = x.shape[3]
    xr = x.reshape(-1, n, order="F")
    y = xr / (np.sqrt((xr ** 2).sum(0)) + 1e-12)
    return y.reshape(1, 1, -1, n, order="F")


def ref_wholel2_back(x, g):
    n = x.shape[3]
    xr = x.reshape(-1, n, order="F")
    gr = g.reshape(-1, n, order="F")
    out = np.zeros_like(xr)
    for i in range(n):
        nrm = np.sqrt((xr[:, i] ** 2).sum()) + 1e-12
        out[:, i] = -xr[:, i] * (xr[:, i] @ gr[:, i]) / nrm ** 3 + gr[:, i] / nrm
    return out.reshape(x.shape, order="F")


def ref_maxpool(x):
    return x.max(axis=(0, 1), keepdims=True)


def ref_maxpool_back(x, g):
    """vl_nnpool max backward: the first strict maximum in column-major scan order."""
    h, w, c, n = x.shape
    out = np.zeros_like(x)
    for ci in range(c):
        for ni in range(n):
            best, pos = -np.inf, None
            for u in range(w):
                for v in range(h):
                    if x[v, u, ci, ni] > best:
                        best, pos = x[v, u, ci, ni], (v, u)
            out[pos[0], pos[1], ci, ni] += g[0, 0, ci, ni]
    return out


def ref_avgpool(x):
    return x.mean(axis=(0, 1), keepdims=True)


def ref_avgpool_back(x, g):
    h, w = x.shape[:2]
    return np.broadcast_to(g / (h * w), x.shape).copy()


# ---------------------------------------------------------------- heads
def build_head(method, D, K, seed):
    """The layer list addLayers makes for ``method`` (built by hand here)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((D, K))
    norm = dict(param=[2 * D, 1e-12, 1, 0.5])
    layers = []
    if "preL2" in method:
        layers.append(Normalize("preL2", **norm))
    if method.startswith("vladv2"):
        a = 3.0
        layers.append(layerVLADv2("vlad:core").constructor(
            [2 * a * c, -a * (c ** 2).sum(0, keepdims=True), -c]))
    elif method.startswith("vlad"):
        cn = c / (np.sqrt((c ** 2).sum(0)) + 1e-12)
        layers.append(layerVLAD("vlad:core").constructor([5.0 * cn, c]))
    elif method == "max":
        layers.append(layerTotalMaxPool("max:core"))
    elif method == "avg":
        layers.append(layerTotalAvgPool("avg:core"))
    if "intra" in method:
        layers.append(Normalize("vlad:intranorm", **norm))
    layers.append(layerWholeL2Normalize("postL2"))
    return torch.nn.Sequential(*layers).double()


def ref_layer(layer, x, g=None):
    """Forward (g None) or backward of one layer with the numpy references."""
    if isinstance(layer, Normalize):
        return ref_norm(x) if g is None else ref_norm_back(x, g)
    if isinstance(layer, layerWholeL2Normalize):
        return ref_wholel2(x) if g is None else ref_wholel2_back(x, g)
    if isinstance(layer, layerTotalMaxPool):
        return ref_maxpool(x) if g is None else ref_maxpool_back(x, g)
    if isinstance(layer, layerTotalAvgPool):
        return ref_avgpool(x) if g is None else ref_avgpool_back(x, g)
    w = [p.detach().numpy() for p in layer.weights]
    D, K = layer.D, layer.K
    args = ((w[0].reshape(D, K), w[1].reshape(K), w[2].reshape(D, K)) if len(w) == 3 else
            (w[0].reshape(D, K), None, w[1].reshape(D, K)))
    return ref_forward(x, *args) if g is None else ref_backward(x, *args, g)[0]


def ref_head(head, x, g):
    acts = [x]
    for layer in head:
        acts.append(ref_layer(layer, acts[-1]))
    grad = g
    for layer, a in zip(reversed(list(head)), reversed(acts[:-1])):
        grad = ref_layer(layer, a, grad)
    return acts[-1], grad


METHODS = ["vlad_preL2_intra", "vladv2_preL2_intra", "vlad_preL2", "max", "avg"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("K,D,shape", [(8, 6, (2, 3, 5)), (64, 10, (3, 4, 2))])
@pytest.mark.parametrize("zero", [False, True])
def test_head_forward_backward(method, K, D, shape, zero):
    head = build_head(method, D, K, seed=K + D)
    n, h, w = shape
    gen = torch.Generator().manual_seed(3)
    x = (torch.zeros(n, D, h, w, dtype=torch.float64) if zero else
         torch.randn(n, D, h, w, generator=gen, dtype=torch.float64)).requires_grad_(True)
    y = head(x)
    out_dim = D * K if method.startswith("vlad") else D
    assert y.shape == (n, out_dim, 1, 1)
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    y.backward(g)
    ref_y, ref_g = ref_head(head, mat(x), mat(g))
    np.testing.assert_allclose(mat(y), ref_y, rtol=1e-9, atol=1e-12)
    scale = max(1.0, np.abs(ref_g).max())
    np.testing.assert_allclose(mat(x.grad), ref_g, rtol=1e-7, atol=1e-9 * scale)
    if zero and method in ("max", "avg"):  # postL2 of zeros: 0 forward, dzdy / 1e-12 backward
        assert np.all(mat(y) == 0) and np.abs(ref_g).max() > 1e9


@pytest.mark.parametrize("method", METHODS)
def test_head_gradcheck(method):
    head = build_head(method, 3, 4, seed=0)
    x = torch.randn(2, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(head, (x,))


def test_final_descriptor_order():
    """Through intra-norm and postL2 the (k, d) entry of the K x D VLAD sits at k + K*d."""
    K, D = 4, 3
    head = build_head("vlad_preL2_intra", D, K, seed=1)
    x = torch.randn(1, D, 2, 3, dtype=torch.float64)
    vlad = head[1](head[0](x))[0, :, 0, :].detach().numpy()  # D x K
    intra = vlad / np.sqrt(1e-12 + (vlad ** 2).sum(0, keepdims=True))
    y = head(x).detach().reshape(-1).numpy()
    nrm = np.sqrt((intra ** 2).sum())
    for k in range(K):
        for d in range(D):
            assert y[k + K * d] == pytest.approx(intra[d, k] / nrm, rel=1e-9)


def test_wholel2_flattens_in_matlab_order():
    """Non-VLAD input H x W x C: the output follows MATLAB's column-major reshape."""
    x = torch.arange(1, 2 * 3 * 4 + 1, dtype=torch.float64).reshape(1, 2, 3, 4)  # N C H W
    y = layerWholeL2Normalize()(x).reshape(-1).numpy()
    col = mat(x).reshape(-1, order="F")
    np.testing.assert_allclose(y, col / (np.linalg.norm(col) + 1e-12))


def test_maxpool_ties_go_to_first_in_column_major_order():
    x = torch.zeros(1, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        x[0, 0, 0, 1] = 1.0  # (h=0, w=1): column-major index 2
        x[0, 0, 1, 0] = 1.0  # (h=1, w=0): column-major index 1 -> first
    layerTotalMaxPool()(x).sum().backward()
    assert x.grad[0, 0, 1, 0] == 1 and x.grad.sum() == 1


@pytest.mark.parametrize("cls,name", [(layerWholeL2Normalize, "wholeL2"),
                                      (layerTotalMaxPool, "maxTotal"),
                                      (layerTotalAvgPool, "avgTotal")])
def test_parameterless_structs(cls, name):
    layer = cls()
    assert layer.name == name and layer.type == "custom"
    s = cls("postL2").to_struct()
    assert s == {"type": "custom", "name": "postL2", "precious": False}
    back = layer_from_struct(dict(s, precious=np.array([[1]])), class_name=cls.class_name)
    assert isinstance(back, cls) and back.name == "postL2" and back.precious
