"""Published NetVLAD recall figures as data (``published.csv``), with their sources.

One row per (network, dims, test set, N).  ``authors_pipeline`` says whether the
source ran the authors' MATLAB code on the released network; only rows with
``regression_target`` are checked by ``pytest -m reference``.  Add a source by
adding rows; never invent a figure.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class Published:
    network: str
    dims: int | None
    test_set: str
    n: int
    recall: float          # percent of all queries
    count: int | None      # queries correct at N, where the source allows deriving it
    num_queries: int
    source: str
    figures: str           # verbatim / derived / quoted
    authors_pipeline: str  # yes / no / unknown
    regression_target: bool
    note: str


def published(network: str | None = None, test_set: str | None = None, dims: int | None = None,
              targets_only: bool = False) -> list[Published]:
    """The published rows, optionally filtered."""
    with resources.files(__package__).joinpath("published.csv").open(newline="") as f:
        rows = [Published(network=r["network"], dims=int(r["dims"]) if r["dims"] else None,
                          test_set=r["test_set"], n=int(r["n"]), recall=float(r["recall"]),
                          count=int(r["count"]) if r["count"] else None, num_queries=int(r["num_queries"]),
                          source=r["source"], figures=r["figures"], authors_pipeline=r["authors_pipeline"],
                          regression_target=r["regression_target"] == "yes", note=r["note"])
                for r in csv.DictReader(f)]
    return [r for r in rows
            if (network is None or r.network == network) and (test_set is None or r.test_set == test_set)
            and (dims is None or r.dims == dims) and (not targets_only or r.regression_target)]
