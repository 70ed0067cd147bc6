"""matnet inspect on networks that can never run (exit 1 naming the layer) and on sizes
below the receptive field ('?', exit 0); matnet.nettools.size_free_problem's cases."""
import numpy as np
import pytest

from converters.matfile import savemat
from converters.network import save_net
from matnet import SimpleNN
from matnet.cli import main
from matnet.nettools import size_free_problem
from matnet.synthetic import tiny_net_structs

from helpers.export_zoo import head, zoo_net


def save_structs(path, structs):
    meta = {"normalization": {"averageImage": np.full((1, 1, 3), 120, np.float32)}}
    savemat(path, {"layers": structs, "meta": meta})
    return path


def test_channel_mismatch_exits_1_naming_the_layer(tmp_path, capsys):
    s = tiny_net_structs(0)
    s[3]["weights"][0] = s[3]["weights"][0][:, :, :5, :]  # conv2 expects 5 channels, conv1 gives 16
    f = save_structs(tmp_path / "bad.mat", s)
    assert main(["inspect", str(f)]) == 1
    out, err = capsys.readouterr()
    assert "bad.mat: layer 3 'conv2' (conv) cannot run at any image size: input has 16 channels, filters expect 5" in err
    rows = out.splitlines()[1:9]
    assert rows[3].split()[-1] != "?" and "cannot run at any size" in rows[3]
    assert all(r.split()[-1] == "-" for r in rows[4:])  # not '?': no size would do


def test_size_below_the_receptive_field_keeps_question_marks(tmp_path, capsys):
    f = save_structs(tmp_path / "good.mat", tiny_net_structs(0))
    assert main(["inspect", str(f), "--size", "1", "1"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:9]
    assert "fails:" in rows[2] and all(r.split()[-1] == "?" for r in rows[3:])


def test_bias_size_exits_1_naming_the_layer(tmp_path, capsys):
    s = tiny_net_structs(0)
    s[6]["weights"][1] = np.zeros((1, 7), np.float32)  # conv3 has 32 filters
    assert main(["inspect", str(save_structs(tmp_path / "bias.mat", s))]) == 1
    err = capsys.readouterr().err
    assert "bias.mat" in err and "'conv3'" in err and "7 biases for 32 filters" in err


def test_wpca_input_size_exits_1_naming_the_layer(tmp_path, capsys):
    rng = np.random.default_rng(0)
    s = tiny_net_structs(0) + head(rng, 32, k=4, wpca=8)
    s[-2]["weights"][0] = s[-2]["weights"][0][:, :, :100, :]  # WPCA for 100 values, the head gives 128
    net = SimpleNN.from_structs(s, {"normalization": {"averageImage": np.full((1, 1, 3), 120, np.float32)}})
    assert main(["inspect", str(save_net(net, tmp_path / "wpca.mat"))]) == 1
    err = capsys.readouterr().err
    assert "layer 12 'WPCA' (conv) cannot run at any image size: a WPCA/projection layer: its input has 128 " \
           "channels, filters expect 100" in err


@pytest.mark.parametrize("kind", ["conv", "all", "totalpool", "no_prel2", "dims"])
def test_runnable_networks_have_no_problem(kind):
    assert size_free_problem(zoo_net(kind)[0]) is None


def test_size_free_problem_cases():
    net, _ = zoo_net("vladv2")
    assert size_free_problem(net, channels=3) is None
    assert size_free_problem(net, channels=4) == (0, "input has 4 channels, filters expect 3 (or a multiple of "
                                                       "it for grouped convolution)")
    assert size_free_problem(net, channels=6) is None  # two groups of 3: runs (vl_nnconv's grouping)
    net.layers[3].weights[0].data = net.layers[3].weights[0].data[:, :, :6]  # the VLAD layer: D=6 of 8
    i, why = size_free_problem(net)
    assert i == 3 and why == "input has 8 channels, the layer has D=6"
    # a 5x5 conv after a total pool (fixed 1x1 maps) can never run
    net, _ = zoo_net("totalpool")
    from matnet.layers import Conv
    net.layers.insert(3, Conv("late", [np.zeros((5, 5, 8, 2), np.float32)]))
    assert size_free_problem(net) == (3, "5x5 filters are larger than its fixed-size input")
