"""trainWeakly's progress log and its one-line test summaries (printLoss shows the tables)."""
import io
import re

import numpy as np

from matnet.synthetic import dbSynthetic, make_places
from matnet.train import progress_log
from matnet.train.opts import TrainWeaklyOpts
from matnet.train.progress_log import ProgressLog
from matnet.train.train_weakly import recall_summary, testNet


def test_a_line_every_few_batches_with_the_mean_loss_and_rate(tmp_path):
    fn = tmp_path / "s.log"
    log = ProgressLog(fn)
    log.write("start")
    log.epoch_start()
    losses = np.linspace(0.1, 2.3, 23)
    for i, l in enumerate(losses, 1):
        log.batch(3, i, 23, float(l))
    lines = fn.read_text().splitlines()  # flushed line by line: readable before close
    log.close()
    assert lines[0].endswith(" start") and len(lines) == 1 + 3
    for line, (a, b) in zip(lines[1:], [(0, 10), (10, 20), (20, 23)]):
        assert f"epoch 3 batch {b}/23 loss {losses[a:b].mean():.4f} " in line
        rate = float(line.split(" loss ")[1].split()[1])
        assert rate > 0 and line.endswith(" min")
    assert progress_log.EVERY == 10
    ProgressLog(fn).write("resumed")  # a resumed run appends
    assert fn.read_text().splitlines()[:4] == lines and fn.read_text().endswith(" resumed\n")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_progress_bar_per_epoch_on_a_terminal_only(tmp_path):
    """On a terminal: batches done of the epoch, the epoch's mean loss, the rate and the
    time left; elsewhere no bar; the log file has the same lines either way."""
    texts = {}
    for name, console in (("tty", _Terminal()), ("pipe", io.StringIO())):
        fn = tmp_path / f"{name}.log"
        log = ProgressLog(fn, console=console)
        log.epoch_start(2, 5, startBatch=3, nBatches=12, desc="s ")
        for i in range(3, 13):
            log.batch(2, i, 12, 0.5)
        if log.bar is not None:
            log.bar.refresh()
        shown = console.getvalue()
        log.close_bar()
        log.close()
        texts[name] = shown, [l.split(" ", 2)[2] for l in fn.read_text().splitlines()]
    bar, _ = texts["tty"]
    assert "s epoch 2/5" in bar and "12/12" in bar and "loss 0.5000" in bar and "batch/s" in bar
    assert re.search(r"\d\d:\d\d<\d\d:\d\d", bar)  # elapsed < time left
    assert texts["pipe"][0] == ""
    for _, lines in texts.values():  # the log's lines (rates aside) do not depend on the console
        assert [l.split(" batch/s")[0].rsplit(" ", 1)[0] for l in lines] == \
            ["epoch 2 batch 10/12 loss 0.5000", "epoch 2 batch 12/12 loss 0.5000"]


def test_recall_summary_picks_1_5_10_20():
    assert recall_summary([1, 2, 5, 10, 20, 25], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) == "recall@1/5/10/20 0.100/0.300/0.400/0.500"
    assert recall_summary([2, 3], [0.5, 0.75]) == "recall@2/3 0.500/0.750"


def test_testNet_prints_one_line_unless_printLoss(tmp_path, capsys):
    make_places(tmp_path, numImages=16, numQueries=8, imSize=(32, 40), splits=("val",))
    db = dbSynthetic("val", tmp_path)
    g = np.random.default_rng(0)
    q, d = (g.standard_normal((n, 8)).astype(np.float32) for n in (db.numQueries, db.numImages))
    o = TrainWeaklyOpts(sessionID="s", recallNs=[1, 5, 10], nTestRankSample=4, nNegChoice=4)
    log = ProgressLog(tmp_path / "s.log")
    rec, rl = testNet(db, o, "ep1_val", q, d, log)
    out = capsys.readouterr().out.splitlines()
    assert out == [f"testNet: s ep1_val: recall@1/5/10 {rec[0]:.3f}/{rec[1]:.3f}/{rec[2]:.3f}, rankloss {rl:.4f}"]
    assert (tmp_path / "s.log").read_text().endswith(out[0] + "\n")
    rec2, rl2 = testNet(db, o.replace(printLoss=True), "ep1_val", q, d)
    out = capsys.readouterr().out.splitlines()
    assert "001 " + f"{rec[0]:.4f}" in out and any(l.startswith("\tloss= ") for l in out) and len(out) > 5
    np.testing.assert_array_equal(rec, rec2)
    assert rl == rl2


def test_testFromFn_verbose_false_prints_nothing(tmp_path, capsys):
    from converters.bin_features import write_bin
    from matnet.recall_at_n import testFromFn
    make_places(tmp_path, numImages=16, numQueries=8, imSize=(32, 40), splits=("val",))
    db = dbSynthetic("val", tmp_path)
    g = np.random.default_rng(1)
    write_bin(tmp_path / "q.bin", g.standard_normal((8, 4)).astype(np.float32))
    write_bin(tmp_path / "d.bin", g.standard_normal((16, 4)).astype(np.float32))
    quiet = testFromFn(db, tmp_path / "d.bin", tmp_path / "q.bin", recallNs=[1, 5], nTestRankSample=4, nNegChoice=4,
                       verbose=False)
    assert capsys.readouterr().out == ""
    loud = testFromFn(db, tmp_path / "d.bin", tmp_path / "q.bin", recallNs=[1, 5], nTestRankSample=4, nNegChoice=4)
    assert "001 " in capsys.readouterr().out
    np.testing.assert_array_equal(quiet[0], loud[0])
    assert quiet[1] == loud[1]
