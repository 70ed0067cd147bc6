"""Two evaluations of the same queries side by side: which queries run B fixed or broke
(``matnet report RUN_A.json RUN_B.json``; not in MATLAB).

Each run is the JSON record ``matnet evaluate --save-predictions N`` wrote; it names
its predictions CSV (:mod:`matnet.predictions`), from which, for N = 1, 5, 10 (those
not above the saved N): a query is *fixed* by B when A has no correct result in its
top-N and B has one, *broken* the other way round; recall of each run at N is the
share of queries with a correct result in the top-N (recallAtN's hit, so it equals the
record's recall when every query was tested).  McNemar's exact test at N = 1: the
two-sided binomial test of the fixed count among the discordant (fixed + broken)
queries at p = 1/2 (``scipy.stats.binomtest``; p = 1 with no discordant query).

Runs on different query lists (other dataset, split or sample) are refused with both
datasets named.  Writes ``<out>/<stemA>_vs_<stemB>_comparison.json`` (counts, query
ids, p-value) and ``..._comparison.html`` (both runs per query, A's top-N above B's,
filterable by fixed / broken).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from converters.atomic_file import atomic_write

from .html_report import recall_svg, recall_table, relative_url, report_data, summary_html, write_page
from .panels import panel_name
from .predictions import read_predictions_csv

COMPARE_NS = (1, 5, 10)


def run_stem(jsonFn) -> str:
    """The result stem of a record ``<stem>_recall.json``."""
    name = Path(jsonFn).name
    return name[:-len("_recall.json")] if name.endswith("_recall.json") else Path(jsonFn).stem


def load_run(jsonFn, dims: int | None = None):
    """(record, result, predictions, panels folder or None) of a ``matnet evaluate``
    record; ``dims`` picks the result when the record holds several.  ValueError naming
    the file when it has no predictions CSV."""
    jsonFn = Path(jsonFn)
    try:
        record = json.loads(jsonFn.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{jsonFn}: not a readable JSON record of matnet evaluate ({e})") from None
    results = [r for r in record.get("results", []) if "predictions_csv" in r]
    if dims is not None:
        results = [r for r in results if int(r.get("dims", -1)) == int(dims)]
    if not results:
        raise ValueError(f"{jsonFn}: names no predictions CSV" + (f" for {dims} dimensions" if dims else "")
                         + " (run matnet evaluate with --save-predictions N)")
    if len(results) > 1:
        raise ValueError(f"{jsonFn}: predictions for {len(results)} dimensionalities "
                         f"({', '.join(str(r['dims']) for r in results)}); choose one with --dims")
    res = results[0]
    csvFn = jsonFn.parent / res["predictions_csv"]
    if not csvFn.is_file():
        raise ValueError(f"{jsonFn}: its predictions CSV {csvFn} is missing")
    pred = read_predictions_csv(csvFn, res.get("predictions_root", ""))
    panels = jsonFn.parent / res["predictions_panels"] if res.get("predictions_panels") else None
    return record, res, pred, panels


def compare_predictions(predA, predB) -> dict:
    """Per N in 1, 5, 10 (up to the smaller saved N): recall of A and B, the fixed and
    broken query ids; McNemar's exact p-value at N = 1."""
    nMax = min(predA.n, predB.n)
    out = {"queries": int(predA.queries.size), "by_n": {}}
    for n in (n for n in COMPARE_NS if n <= nMax):
        a, b = predA.correct_at(n), predB.correct_at(n)
        out["by_n"][n] = {"recall_a": float(a.mean()), "recall_b": float(b.mean()),
                          "fixed": predA.queries[~a & b].tolist(), "broken": predA.queries[a & ~b].tolist()}
    one = out["by_n"][1]
    k, m = len(one["fixed"]), len(one["fixed"]) + len(one["broken"])
    out["mcnemar"] = {"n": 1, "fixed": k, "broken": m - k,
                      "p_value": float(binomtest(k, m, 0.5).pvalue) if m else 1.0}
    return out


def check_same_queries(jsonA, recA, predA, jsonB, recB, predB) -> None:
    sameIds = np.array_equal(predA.queries, predB.queries)
    if not sameIds or list(predA.query_names) != list(predB.query_names):
        raise ValueError(f"{jsonA} (dataset {recA.get('dataset')}, {predA.queries.size} queries) and {jsonB} "
                         f"(dataset {recB.get('dataset')}, {predB.queries.size} queries) were evaluated on "
                         f"different query lists: nothing to compare query by query")


def summary_lines(cmp: dict, labelA: str, labelB: str) -> list[str]:
    lines = [f"{cmp['queries']} queries; A = {labelA}, B = {labelB}",
             f"{'N':>4} {'recall A %':>11} {'recall B %':>11} {'fixed by B':>11} {'broken by B':>12}"]
    for n, r in cmp["by_n"].items():
        lines.append(f"{n:>4} {100 * r['recall_a']:11.2f} {100 * r['recall_b']:11.2f} {len(r['fixed']):11d} "
                     f"{len(r['broken']):12d}")
    mc = cmp["mcnemar"]
    lines.append(f"McNemar's exact test at N = 1: {mc['fixed']} fixed vs {mc['broken']} broken, "
                 f"p = {mc['p_value']:.4g}")
    return lines


def compare_runs(jsonA, jsonB, outDir=".", dims: int | None = None, log=print, name: str | None = None) -> dict:
    """Compare two records (see the module docstring); returns the comparison dict
    written to ``<out>/<stemA>_vs_<stemB>_comparison.json`` (``<out>/<name>.json`` and
    ``.html`` when ``name`` is given)."""
    recA, resA, predA, panA = load_run(jsonA, dims)
    recB, resB, predB, panB = load_run(jsonB, dims)
    check_same_queries(jsonA, recA, predA, jsonB, recB, predB)
    stemA, stemB = run_stem(jsonA), run_stem(jsonB)
    if stemA == stemB:
        stemA, stemB = f"{Path(jsonA).parent.name}-{stemA}", f"{Path(jsonB).parent.name}-{stemB}"
    cmp = compare_predictions(predA, predB)
    labelA, labelB = f"A: {stemA}", f"B: {stemB}"
    for line in summary_lines(cmp, stemA, stemB):
        log(line)
    if recA.get("protocol") != recB.get("protocol"):
        log(f"note: the runs use different protocols ({recA.get('protocol')} vs {recB.get('protocol')})")
    outDir = Path(outDir)
    outDir.mkdir(parents=True, exist_ok=True)
    base = outDir / (name or f"{stemA}_vs_{stemB}_comparison")
    record = {"a": {"record": str(jsonA), "dataset": recA.get("dataset"), "network": recA.get("network"),
                    "protocol": recA.get("protocol")},
              "b": {"record": str(jsonB), "dataset": recB.get("dataset"), "network": recB.get("network"),
                    "protocol": recB.get("protocol")},
              **{k: v for k, v in cmp.items() if k != "by_n"},
              "by_n": {str(n): v for n, v in cmp["by_n"].items()}}
    with atomic_write(Path(f"{base}.json"), "w") as f:
        json.dump(record, f, indent=1)
    write_comparison_page(Path(f"{base}.html"), cmp, (recA, resA, predA, panA, labelA),
                          (recB, resB, predB, panB, labelB))
    log(f"wrote {base}.json and {base}.html")
    return record


def write_comparison_page(path: Path, cmp: dict, runA, runB) -> Path:
    (recA, resA, predA, panA, labelA), (recB, resB, predB, panB, labelB) = runA, runB
    q = predA.queries
    filters = [{"key": "all", "label": "all"}]
    tags = [[] for _ in range(q.size)]
    row = {int(x): i for i, x in enumerate(q)}
    for n, r in cmp["by_n"].items():
        for what in ("fixed", "broken"):
            filters.append({"key": f"{what}{n}", "label": f"{what} at {n}"})
            for x in r[what]:
                tags[row[x]].append(f"{what}{n}")
    both = ~predA.correct_at(1) & ~predB.correct_at(1)
    filters.append({"key": "bothwrong1", "label": "both wrong at 1"})
    for i in np.flatnonzero(both):
        tags[i].append("bothwrong1")
    sorts = [{"key": "id", "label": "query id"}, {"key": "first0", "label": "rank of first correct (A)"},
             {"key": "first1", "label": "rank of first correct (B)"}]
    urls = [relative_url(p, path.parent) + "/" if p is not None else None for p in (panA, panB)]
    files = []
    for pred, p in ((predA, panA), (predB, panB)):  # panels that exist (all, or --only-wrong ones)
        files.append({r: panel_name(x, pred.query_names[r]) for r, x in enumerate(pred.queries)
                      if p is not None and (p / panel_name(x, pred.query_names[r])).is_file()})
    data = report_data([predA, predB], [labelA, labelB], urls, files, filters, [" ".join(t) for t in tags], sorts)
    ns = recA.get("recallNs", [])
    mc = cmp["mcnemar"]
    info = {"A": f"{recA.get('network')} on {recA.get('dataset')} ({recA.get('protocol')} protocol)",
            "B": f"{recB.get('network')} on {recB.get('dataset')} ({recB.get('protocol')} protocol)",
            "queries": cmp["queries"],
            "McNemar (N = 1)": f"{mc['fixed']} fixed, {mc['broken']} broken, exact p = {mc['p_value']:.4g}"}
    changes = "".join(f"<tr><td>{n}</td><td>{100 * r['recall_a']:.2f}</td><td>{100 * r['recall_b']:.2f}</td>"
                      f"<td id='fixed-{n}'>{len(r['fixed'])}</td><td id='broken-{n}'>{len(r['broken'])}</td></tr>"
                      for n, r in cmp["by_n"].items())
    header = ('<div class="top">' + summary_html(info)
              + recall_svg([(labelA, ns, resA["recall"]), (labelB, recB.get("recallNs", []), resB["recall"])])
              + "</div>"
              + recall_table(ns, [(labelA, resA["recall"]), (labelB, resB["recall"])])
              + "<table id='changes' class='changes'><tr><th>N</th><th>recall A %</th><th>recall B %</th>"
              f"<th>fixed by B</th><th>broken by B</th></tr>{changes}</table>")
    return write_page(path, f"{labelA} vs {labelB}", header, data)
