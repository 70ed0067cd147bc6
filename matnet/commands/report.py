"""``matnet report RUN_A.json RUN_B.json [--out DIR]``: compare two evaluations of the
same queries (not in MATLAB).

RUN_A/RUN_B are JSON records of ``matnet evaluate --save-predictions N`` (they name their
predictions CSV).  Prints and writes, for N = 1, 5, 10: the recall of each run, the queries
B fixed (A wrong, B right) and broke (A right, B wrong), and McNemar's exact test p-value
at N = 1; writes <out>/<A>_vs_<B>_comparison.json and an HTML page with both runs per query,
filterable by fixed / broken.  Runs on different query lists are refused.
"""
from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("runs", nargs=2, metavar="RUN.json", help="two JSON records of matnet evaluate (A, then B)")
    p.add_argument("--out", default=".", metavar="DIR", help="folder for the comparison JSON and HTML (default: .)")
    p.add_argument("--dims", type=int, metavar="D", help="the dimensionality to compare when the records hold several")


def run(args) -> int:
    from ..run_comparison import compare_runs
    compare_runs(args.runs[0], args.runs[1], args.out, dims=args.dims)
    return 0
