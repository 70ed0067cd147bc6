"""matnet selftest --gpu: the suite's CPU run at small sizes (every step of the GPU code:
every figure present and finite, the exactness checks hold CPU against CPU), its exit
without CUDA, the peak table and the FLOP count."""
import json
import math

import pytest
import torch

from matnet.cli import main
from matnet import gpu_suite
from matnet.gpu_suite import STEPS
from matnet.gpu_suite.flops import PUBLISHED_GFLOP, network_flops
from matnet.gpu_suite.record import device_peak
from matnet.gpu_suite.workspace import SMALL

FIGURES = ["env.memory", "model.gflop_per_image", "exact.trunk_rel", "fast.cosine_mean", "exact.train_update_rel",
           "exact.train_loss_rel",
           *[f"extract.{kind}.{p}.bs{bs}" for p in ("exact", "fast") for bs in SMALL.batch_sizes
             for kind in ("memory", "memory_peak", "files", "files_ratio")],
           *[f"train.{kind}.{p}" for p in ("exact", "fast") for kind in ("refresh", "tuples", "peak", "pitts30k_epoch")],
           "search.memory", "search.streamed", "search.kmeans", "ddp.world_size", "ddp.seconds"]
# check -> (status on the CPU, exact value when it has one)
CHECKS = {"model.gflop_vs_published": ("n/a", None), "exact.descriptors_rel": ("pass", 0.0),
          "exact.tf32_off": ("n/a", 0.0), "exact.tf32_differs": ("n/a", None), "fast.cosine_min": ("pass", None),
          "exact.train_weights_rel": ("pass", 0.0), "search.streamed_equals_memory": ("pass", 1.0),
          "search.device_equals_cpu": ("n/a", 1.0), "search.kmeans_finite": ("pass", 1.0),
          "ddp.weights_rel": ("pass", None), "ddp.features_rel": ("pass", None)}
TARGETS = ["target.fast", "target.exact", "target.files", "target.epoch"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_suite")
    with pytest.MonkeyPatch.context() as mp:  # targets out of reach: every profile runs
        mp.setattr(gpu_suite, "TARGETS", {"fast": 1e12, "exact": 1e12, "files": 1e12, "epoch_min": 0.0})
        assert main(["selftest", "--gpu", "--device", "cpu", "--small", "--out", str(out)]) == 0
    return json.loads((out / "gpu_report.json").read_text()), (out / "gpu_report.md").read_text()


def test_small_cpu_run_writes_every_figure(report):
    rec, md = report
    assert rec["size"] == "small" and rec["device"] == "cpu" and rec["ok"]
    assert [s["name"] for s in rec["steps"]] == [*STEPS, "targets"]
    assert all(s["ok"] and s["seconds"] >= 0 for s in rec["steps"]), [s["error"] for s in rec["steps"]]
    figs = {f["id"]: f for f in rec["figures"]}
    missing = [i for i in FIGURES if i not in figs]
    assert not missing
    for i in FIGURES:
        f = figs[i]
        assert isinstance(f["value"], float) and math.isfinite(f["value"]), (i, f["value"])
        assert f["unit"] is not None and f["device"] and "batch_size" in f and "precision" in f, i
    for i, f in figs.items():  # throughputs carry their TFLOPS; the CPU has no peak
        if f["unit"] in ("images/s", "tuples/s", "queries/s"):
            assert f["tflops"] > 0 and f["peak_ratio"] == "unknown", i
    assert figs["extract.memory.fast.bs32"]["batch_size"] == 32 and figs["extract.memory.fast.bs32"]["precision"] == "fast"
    assert figs["ddp.world_size"]["value"] == 1.0 and "gloo" in rec["environment"]["torchrun"]


def test_small_cpu_run_exactness_holds(report):
    rec, _ = report
    checks = {c["id"]: c for c in rec["checks"]}
    assert set(checks) == set(CHECKS)
    for i, (status, value) in CHECKS.items():
        assert checks[i]["status"] == status, (i, checks[i])
        if value is not None:
            assert checks[i]["value"] == value, (i, checks[i])
    assert checks["fast.cosine_min"]["value"] >= 0.999
    # torchrun's process against this one: the same kernels, but another process (thread count
    # matched; bit-equal when the cores are free, float rounding of the sums otherwise)
    assert checks["ddp.weights_rel"]["value"] <= 1e-6 and checks["ddp.features_rel"]["value"] <= 1e-6


def test_targets_and_profiles_reported(report):
    rec, md = report
    targets = {t["id"]: t for t in rec["targets"]}
    assert list(targets) == TARGETS
    assert all(t["status"] == "missed" and "set for one H100" in t["note"] for t in targets.values())
    missed = TARGETS
    assert [p["what"].split(":")[0] for p in rec["profiles"]] == missed  # one per missed target
    for p in rec["profiles"]:
        assert len(p["top"]) >= 3 and p["top"][0]["self_ms"] > 0, p
    for word in (*STEPS, "## Checks", "## Figures", "## Targets", *(f"## Profile: {i}:" for i in missed)):
        assert word in md


def test_without_cuda_says_so_and_exits_2(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv in ([], ["--device", "auto"], ["--device", "cuda"], ["--useGPU", "true"]):
        assert main(["selftest", "--gpu", "--out", str(tmp_path), *argv]) == 2
        err = capsys.readouterr().err
        assert "no CUDA device" in err and "--device cpu --small" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name,model,fp32,bf16", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 66.9, 989.4), ("NVIDIA H100 PCIe", "H100 PCIe", 51.2, 756.0),
    ("NVIDIA H100 NVL", "H100 NVL", 60.0, 835.0), ("NVIDIA H200", "H200", 67.0, 989.4),
    ("NVIDIA A100-SXM4-80GB", "A100", 19.5, 312.0), ("NVIDIA L4", "L4", 30.3, 121.0),
    ("Tesla T4", "T4", 8.1, None), ("NVIDIA L40S", "unknown", None, None), ("AMD EPYC", "unknown", None, None)])
def test_peak_table(name, model, fp32, bf16):
    assert device_peak(name) == {"model": model, "fp32_tflops": fp32, "bf16_tflops": bf16}


def test_flops_of_the_released_layout():
    """Counted from the layers: VGG16 to conv5_3 + NetVLAD K=64 at 480 x 640, plus WPCA-4096
    (a 1x1 convolution on the 32768-D vector) = the published 188.3 GFLOP."""
    from matnet.layers.conv import Conv
    from matnet.simplenn import SimpleNN
    from matnet.synthetic.vgg16_netvlad import vgg16_netvlad
    net = vgg16_netvlad(num_clusters=64, pca_dim=None)
    f = network_flops(net, 480, 640)
    wpca = network_flops(SimpleNN([Conv("WPCA", [torch.zeros(1, 1, 64, 8), torch.zeros(8)])]), 1, 1)["total"]
    assert wpca == 2 * 64 * 8
    total = f["total"] + wpca * 32768 * 4096 / (64 * 8)
    assert abs(total / 1e9 - PUBLISHED_GFLOP) < 0.05
    assert dict(f["layers"])["vlad:core"] == 4 * 30 * 40 * 512 * 64
    conv5 = next(i for i, l in enumerate(net.layers) if l.name == "conv5_1")
    assert network_flops(net, 480, 640, backprop_from=conv5)["trainable"] == pytest.approx(
        3 * 2 * 9 * 512 * 512 * 1200 + 4 * 1200 * 512 * 64)
