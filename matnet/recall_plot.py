"""recall@N curves written as a PNG, on the one recall scale every matnet plot uses
(percent, 0 to 100), so plots of different runs and splits compare by eye."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

RECALL_LIMITS = (0.0, 100.0)
RECALL_LABEL = "recall@N (%)"


def set_recall_axis(ax) -> None:
    """The shared recall scale: 0-100 % on the y axis."""
    ax.set_ylim(*RECALL_LIMITS)
    ax.set_ylabel(RECALL_LABEL)


def plot_recall_at_n(path, curves: dict, title: str):
    """Write recall@N curves to ``path`` (PNG, atomically: temp name, then rename).
    ``curves``: label -> (Ns, recall as fractions 0-1, MATLAB's testFromFn output);
    a label starting with 'published' is drawn dashed with markers.  Returns the figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, (ns, recall) in curves.items():
        ref = label.startswith("published")
        ax.plot(np.asarray(ns).reshape(-1), 100 * np.asarray(recall, np.float64).reshape(-1),
                marker="o" if ref else "x", linestyle="--" if ref else "-", label=label)
    ax.set_xlabel("N (number of top database candidates)")
    set_recall_axis(ax)
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=80, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return fig
