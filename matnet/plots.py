"""The PNG plots: plotResults (plotResults.m: a trainWeakly run's training curves) and
recall@N curves (not in MATLAB: evaluate, demo, pickBestNet), on the one recall scale
every matnet plot uses (percent, 0 to 100), so plots of different runs and splits compare
by eye."""
from __future__ import annotations

import numpy as np

from converters.atomic_file import atomic_path

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
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=80, bbox_inches="tight")
    finally:
        plt.close(fig)
    return fig



def _smooth(x: np.ndarray, w: int) -> np.ndarray:
    """MATLAB smooth(x, w): centred moving average (window shrunk at the ends)."""
    w = max(1, w if w % 2 else w - 1)  # an even span is reduced by 1, as smooth does
    h = w // 2
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(x.size)
    half = np.minimum(np.minimum(i, x.size - 1 - i), h)
    return (c[i + half + 1] - c[i - half]) / (2 * half + 1)


def _plot_epochs(fig, obj: dict, opts, tRank: np.ndarray) -> None:
    """plotResults' per-epoch panels: train/val rank loss and recall@{1,2,5,10,30}, from the
    off-the-shelf values in ``obj['pretrain']`` when present."""
    epochs = np.arange(1, tRank.size + 1) * opts.epochTestFrequency
    vRank = np.asarray(obj["val"]["rankloss"], np.float64).reshape(-1)
    tRec = np.asarray(obj["train"]["recall"], np.float64)
    vRec = np.asarray(obj["val"]["recall"], np.float64)
    pre = obj.get("pretrain")
    if pre is not None:
        epochs = np.concatenate([[0], epochs])
        tRank = np.concatenate([[float(np.asarray(pre["train"]["rankloss"]).reshape(-1)[-1])], tRank])
        vRank = np.concatenate([[float(np.asarray(pre["val"]["rankloss"]).reshape(-1)[-1])], vRank])
        tRec = np.hstack([np.asarray(pre["train"]["recall"], np.float64).reshape(-1, 1), tRec])
        vRec = np.hstack([np.asarray(pre["val"]["recall"], np.float64).reshape(-1, 1), vRec])
    ax = fig.add_subplot(2, 2, 3)
    ax.semilogy(epochs, np.maximum(tRank, 1e-12), "rx--", label="train.Q")
    ax.semilogy(epochs, np.maximum(vRank, 1e-12), "rx-", label="val.Q")
    ax.legend(loc="upper center", ncol=2)
    ax.grid(True)
    ax.set_title("loss")
    ax.set_xlabel("epoch")
    ax = fig.add_subplot(1, 2, 2)
    ns = list(np.asarray(opts.recallNs).reshape(-1))
    for col, n in zip("rgbmc", (1, 2, 5, 10, 30)):
        if n in ns:
            i = ns.index(n)
            ax.plot(epochs, 100 * tRec[i], col + "o--", label=f"t.{n}")
            ax.plot(epochs, 100 * vRec[i], col + "x-", label=f"v.{n}")
    ax.grid(True)
    set_recall_axis(ax)
    ax.set_title("recall")
    ax.set_xlabel("epoch")
    ax.legend(loc="lower right", fontsize="small")


def plotResults(obj: dict, opts, auxData: dict | None = None, outFn=None, w: int | None = None):
    """plotResults.m: the (smoothed) per-batch training loss against epochs, the train
    and val rank loss per epoch, and recall@{1,2,5,10,30} per epoch (train dashed,
    val solid), starting from the off-the-shelf values in ``obj['pretrain']``.
    Written to ``outFn`` (PNG) when given; returns the matplotlib figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = np.asarray(obj["train"]["loss"], np.float64).reshape(-1)
    w = min(int(np.ceil(0.05 * loss.size)), 5000) if w is None else w
    numTrain = (auxData or {}).get("numTrain", 1)
    fig = plt.figure(figsize=(11, 7))
    tRank = np.asarray(obj["train"]["rankloss"], np.float64).reshape(-1)
    ax = fig.add_subplot(2, 2, 1) if tRank.size else fig.add_subplot(1, 1, 1)
    if loss.size > w:
        s = _smooth(loss, w)
        s[: min(round(w / 2), s.size)] = np.nan
        s[max(0, s.size - 1 - round(w / 2)):] = np.nan
        ax.semilogy(np.arange(1, s.size + 1) * opts.batchSize / numTrain, s, "b-")
        ax.set_title("train dynamic loss (smoothed)")
    elif loss.size:
        ax.semilogy(np.arange(1, loss.size + 1), np.maximum(loss, 1e-12), "r-")
        ax.set_title("train dynamic loss")
    ax.grid(True)
    ax.set_xlabel("epoch")
    if tRank.size:
        _plot_epochs(fig, obj, opts, tRank)
    fig.tight_layout()
    try:
        if outFn is not None:
            with atomic_path(outFn) as tmp:
                fig.savefig(tmp, format="png", dpi=80)
    finally:
        plt.close(fig)
    return fig
