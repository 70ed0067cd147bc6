import numpy as np
from PIL import Image

from matnet.plot_results import _smooth, plotResults
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
    assert not list(tmp_path.glob("*.tmp.png"))
