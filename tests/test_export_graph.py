"""matnet export --format onnx|torchscript: the whole network as a standalone graph,
run by onnxruntime / torch.jit against matnet's own descriptors on two image sizes;
and the traced (plain-op) forward of the custom-Function layers against the exact one."""
import os

import numpy as np
import pytest
import torch

import matnet.layers.heads as heads
import matnet.layers.vlad as vlad
from converters.network import save_net
from matnet import SimpleNN
from matnet.cli import main
from matnet.descriptor_net import DescriptorNet
from matnet.layers.conv import Conv
from matnet.layers.heads import layerWholeL2Normalize
from matnet.nn import NetVLAD
from matnet.synthetic import tiny_net_structs

SIZES = [(1, 40, 56), (3, 33, 47)]


def small_net(v2: bool, seed: int = 0) -> SimpleNN:
    """matnet's tiny base net, a NetVLAD head (K=4, D=32) and a WPCA to 16 + L2."""
    torch.manual_seed(seed)
    head = NetVLAD(4, 32, vladv2=v2)
    with torch.no_grad():
        head.conv.weight.normal_(0, 5)
        if v2:
            head.conv.bias.normal_()
        head.centroids.uniform_(0, 0.3)
    rng = np.random.default_rng(seed)
    wpca = Conv("WPCA", [rng.standard_normal((1, 1, 128, 16)).astype(np.float32), rng.standard_normal(16).astype(np.float32)])
    net = SimpleNN.from_structs(tiny_net_structs(seed))
    net = SimpleNN(list(net.layers) + head.to_layers() + [wpca, layerWholeL2Normalize("finalL2")],
                   {"normalization": {"averageImage": np.tile(np.float32([[[120, 110, 100]]]), (48, 64, 1))}})
    return net.eval()


def batch(n, h, w, seed):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 255


def autograd_nodes(y) -> list[str]:
    """Names of the autograd nodes along the first-input chain from ``y``."""
    names, node = [], y.grad_fn
    while node is not None:
        names.append(type(node).__name__)
        node = node.next_functions[0][0] if node.next_functions else None
    return names


def rel_err(a, b):
    return float((np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)).max())


@pytest.fixture(scope="module")
def net_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("exportnets")
    return {v2: save_net(small_net(v2), d / f"net_v{int(v2) + 1}.safetensors") for v2 in (False, True)}


@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_traced_forward_is_the_exact_forward(v2, layout, monkeypatch):
    model = DescriptorNet(small_net(v2)).eval()
    x = batch(2, 40, 56, seed=1)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    y = model(x)
    monkeypatch.setattr(vlad, "exporting", lambda: True)
    monkeypatch.setattr(heads, "exporting", lambda: True)
    y_plain = model(x)
    # the same formulas as plain ops; the sums of squares run in another order (torch's
    # channel norm or cache-sized blocks in the fused steps), so equal to float32 rounding
    torch.testing.assert_close(y_plain, y, rtol=2e-6, atol=1e-7)
    fns, names = autograd_nodes(y), autograd_nodes(y_plain)
    assert any("VLADFunction" in n for n in fns) and any("WholeL2" in n for n in fns)
    assert not any("VLADFunction" in n or "WholeL2" in n for n in names)


def test_onnx_parity_two_sizes(net_file, tmp_path, capsys):
    import onnxruntime as ort  # the 'test' extra installs it
    out = tmp_path / "net.onnx"
    assert main(["export", str(net_file[False]), "--format", "onnx", str(out), "--dims", "12"]) == 0
    assert "net.onnx" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]  # no temporary left behind
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["images"] and [o.name for o in sess.get_outputs()] == ["descriptors"]
    model = DescriptorNet(small_net(False), dims=12).eval()
    for i, (n, h, w) in enumerate(SIZES):
        x = batch(n, h, w, seed=10 + i)
        got = sess.run(None, {"images": x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        assert got.shape == (n, 12)
        assert rel_err(got, want) <= 1e-5


def test_torchscript_two_sizes_and_vladv2(net_file, tmp_path):
    out = tmp_path / "net.pt"
    assert main(["export", str(net_file[True]), "--format", "torchscript", str(out)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not a private temporary file's 0600
    loaded = torch.jit.load(str(out))
    model = DescriptorNet(small_net(True)).eval()
    for i, (n, h, w) in enumerate(SIZES):
        x = batch(n, h, w, seed=20 + i)
        with torch.no_grad():
            got, want = loaded(x), model(x)
        assert got.shape == (n, 16)
        assert rel_err(got.numpy(), want.numpy()) <= 1e-6


def test_export_errors(net_file, tmp_path, capsys):
    assert main(["export", str(net_file[False]), "--format", "torchscript", str(tmp_path / "x.pt"), "--dims", "17"]) == 1
    assert "between 1 and the network's output size 16" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.mat"), "--format", "onnx", str(tmp_path / "x.onnx")]) == 1
    assert "missing.mat" in capsys.readouterr().err
    assert main(["export", str(net_file[False]), "--format", "hloc", str(tmp_path / "x.mat")]) == 1
    assert "hloc: layer 1 ('conv1'): expected 3x3x3 filters" in capsys.readouterr().err  # the first layer that differs
    assert not list(tmp_path.iterdir())


# -- the zoo: every layer kind, both formats, three sizes other than the traced one ----------

from helpers.export_zoo import KINDS, SIZES as ZOO_SIZES, TRACE_HW, images, zoo_net  # noqa: E402

from matnet.export.graph import ExportMismatch, export_graph, graph_runner, probe_sizes  # noqa: E402
from matnet.simplenn import vl_simplenn  # noqa: E402


def exported_errors(path, fmt, net, dims, sizes=ZOO_SIZES):
    """Relative error per descriptor of the written file against matnet, at ``sizes``."""
    run = graph_runner(path, fmt)
    model = DescriptorNet(net, dims).eval()
    errs = []
    for i, (n, h, w) in enumerate(sizes):
        x = images(n, h, w, seed=30 + i)
        got = run(x)
        with torch.no_grad():
            want = model(x).numpy()
        assert got.shape == want.shape and not np.isnan(got).any()
        errs.append(np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1))
    return float(np.concatenate(errs).max())


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("kind", KINDS)
def test_zoo_export_equals_matnet(kind, fmt, tmp_path):
    net, dims = zoo_net(kind)
    assert all((h, w) != TRACE_HW for _, h, w in ZOO_SIZES)
    out, verified = export_graph(net, tmp_path / f"{kind}.{fmt}", fmt, dims=dims)
    assert verified is not None and verified.error <= 1e-4
    assert exported_errors(out, fmt, net, dims) <= 1e-5


def cluster_mass(net, x):
    """Per image and cluster, the total soft assignment (sum over pixels) of the VLAD layer."""
    res = vl_simplenn(net, x)
    vi = next(i for i, l in enumerate(net.layers) if l.class_name in ("layerVLAD", "layerVLADv2"))
    feats, layer = res[vi], net.layers[vi]  # res[vi]: the VLAD layer's input (after preL2)
    d, k = layer.D, layer.K
    logits = torch.einsum("ndhw,dk->nkhw", feats, layer.weights[0].reshape(d, k))
    if layer.class_name == "layerVLADv2":
        logits = logits + layer.weights[1].reshape(1, k, 1, 1)
    return torch.softmax(logits, 1).sum((2, 3))


@pytest.mark.parametrize("pre", [True, False])
def test_head_with_empty_clusters(pre, tmp_path):
    """Clusters without assignment: the intra-normalisation's and the L2's 1e-12 decide
    their values, and the exports keep them (a folded epsilon gave 0.2-0.56 or NaN)."""
    net, _ = zoo_net("vladv2" if pre else "no_prel2")
    x = images(2, 24, 30, seed=5)
    with torch.no_grad():
        mass = cluster_mass(net, x)
    assert (mass < 1e-6).sum() >= 2, mass  # some clusters receive (almost) nothing
    for fmt in ("onnx", "torchscript"):
        out, _ = export_graph(net, tmp_path / f"net.{fmt}", fmt, verify=False)
        got = graph_runner(out, fmt)(x)
        with torch.no_grad():
            want = DescriptorNet(net).eval()(x).numpy()
        assert not np.isnan(got).any()
        assert rel_err(got, want) <= 1e-5


def test_export_refuses_what_differs(tmp_path, capsys, monkeypatch):
    """A graph that differs from matnet is refused: exit 1, no file, the worst descriptor named.
    Simulated by the epsilons written plainly again (the optimiser folds them)."""
    import matnet.layers.base as base
    net, _ = zoo_net("no_prel2")
    f = save_net(net, tmp_path / "net.safetensors")
    monkeypatch.setattr(base, "exporting", lambda: False)  # add_epsilon writes t + eps; the layers still export
    out = tmp_path / "net.onnx"
    assert main(["export", str(f), "--format", "onnx", str(out)]) == 1
    err = capsys.readouterr().err
    assert "does not compute matnet's descriptors" in err and "flat grey image" in err, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["net.safetensors"]


def test_no_verify_says_so(net_file, tmp_path, capsys):
    out = tmp_path / "net.pt"
    assert main(["export", str(net_file[False]), "--format", "torchscript", str(out), "--no-verify"]) == 0
    assert "NOT verified (--no-verify)" in capsys.readouterr().out and out.exists()
    assert main(["export", str(net_file[False]), "--format", "torchscript", str(out)]) == 0
    assert "verified against matnet: worst relative error" in capsys.readouterr().out


def test_killed_export_temporary_removed_by_the_next(net_file, tmp_path, capfd):
    """Issue 24 case 19: a killed export left its temporary (~600 MB for VGG16) forever."""
    out = tmp_path / "net.pt"
    stale = tmp_path / "net.pt.4242-deadbeef.matnet-tmp"
    stale.write_bytes(b"x" * 100)
    assert main(["export", str(net_file[False]), "--format", "torchscript", str(out), "--no-verify"]) == 0
    assert not stale.exists() and out.exists() and not (tmp_path / "net.pt.lock").exists()
    assert "net.pt: removed 1 temporary a killed run left" in capfd.readouterr().err
