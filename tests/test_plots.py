import numpy as np
from PIL import Image

from converters.atomic_file import GLOB as TEMPORARIES
from matnet.plots import _smooth, plotResults
from matnet.train.opts import TrainWeaklyOpts


def test_smooth_is_matlabs_centred_moving_average():
    x = np.random.default_rng(0).random(23)
    for w in (1, 3, 5, 6):
        span = w if w % 2 else w - 1  # MATLAB: an even span is reduced by 1
        ref = []
        for i in range(x.size):
            h = min(i, x.size - 1 - i, span // 2)  # MATLAB shrinks the window at the ends
            ref.append(x[i - h:i + h + 1].mean())
        np.testing.assert_allclose(_smooth(x, w), ref, rtol=1e-12)


def test_plot_results_png(tmp_path):
    opts = TrainWeaklyOpts(recallNs=[1, 2, 5, 10, 30], batchSize=4)
    obj = {"train": {"loss": np.abs(np.random.default_rng(1).normal(size=(1, 200))) + 0.01,
                     "recall": np.zeros((5, 0)), "rankloss": np.zeros((1, 0))},
           "val": {"recall": np.zeros((5, 0)), "rankloss": np.zeros((1, 0))}}
    plotResults(obj, opts, {"numTrain": 40}, outFn=tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").size[0] > 100
    r = np.linspace(0.2, 0.9, 5)[:, None] * np.array([[0.8, 0.9, 1.0]])
    obj["train"].update(recall=r, rankloss=np.array([[0.3, 0.2, 0.1]]))
    obj["val"].update(recall=r * 0.9, rankloss=np.array([[0.35, 0.25, 0.2]]))
    obj["pretrain"] = {"train": {"recall": r[:, :1] * 0.5, "rankloss": np.float64(0.5)},
                       "val": {"recall": r[:, :1] * 0.4, "rankloss": np.float64(0.6)}}
    plotResults(obj, opts, {"numTrain": 40}, outFn=tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > (tmp_path / "a.png").stat().st_size
    assert not list(tmp_path.glob(TEMPORARIES))


def test_one_recall_scale_across_plots(tmp_path):
    """plotResults' recall panel and every recall@N plot share 0-100 %, whatever the values."""
    from matnet.plots import plot_recall_at_n
    opts = TrainWeaklyOpts(recallNs=[1, 5, 10], batchSize=4)
    low = np.array([[0.01, 0.02], [0.02, 0.03], [0.03, 0.04]])
    obj = {"train": {"loss": np.ones((1, 20)), "recall": low, "rankloss": np.array([[0.3, 0.2]])},
           "val": {"recall": low, "rankloss": np.array([[0.3, 0.2]])}}
    fig = plotResults(obj, opts, {"numTrain": 40})
    panel = next(ax for ax in fig.axes if ax.get_title() == "recall")
    fig2 = plot_recall_at_n(tmp_path / "r.png", {"a": ([1, 5, 10], [0.5, 0.6, 0.7])}, "t")
    ax2 = fig2.axes[0]
    assert panel.get_ylim() == ax2.get_ylim() == (0.0, 100.0)
    assert panel.get_ylabel() == ax2.get_ylabel() == "recall@N (%)"
    np.testing.assert_allclose(ax2.lines[0].get_ydata(), [50, 60, 70])  # fractions drawn as percent
    assert Image.open(tmp_path / "r.png").size[0] > 100 and not list(tmp_path.glob(TEMPORARIES))
