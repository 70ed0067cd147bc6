"""The fast NetVLAD head: the all-channel ``normalize`` (its own backward), the lean
layerWholeL2Normalize, and SimpleNN's fused preL2 + VLAD step, against the plain
formulas (autograd of x (kappa + alpha sum x^2)^-beta, x / (||x|| + 1e-12)) and the
layer-by-layer path in float64, and by finite differences."""
import numpy as np
import pytest
import torch

from matnet.layers import normalize as normalize_module
from matnet.layers.heads import layerWholeL2Normalize
from matnet.layers.normalize import Normalize
from matnet.layers.vlad import layerVLAD, layerVLADv2
from matnet.simplenn import SimpleNN, vl_simplenn

LAYOUTS = [torch.contiguous_format, torch.channels_last]


def formula_norm(x, kappa, alpha, beta):
    return x * (kappa + alpha * (x * x).sum(1, keepdim=True)) ** -beta


def inputs(shape, layout, seed, zero_sample=False):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if zero_sample:
        x[0] = 0  # the kappa path: q = kappa, y = 0
    return x.contiguous(memory_format=layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("param", [(1e-12, 1.0, 0.5), (0.3, 0.7, 0.75)])
def test_channel_norm_matches_formula(layout, param, monkeypatch):
    # pieces of 2 samples over 5: the CPU chunk loops see a remainder
    monkeypatch.setattr(normalize_module, "CHUNK", 2 * 6 * 3 * 4)
    # NCHW sums of squares in blocks of 4 of the 6 channels: a full block and a remainder
    monkeypatch.setattr(normalize_module, "SUMSQ_BLOCK", 5 * 3 * 4 * 4)
    x = inputs((5, 6, 3, 4), layout, seed=1, zero_sample=True).requires_grad_(True)
    layer = Normalize("preL2", [2 * 6, *param])
    y = layer(x)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (dx,) = torch.autograd.grad(y, x, g)
    xr = x.detach().clone().requires_grad_(True)
    yr = formula_norm(xr, *param)
    (dxr,) = torch.autograd.grad(yr, xr, g)
    torch.testing.assert_close(y, yr, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(dx, dxr, rtol=1e-12, atol=1e-12 * dxr.abs().max().item())
    assert y.is_contiguous(memory_format=layout) and dx.is_contiguous(memory_format=layout)
    assert torch.autograd.gradcheck(layer, (inputs((3, 4, 2, 3), layout, seed=3).requires_grad_(True),))


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 7])
def test_channel_sumsq_blocks(rows, monkeypatch):
    """NCHW sums of squares in blocks of ``rows`` channels (whole blocks, a remainder or
    both) equal the plain sum; channels_last takes the norm over its contiguous channels."""
    from matnet.layers.normalize import channel_sumsq
    x = inputs((3, 9, 4, 5), torch.contiguous_format, seed=4)
    monkeypatch.setattr(normalize_module, "SUMSQ_BLOCK", 3 * 4 * 5 * rows)
    ref = (x * x).sum(1, keepdim=True)
    for layout in LAYOUTS:
        torch.testing.assert_close(channel_sumsq(x.contiguous(memory_format=layout)), ref, rtol=1e-14, atol=0)


def saved_bytes(fn, x):
    """Bytes of the distinct storages autograd keeps for the backward of fn(x)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(storages.values())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_channel_norm_keeps_only_its_input(layout):
    """The backward keeps x and two N x 1 x H x W maps, not the squares and powers."""
    d = 16
    x = inputs((2, d, 5, 6), layout, seed=4).float().requires_grad_(True)
    got = saved_bytes(Normalize("preL2", [2 * d, 1e-12, 1, 0.5]), x)
    assert got <= x.nbytes * (1 + 2 / d)


def test_fused_head_keeps_no_normalised_copy():
    """Fused, the head's backward keeps x, three K x HW maps (assignments, logits and the
    scaled assignments) and the small VLAD-sized maps; layer by layer it also keeps the normalised features."""
    d, k = 32, 4
    net = head(False, d, k, (1e-12, 1.0, 0.5), seed=15).float()
    x = inputs((2, d, 6, 10), torch.channels_last, seed=16).float().requires_grad_(True)
    vlad_bytes = 2 * d * k * 4
    assert saved_bytes(net, x) <= x.nbytes * (1 + (3 * k + 2) / d) + 4 * vlad_bytes
    assert saved_bytes(lambda t: vl_simplenn(net, t)[-1], x) >= 2 * x.nbytes


def test_whole_l2_matches_formula():
    x = inputs((3, 2, 4, 5), torch.contiguous_format, seed=5).requires_grad_(True)
    x.data[1] = 0  # zero sample: y = 0, dz/dx = dzdy / 1e-12
    y = layerWholeL2Normalize()(x)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    (dx,) = torch.autograd.grad(y, x, g)
    xr = x.detach().clone().requires_grad_(True)
    flat = xr.transpose(2, 3).reshape(3, -1)  # MATLAB's column-major order
    yr = flat / (flat.norm(dim=1, keepdim=True) + 1e-12)
    (dxr,) = torch.autograd.grad(yr, xr, g.reshape(3, -1))
    torch.testing.assert_close(y.reshape(3, -1), yr, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(dx, dxr, rtol=1e-12, atol=1e-15)
    assert torch.autograd.gradcheck(layerWholeL2Normalize(), (inputs((2, 3, 2, 2), torch.contiguous_format,
                                                                      seed=7).requires_grad_(True),))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("param", [(1e-12, 1.0, 0.5), (0.3, 0.7, 0.75)])
def test_normalize_then_whole_l2_fused_matches_formula(layout, param):
    """layerWholeL2Normalize with a prenorm (NetVLAD's intranorm + postL2 in one step)
    against the two formulas composed by autograd, MATLAB's flatten order included;
    a zero sample takes the kappa path."""
    x = inputs((3, 4, 2, 5), layout, seed=17, zero_sample=True).requires_grad_(True)
    pre = Normalize("vlad:intranorm", [2 * 4, *param])
    y = layerWholeL2Normalize("postL2")(x, prenorm=pre)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(18), dtype=torch.float64)
    (dx,) = torch.autograd.grad(y, x, g)
    xr = x.detach().clone().requires_grad_(True)
    flat = formula_norm(xr, *param).transpose(2, 3).reshape(3, -1)
    n = flat.norm(dim=1, keepdim=True) + 1e-12
    yr = flat / n
    # layerWholeL2Normalize.backward_ divides by n^3 where autograd's exact derivative has
    # n^2 ||y||; the same at 1e-12 relative except for the zero sample (no gradient there)
    (dxr,) = torch.autograd.grad(yr, xr, g.reshape(3, -1))
    torch.testing.assert_close(y.reshape(3, -1), yr, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(dx[1:], dxr[1:], rtol=1e-10, atol=1e-12 * dxr.abs().max().item())
    # zero sample: y = 0, so dz/dy = g / 1e-12 and dz/dx = kappa^-beta g / 1e-12
    g0 = g[0].reshape(4, 5, 2).transpose(1, 2)  # MATLAB order (h fastest, w, c) as C x H x W
    torch.testing.assert_close(dx[0], g0 * param[0] ** -param[2] / 1e-12, rtol=1e-12, atol=0)
    assert dx.is_contiguous(memory_format=layout)
    fused = lambda t: layerWholeL2Normalize()(t, prenorm=pre)  # noqa: E731
    assert torch.autograd.gradcheck(fused, (inputs((2, 3, 2, 2), layout, seed=19).requires_grad_(True),))


def head(v2, d, k, pre_param, seed):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((d, k))
    core = (layerVLADv2("vlad:core").constructor([4 * c, -rng.random((1, k)), -c]) if v2 else
            layerVLAD("vlad:core").constructor([4 * c, c]))
    return SimpleNN([Normalize("preL2", [2 * d, *pre_param]), core,
                     Normalize("vlad:intranorm", [2 * d, 1e-12, 1, 0.5]),
                     layerWholeL2Normalize("postL2")]).double()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("pre_param", [(1e-12, 1.0, 0.5), (0.2, 1.5, 0.75)])
def test_fused_head_equals_layer_by_layer(layout, v2, pre_param):
    net = head(v2, 6, 5, pre_param, seed=8)
    calls = []
    net.layers[0].register_forward_hook(lambda *a: calls.append(1))
    net.layers[2].register_forward_hook(lambda *a: calls.append(3))
    x = inputs((3, 6, 4, 5), layout, seed=9, zero_sample=True)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y1 = net(x1)                      # fused preL2 + VLAD, intranorm + postL2
    assert not calls                  # the normalize layers did not run on their own
    y2 = vl_simplenn(net, x2)[-1]     # one layer at a time
    assert calls
    g = torch.randn(y1.shape, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    grads1 = torch.autograd.grad(y1, [x1, *net.parameters()], g)
    grads2 = torch.autograd.grad(y2, [x2, *net.parameters()], g)
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-15)
    with torch.no_grad():  # inference runs the forward without the autograd function
        torch.testing.assert_close(net(x), y2.detach(), rtol=1e-12, atol=1e-15)
    for a, b in zip(grads1, grads2):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12 * b.abs().max().item())
    assert grads1[0].is_contiguous(memory_format=layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("v2", [False, True])
def test_fused_head_gradcheck(layout, v2):
    net = head(v2, 3, 4, (0.1, 1.0, 0.5), seed=11)
    x = inputs((2, 3, 3, 2), layout, seed=12).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t, *ps: net(t), (x, *net.parameters()))


def test_only_all_channel_normalize_fuses():
    net = head(False, 6, 3, (1e-12, 1.0, 0.5), seed=13)
    lrn = Normalize("lrn", [5, 1.0, 0.1, 0.75])  # windows of 5 of the 6 channels
    x = inputs((2, 6, 3, 3), torch.contiguous_format, seed=14)
    with pytest.raises(ValueError, match="cannot fuse layer 'lrn'"):
        net.layers[1](x, prenorm=lrn)
    with pytest.raises(ValueError, match="cannot fuse layer 'lrn'"):
        net.layers[3](x, prenorm=lrn)
    local = SimpleNN([lrn, net.layers[1]]).double()
    torch.testing.assert_close(local(x), net.layers[1](lrn(x)), rtol=0, atol=0)
