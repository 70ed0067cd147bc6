"""Time the NetVLAD layer (layerVLAD, K=64) on one training tuple against per-cluster
loops, and the full head (preL2 -> layerVLAD -> intra-normalisation -> postL2) against
the layer alone, in the same run.

Baselines, all a Python loop over the K clusters forming each cluster's N x D x H x W
residual in the forward pass:
- "MATLAB repmat": the MATLAB forward_/backward_ structure written in torch (repmat of
  the assignment map, the hand-written backward with its cluster and sample loops);
- "broadcast": the same with broadcasting instead of repmat;
- "autograd": the loop forward as a PyTorch user writes it, backward by autograd.
The full head runs on the unnormalised features; its ratio to layerVLAD alone is the
cost of the normalisations (targets: forward <= 1.3x, forward+backward <= 1.5x).  Its
baseline "autograd formula" head writes the normalisations as a PyTorch user does
(x * (1e-12 + sum x^2)^-0.5 and x / (||x|| + 1e-12), backward by autograd).
The "matmul floor" is the six matrix products any exact implementation must do for
forward+backward (two forward: assignment logits and aggregation; four backward), each
timed alone at its shape: loop time / floor bounds the ratio any implementation can
reach on this machine.
Each variant runs in its own subprocess: its first run gives the peak memory (VmHWM
growth over the state after building the inputs), then the best of --repeats runs its
time.  A variant's time varies by up to 1.5x from one process to the next on a shared
VM (one process per variant printed anything from 0.9x to 1.8x for the head), so every
variant gets 5 processes by default, with 10 runs each under --head-only (the README's
head figures) and 5 in the full run (its loops take up to a second a run); and each
head's ratio to layerVLAD alone is also measured paired: both timed in one process,
their runs interleaved, the median over the processes printed with its range.

    python benchmarks/bench_vlad.py [--threads 2] [--repeats 5|10] [--rounds 5] [--head-only]
                                    [--n 12 --d 512 --h 30 --w 40 --k 64]
"""
from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import statistics
import subprocess
import sys
import time

import torch


def make_inputs(a):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.n, a.d, a.h, a.w, generator=g)
    x = x / x.norm(dim=1, keepdim=True)  # preL2-normalised features, as in the head
    c = torch.randn(a.d, a.k, generator=g)
    assign = 10.0 * c / c.norm(dim=0, keepdim=True)
    dzdy = torch.randn(a.n, a.d, 1, a.k, generator=g)
    return x, assign, -c, dzdy


def make_head_inputs(a):
    """Unnormalised conv5-like features (ReLU output) and dz/dy of the head's output."""
    g = torch.Generator().manual_seed(2)
    return (torch.randn(a.n, a.d, a.h, a.w, generator=g).relu_(),
            torch.randn(a.n, a.d * a.k, 1, 1, generator=g))


# ------------------------------------------------------------------ baseline: the original loops
def loop_forward(x, assign, neg_c, repmat=False):
    """Per-cluster loop; ``repmat`` materialises the cluster's assignment map over the D
    channels as MATLAB's forward_ does (repmat), otherwise it is broadcast."""
    n, d = x.shape[:2]
    k_ = assign.shape[1]
    a = torch.softmax(torch.einsum("ndhw,dk->nkhw", x, assign), dim=1)
    y = x.new_zeros(n, d, 1, k_)
    for k in range(k_):
        resid = x + neg_c[:, k].reshape(1, d, 1, 1)
        ak = a[:, k:k + 1].repeat(1, d, 1, 1) if repmat else a[:, k:k + 1]
        y[:, :, 0, k] = (ak * resid).sum((2, 3))
    return y


def loop_forward_backward(x, assign, neg_c, dzdy, repmat=False):
    n, d, h, w = x.shape
    k_ = assign.shape[1]
    y = loop_forward(x, assign, neg_c, repmat)
    a = torch.softmax(torch.einsum("ndhw,dk->nkhw", x, assign), dim=1)  # backward_ recomputes
    dzda = torch.empty_like(a)
    for k in range(k_):
        resid = x + neg_c[:, k].reshape(1, d, 1, 1)
        dzda[:, k] = (dzdy[:, :, 0, k].reshape(n, d, 1, 1) * resid).sum(1)
    dzdp = a * (dzda - (dzda * a).sum(1, keepdim=True))
    dzdx = torch.einsum("nkhw,dk->ndhw", dzdp, assign)
    dassign = torch.einsum("ndhw,nkhw->dk", x, dzdp)
    a_ = a.reshape(n, k_, h * w)
    for i in range(n):
        dzdx[i] += (dzdy[i, :, 0, :] @ a_[i]).reshape(d, h, w)
    dneg_c = (dzdy[:, :, 0, :] * a_.sum(2).unsqueeze(1)).sum(0)
    return y, dzdx, dassign, dneg_c


def loop_autograd(x, assign, neg_c, dzdy):
    """Per-cluster loop forward, backward by autograd."""
    x, assign, neg_c = (t.detach().requires_grad_(True) for t in (x, assign, neg_c))
    d = x.shape[1]
    a = torch.softmax(torch.einsum("ndhw,dk->nkhw", x, assign), dim=1)
    cols = [(a[:, k:k + 1] * (x + neg_c[:, k].reshape(1, d, 1, 1))).sum((2, 3))
            for k in range(assign.shape[1])]
    y = torch.stack(cols, 2).unsqueeze(2)
    y.backward(dzdy)
    return y, x.grad, assign.grad, neg_c.grad


def matmul_floor(a, repeats):
    """The six products of forward+backward, each timed alone at its shape (torch/MKL),
    plus the logits product as oneDNN's 1x1 convolution on channels_last input, the
    fastest form found on CPU.  Returns (sum of the six, 6 x the fastest one) in s."""
    g = torch.Generator().manual_seed(1)
    p = a.h * a.w
    x, w = torch.randn(a.n, a.d, p, generator=g), torch.randn(a.k, a.d, generator=g)
    asg, dv = torch.randn(a.n, a.k, p, generator=g), torch.randn(a.n, a.d, a.k, generator=g)
    x_cl = x.reshape(a.n, a.d, a.h, a.w).contiguous(memory_format=torch.channels_last)
    products = {"logits": lambda: torch.matmul(w, x),                  # K x D @ D x HW
                "aggregate": lambda: torch.bmm(x, asg.transpose(1, 2)),  # D x HW @ HW x K
                "dz/dassign": lambda: torch.bmm(dv.transpose(1, 2), x),  # K x D @ D x HW
                "dz/dx conv": lambda: torch.matmul(w.t(), asg),          # D x K @ K x HW
                "dz/dx aggregate": lambda: torch.bmm(dv, asg),           # D x K @ K x HW
                "dz/dw": lambda: torch.bmm(x, asg.transpose(1, 2)),      # D x HW @ HW x K
                "logits, oneDNN": lambda: torch.nn.functional.conv2d(x_cl, w.reshape(a.k, a.d, 1, 1))}
    t = best_times(products, repeats)
    return sum(v for k, v in t.items() if k != "logits, oneDNN"), 6 * min(t.values())


# ------------------------------------------------------------------ matnet
def fast_layer(assign, neg_c):
    from matnet.layers.vlad import layerVLAD
    return layerVLAD("vlad:core").constructor([assign.numpy(), (-neg_c).numpy()])


def fast_forward(layer, x):
    with torch.no_grad():
        return layer(x)


def fast_forward_backward(layer, x, dzdy):
    """Forward and backward of a layer or head; returns y, dz/dx and the weights' gradients."""
    layer.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    y = layer(x)
    y.backward(dzdy)
    return (y, x.grad) + tuple(p.grad for p in layer.parameters())


def fast_head(layer):
    """addLayers' 'vlad_preL2_intra' head around ``layer``, as the SimpleNN that
    trainWeakly and serialAllFeats run."""
    from matnet.layers.heads import layerWholeL2Normalize
    from matnet.layers.normalize import Normalize
    from matnet.simplenn import SimpleNN
    norm = [2 * layer.D, 1e-12, 1, 0.5]
    return SimpleNN([Normalize("preL2", norm), layer, Normalize("vlad:intranorm", norm),
                     layerWholeL2Normalize("postL2")])


class FormulaL2(torch.nn.Module):
    """The all-channel normalize as a formula, x (1e-12 + sum_c x_c^2)^-0.5 (autograd backward)."""

    def forward(self, x):
        return x * (1e-12 + (x * x).sum(1, keepdim=True)).pow(-0.5)


class FormulaWholeL2(torch.nn.Module):
    """layerWholeL2Normalize as a formula, x / (||x|| + 1e-12) (autograd backward)."""

    def forward(self, x):
        from matnet.layers.heads import matlab_flatten
        f = matlab_flatten(x)
        return (f / (f.norm(dim=1, keepdim=True) + 1e-12)).reshape(x.shape[0], -1, 1, 1)


def formula_head(layer):
    return torch.nn.Sequential(FormulaL2(), layer, FormulaL2(), FormulaWholeL2())


def variants(a):
    torch.set_num_threads(a.threads)
    x, assign, neg_c, dzdy = make_inputs(a)
    layer = fast_layer(assign, neg_c)
    x_cl = x.contiguous(memory_format=torch.channels_last)  # what trainWeakly feeds the head
    raw, dzdv = make_head_inputs(a)
    raw_cl = raw.contiguous(memory_format=torch.channels_last)
    head, plain = fast_head(layer), formula_head(layer)
    return {"repmat_fwd": lambda: loop_forward(x, assign, neg_c, repmat=True),
            "loop_fwd": lambda: loop_forward(x, assign, neg_c),
            "fast_fwd": lambda: fast_forward(layer, x),
            "fastcl_fwd": lambda: fast_forward(layer, x_cl),
            "repmat_fwdbwd": lambda: loop_forward_backward(x, assign, neg_c, dzdy, repmat=True),
            "loop_fwdbwd": lambda: loop_forward_backward(x, assign, neg_c, dzdy),
            "autograd_fwdbwd": lambda: loop_autograd(x, assign, neg_c, dzdy),
            "fast_fwdbwd": lambda: fast_forward_backward(layer, x, dzdy),
            "fastcl_fwdbwd": lambda: fast_forward_backward(layer, x_cl, dzdy),
            "head_fwd": lambda: fast_forward(head, raw),
            "headcl_fwd": lambda: fast_forward(head, raw_cl),
            "formulacl_fwd": lambda: fast_forward(plain, raw_cl),
            "head_fwdbwd": lambda: fast_forward_backward(head, raw, dzdv),
            "headcl_fwdbwd": lambda: fast_forward_backward(head, raw_cl, dzdv),
            "formulacl_fwdbwd": lambda: fast_forward_backward(plain, raw_cl, dzdv)}


def best_times(fns, repeats):
    """Best wall time of each function after a warm-up run; the functions are
    interleaved round by round so that a change of load hits all of them alike."""
    for f in fns.values():
        f()  # warm-up
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, f in fns.items():
            t = time.perf_counter()
            f()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def rss_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def measure(a, variant):
    """Run ``variant`` in this (fresh) process: the peak RSS of its first run (VmHWM,
    reset through /proc/self/clear_refs after trimming the heap) above the RSS before
    it, in MB, and its best time over ``a.repeats`` further runs, in s."""
    fn = variants(a)[variant]
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark to the current RSS
    base = rss_kb("VmRSS")
    fn()
    peak = (rss_kb("VmHWM") - base) / 1024
    return {"peak_mb": peak, "sec": best_times({variant: fn}, a.repeats)[variant]}


def check_equal(a):
    """The implementations agree (forward and every gradient) before timing."""
    x, assign, neg_c, dzdy = make_inputs(a)
    x, assign, neg_c, dzdy = (t.double() for t in (x, assign, neg_c, dzdy))
    layer = fast_layer(assign, neg_c).double()
    refs = (loop_forward_backward(x, assign, neg_c, dzdy), loop_autograd(x, assign, neg_c, dzdy))
    for ref, got in itertools.product(refs, (fast_forward_backward(layer, x, dzdy), fast_forward_backward(
            layer, x.contiguous(memory_format=torch.channels_last), dzdy))):
        for name, r, g in zip(["y", "dzdx", "dassign", "dcentres"], ref, got):
            err = (r - g.reshape(r.shape)).abs().max().item() / max(r.abs().max().item(), 1e-30)
            if err > 1e-9:
                raise SystemExit(f"mismatch in {name}: relative error {err:.2e}")
    raw, dzdv = (t.double() for t in make_head_inputs(a))
    ref = fast_forward_backward(formula_head(layer), raw, dzdv)
    for x_in in (raw, raw.contiguous(memory_format=torch.channels_last)):
        got = fast_forward_backward(fast_head(layer), x_in, dzdv)
        for name, r, g in zip(["head y", "head dzdx", "head dassign", "head dcentres"], ref, got):
            err = (r - g.reshape(r.shape)).abs().max().item() / max(r.abs().max().item(), 1e-30)
            if err > 1e-9:
                raise SystemExit(f"mismatch in {name}: relative error {err:.2e}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, help="timed runs per process (default 5; 10 with --head-only)")
    for dim, v in (("n", 12), ("d", 512), ("h", 30), ("w", 40), ("k", 64)):
        p.add_argument(f"--{dim}", type=int, default=v)
    p.add_argument("--head-only", action="store_true",
                   help="time only matnet's layer and heads (not the loops nor the matmul floor)")
    p.add_argument("--rounds", type=int, default=5,
                   help="processes per variant, started in turns, best time kept (default 5)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--pair", help=argparse.SUPPRESS)
    a = p.parse_args()
    a.repeats = a.repeats or (10 if a.head_only else 5)
    if a.child:
        return print(json.dumps(measure(a, a.child)))
    if a.pair:
        fns = variants(a)
        return print(json.dumps(best_times({v: fns[v] for v in a.pair.split(",")}, a.repeats)))
    small = argparse.Namespace(**{**vars(a), "n": 2, "d": 32, "h": 5, "w": 7, "k": 8})
    check_equal(small)
    input_mb = a.n * a.d * a.h * a.w * 4 / 2 ** 20
    print(f"VLAD head, input {a.n}x{a.d}x{a.h}x{a.w} float32 ({input_mb:.1f} MB), K={a.k}, "
          f"{a.threads} threads, best of {a.repeats} runs x {a.rounds} processes")
    floor = None if a.head_only else matmul_floor(a, a.repeats)  # (MKL sum, 6 x fastest)
    # each variant in its own process: the loops' gigabytes of freed temporaries would
    # otherwise change the page faults, and so the times, of whatever runs after them
    # --rounds > 1: the processes are started round after round and each variant keeps its
    # best time, so that a change of the machine's load does not favour one variant
    # the head against the layer alone is also timed in pairs, both in one process, their
    # runs interleaved: the ratio of a pair sees the same machine state, which varies by up
    # to 1.5x between processes on a shared VM
    # matnet's variants first, all their rounds, then the loops': whatever the loops'
    # gigabytes leave behind cannot then fall on some of matnet's variants and not others
    sec, mem, paired = {}, {}, {}
    is_loop = {v: v.split("_")[0] in ("repmat", "loop", "autograd") for v in variants(a)}
    for loops_now in (False, True):
        if loops_now and a.head_only:
            break
        for _ in range(a.rounds):
            for v in (v for v in is_loop if is_loop[v] == loops_now):
                r = json.loads(child(["--child", v]))
                sec[v], mem[v] = min(sec.get(v, r["sec"]), r["sec"]), r["peak_mb"]
            for head, core, _ in ([] if loops_now else HEADS):
                for what in ("fwd", "fwdbwd"):
                    r = json.loads(child(["--pair", f"{head}_{what},{core}_{what}"]))
                    paired.setdefault(f"{head}_{what}", []).append(r[f"{head}_{what}"] / r[f"{core}_{what}"])
    loops = (("repmat", "loop, MATLAB repmat"), ("loop", "loop, broadcast"), ("autograd", "loop, autograd"))
    ours = (("fast", "matnet, NCHW"), ("fastcl", "matnet, channels_last"))
    for what in ("fwd", "fwdbwd"):
        print("forward" if what == "fwd" else "forward+backward")
        for v, label in loops + ours:
            if f"{v}_{what}" not in sec:
                continue
            t, m = sec[f"{v}_{what}"], mem[f"{v}_{what}"]
            ratio = "" if v in dict(loops) or a.head_only else "faster than the loops: " + ", ".join(
                f"{sec[f'{lv}_{what}'] / t:.1f}x" for lv, _ in loops if f"{lv}_{what}" in sec)
            print(f"  {label:22s} {t * 1e3:8.1f} ms  peak extra {m:6.1f} MB "
                  f"({m / input_mb:4.1f}x input)  {ratio}")
    if floor is not None:
        print_floor(a, sec, floor, loops)
    print("full head preL2 -> layerVLAD -> intra -> postL2, on unnormalised features "
          "(targets: forward <= 1.3x, forward+backward <= 1.5x layerVLAD alone)")
    print("  (each in its own processes: best times; paired: median ratio and range over "
          f"{a.rounds} processes timing the head and layerVLAD alone together)")
    for what in ("fwd", "fwdbwd"):
        for v, core, label in HEADS:
            t, m = sec[f"{v}_{what}"], mem[f"{v}_{what}"]
            r = sorted(paired[f"{v}_{what}"])
            print(f"  {'forward' if what == 'fwd' else 'fwd+bwd':8s} {label:32s} {t * 1e3:7.1f} ms  "
                  f"peak extra {m:6.1f} MB  = {t / sec[f'{core}_{what}']:.2f}x layerVLAD alone; "
                  f"paired {statistics.median(r):.2f}x ({r[0]:.2f}-{r[-1]:.2f}x)")


HEADS = (("head", "fast", "matnet, NCHW"), ("headcl", "fastcl", "matnet, channels_last"),
         ("formulacl", "fastcl", "autograd formula, channels_last"))


def child(args) -> str:
    """The output of this script run with ``args`` and this run's options, in a new process."""
    return subprocess.run([sys.executable, __file__] + args + sys.argv[1:], check=True,
                          capture_output=True, text=True).stdout


def print_floor(a, sec, floor, loops):
    gflop = 6 * 2 * a.n * a.d * a.h * a.w * a.k / 1e9
    mkl, floor = floor
    fast = min(sec["fast_fwdbwd"], sec["fastcl_fwdbwd"])
    print(f"matmul floor of forward+backward: 6 products, {gflop:.2f} GFLOP")
    print(f"  each alone (torch/MKL), summed {mkl * 1e3:6.1f} ms ({gflop / mkl:.0f} GFLOP/s); "
          f"matnet's faster layout takes {fast / mkl:.2f}x that")
    print(f"  6 x the fastest product        {floor * 1e3:6.1f} ms ({gflop / floor:.0f} GFLOP/s); "
          f"matnet's faster layout takes {fast / floor:.2f}x that")
    print("  ratio bound for any exact implementation here (loop / fastest floor): " + ", ".join(
        f"{label} {sec[f'{v}_fwdbwd'] / floor:.1f}x" for v, label in loops))


if __name__ == "__main__":
    main()
