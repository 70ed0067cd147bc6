"""The GPU suite's record: guarded, timed steps; figures with their unit, device, batch
size and precision; checks; targets; the ratio of a throughput to the device's peak; the
JSON record and the Markdown table."""
from __future__ import annotations

import json
import math
import re
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from converters.atomic_file import write_text


# dense (no sparsity) peak TFLOPS: (pattern on torch.cuda.get_device_name, name, FP32, BF16)
PEAK_TFLOPS = (
    (r"H200", "H200", 67.0, 989.4),
    (r"H100.*NVL", "H100 NVL", 60.0, 835.0),
    (r"H100.*PCIe", "H100 PCIe", 51.2, 756.0),
    (r"H100", "H100 SXM", 66.9, 989.4),
    (r"A100", "A100", 19.5, 312.0),
    (r"\bL4\b", "L4", 30.3, 121.0),
    (r"\bT4\b", "T4", 8.1, None),  # Turing: no bf16 tensor cores
)


def device_peak(name: str) -> dict:
    """{'model', 'fp32_tflops', 'bf16_tflops'} of a known GPU by its name, else 'unknown'
    (None values): the CPU, or a GPU missing from :data:`PEAK_TFLOPS`."""
    for pattern, model, fp32, bf16 in PEAK_TFLOPS:
        if re.search(pattern, name or ""):
            return {"model": model, "fp32_tflops": fp32, "bf16_tflops": bf16}
    return {"model": "unknown", "fp32_tflops": None, "bf16_tflops": None}


def finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class Record:
    """Everything the suite measures, in the order measured.

    ``step(name)`` times a block and turns an exception into a failed step (its message
    and the traceback's tail) so the next step runs; ``figure`` adds a measured number,
    ``check`` a pass/fail comparison with a limit, ``target`` a goal of the report (not
    a test), ``profile`` a torch.profiler summary."""

    def __init__(self, device: str, device_name: str, size: str):
        self.device, self.device_name, self.size = device, device_name, size
        self.peak = device_peak(device_name) if device == "cuda" else device_peak("")
        self.steps, self.figures, self.checks, self.targets, self.profiles = [], [], [], [], []
        self.environment: dict = {}
        self._step = None

    # ----- steps
    @contextmanager
    def step(self, name: str):
        entry = {"name": name, "ok": True, "seconds": None, "error": None}
        self.steps.append(entry)
        self._step = name
        t0 = time.perf_counter()
        try:
            yield entry
        except Exception as e:  # reported; the next step runs
            entry["ok"] = False
            entry["error"] = f"{type(e).__name__}: {e}"
            entry["traceback"] = "".join(traceback.format_exception(e))[-3000:]
        finally:
            entry["seconds"] = round(time.perf_counter() - t0, 3)
            self._step = None

    # ----- entries
    def figure(self, id: str, name: str, value, unit: str, batch_size=None, precision=None,
               flops_per_unit: float | None = None, note: str | None = None) -> dict:
        """A measured number; with ``flops_per_unit`` (FLOPs per image, tuple or query) the
        achieved TFLOPS and their ratio to the device's FP32 (precision 'exact' or None) or
        BF16 ('fast') peak."""
        f = {"id": id, "step": self._step, "name": name, "value": _num(value), "unit": unit,
             "device": self.device_name, "batch_size": batch_size, "precision": precision}
        if flops_per_unit is not None and finite(value):
            tflops = value * flops_per_unit / 1e12
            peak = self.peak["bf16_tflops" if precision == "fast" else "fp32_tflops"]
            f["tflops"] = _num(tflops)
            f["peak_tflops"] = peak
            f["peak_ratio"] = _num(tflops / peak) if peak else "unknown"
        if note:
            f["note"] = note
        self.figures.append(f)
        return f

    def check(self, id: str, name: str, value, limit, passed, unit: str = "", precision=None,
              batch_size=None, note: str | None = None) -> dict:
        """A pass/fail comparison; ``passed`` None = not applicable here ('n/a')."""
        c = {"id": id, "step": self._step, "name": name, "value": _num(value), "limit": limit, "unit": unit,
             "status": "n/a" if passed is None else "pass" if passed else "FAIL",
             "device": self.device_name, "batch_size": batch_size, "precision": precision}
        if note:
            c["note"] = note
        self.checks.append(c)
        return c

    def target(self, id: str, goal: str, value, unit: str, met, note: str = "") -> dict:
        t = {"id": id, "goal": goal, "value": _num(value), "unit": unit,
             "status": "unmeasured" if met is None else "met" if met else "missed", "note": note}
        self.targets.append(t)
        return t

    def get(self, id: str):
        """The value of a figure or check (None if absent)."""
        for e in self.figures + self.checks:
            if e["id"] == id:
                return e["value"]
        return None

    # ----- output
    def to_json(self) -> dict:
        return {"suite": "matnet selftest --gpu", "size": self.size, "device": self.device,
                "device_name": self.device_name, "peak": self.peak, "environment": self.environment,
                "steps": self.steps, "figures": self.figures, "checks": self.checks, "targets": self.targets,
                "profiles": self.profiles, "ok": self.ok}

    @property
    def ok(self) -> bool:
        return all(s["ok"] for s in self.steps) and all(c["status"] != "FAIL" for c in self.checks)

    def write(self, out: Path) -> tuple[Path, Path]:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        js, md = out / "gpu_report.json", out / "gpu_report.md"
        write_text(js, json.dumps(self.to_json(), indent=1))
        write_text(md, self.markdown())
        return js, md

    def markdown(self) -> str:
        env = self.environment
        lines = [f"# matnet GPU suite ({self.size} size) on {self.device_name}", ""]
        lines += [f"- {k}: {v}" for k, v in env.items()]
        lines += [f"- peak (dense): {self.peak['model']}, FP32 {self.peak['fp32_tflops'] or 'unknown'} TFLOPS, "
                  f"BF16 {self.peak['bf16_tflops'] or 'unknown'} TFLOPS", ""]
        lines += ["## Steps", "", "| step | seconds | result |", "|---|---:|---|"]
        for s in self.steps:
            lines.append(f"| {s['name']} | {s['seconds']:.1f} | {'ok' if s['ok'] else 'FAILED: ' + _cell(s['error'])} |")
        lines += ["", "## Checks", "", "| check | value | limit | status | precision |", "|---|---:|---|---|---|"]
        for c in self.checks:
            lines.append(f"| {_cell(c['name'])} | {_fmt(c['value'])} {c['unit']} | {_cell(str(c['limit']))} | "
                         f"{c['status']} | {c['precision'] or ''} |")
        lines += ["", "## Figures", "", "| figure | value | unit | batch | precision | TFLOPS | of peak |",
                  "|---|---:|---|---:|---|---:|---:|"]
        for f in self.figures:
            ratio = f.get("peak_ratio")
            ratio = f"{100 * ratio:.1f}%" if finite(ratio) else (ratio or "")
            lines.append(f"| {_cell(f['name'])} | {_fmt(f['value'])} | {f['unit']} | {f['batch_size'] or ''} | "
                         f"{f['precision'] or ''} | {_fmt(f.get('tflops')) if 'tflops' in f else ''} | {ratio} |")
        lines += ["", "## Targets (one H100, full size)", "", "| goal | value | status | note |", "|---|---:|---|---|"]
        for t in self.targets:
            lines.append(f"| {_cell(t['goal'])} | {_fmt(t['value'])} {t['unit']} | {t['status']} | {_cell(t['note'])} |")
        for p in self.profiles:
            lines += ["", f"## Profile: {p['what']}", "", "```", p["table"], "```"]
        return "\n".join(lines) + "\n"


def _num(v):
    if v is None or isinstance(v, (bool, str)):
        return v
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    return v if math.isfinite(v) else str(v)


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        a = abs(v)
        return f"{v:.3g}" if a and (a < 1e-2 or a >= 1e5) else f"{v:.4g}" if a < 100 else f"{v:.1f}"
    return str(v)


def _cell(s) -> str:
    return str(s).replace("|", "/").replace("\n", " ")
