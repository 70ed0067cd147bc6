"""SimpleNN, vl_simplenn, layouts and the network helpers on a small VGG-like layer list."""
import numpy as np
import pytest
import torch

from matnet import (LayerError, SimpleNN, cropToLayer, layer_from_struct, layerNames, layerTypes,
                    matlab_to_torch, netOutputDim, netPrepareForTest, netPrepareForTrain,
                    swapLayersForEfficiency, torch_to_matlab, vl_simplenn, whichLayer)
from matnet.layout import conv_filters_from_torch, conv_filters_to_torch

rng = np.random.default_rng(1)


def vgg_like_structs():
    """conv1_1 relu1_1 conv1_2 relu1_2 pool1 conv2_1 relu2_1 pool2 conv3_1 relu3_1 (max pools)."""
    def conv(name, cin, cout):
        return dict(name=name, type="conv", weights=[rng.standard_normal((3, 3, cin, cout)).astype(np.float32) * 0.3,
                                                     rng.standard_normal((1, cout)).astype(np.float32)],
                    stride=[1, 1], pad=[1, 1, 1, 1])

    def pool(name):
        return dict(name=name, type="pool", method="max", pool=[2, 2], stride=[2, 2], pad=[0, 0, 0, 0])

    def relu(name):
        return dict(name=name, type="relu", leak=0)

    return [conv("conv1_1", 3, 4), relu("relu1_1"), conv("conv1_2", 4, 4), relu("relu1_2"), pool("pool1"),
            conv("conv2_1", 4, 6), relu("relu2_1"), pool("pool2"), conv("conv3_1", 6, 8), relu("relu3_1")]


def vgg_like():
    return SimpleNN.from_structs(vgg_like_structs(),
                                 meta={"normalization": {"averageImage": np.full((1, 1, 3), 100, np.float32)}})


def test_layout_round_trips():
    a = rng.standard_normal((4, 5, 3, 2)).astype(np.float32)
    t = matlab_to_torch(a)
    assert tuple(t.shape) == (2, 3, 4, 5)
    assert t[1, 2, 3, 4] == a[3, 4, 2, 1]
    np.testing.assert_array_equal(torch_to_matlab(t), a)
    # MATLAB column-major flattening of one H x W x C image is h fastest, then w, then c
    flat_matlab = a[..., 0].reshape(-1, order="F")
    np.testing.assert_array_equal(t[0].permute(0, 2, 1).reshape(-1).numpy(), flat_matlab)
    # an H x W x C image (N = 1 dropped by MATLAB) becomes a batch of one
    assert tuple(matlab_to_torch(a[..., 0]).shape) == (1, 3, 4, 5)
    w = torch.randn(3, 2, 4, 5)
    assert torch.equal(conv_filters_from_torch(conv_filters_to_torch(w)), w)


def test_vl_simplenn_returns_every_layer_output():
    net = vgg_like().eval()
    x = torch.randn(2, 3, 12, 16)
    res = vl_simplenn(net, x)
    assert len(res) == len(net.layers) + 1 and res[0] is x
    for i, layer in enumerate(net.layers):
        torch.testing.assert_close(res[i + 1], layer(res[i]))
    torch.testing.assert_close(net(x), res[-1])
    assert tuple(res[-1].shape) == (2, 8, 3, 4)


def test_names_types_which_crop():
    net = vgg_like()
    assert layerNames(net)[:3] == ["conv1_1", "relu1_1", "conv1_2"]
    assert layerTypes(net)[4] == "pool"
    assert whichLayer(net, "pool2") == 7
    cropped = cropToLayer(net, "conv2_1")
    assert layerNames(cropped) == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1", "conv2_1"]
    assert len(net.layers) == 10  # the original is untouched
    with pytest.raises(ValueError, match="nope"):
        whichLayer(net, "nope")


def test_swap_layers_for_efficiency_keeps_the_function():
    net = vgg_like().eval()
    swapped = swapLayersForEfficiency(net).eval()
    assert layerNames(swapped) == ["conv1_1", "relu1_1", "conv1_2", "pool1", "relu1_2",
                                   "conv2_1", "pool2", "relu2_1", "conv3_1", "relu3_1"]
    x = torch.randn(1, 3, 16, 20)
    with torch.no_grad():
        torch.testing.assert_close(swapped(x), net(x))
    # an avg pool after a relu is not swapped (they do not commute)
    structs = vgg_like_structs()
    structs[4]["method"] = "avg"
    assert layerNames(swapLayersForEfficiency(SimpleNN.from_structs(structs)))[3:5] == ["relu1_2", "pool1"]


def test_net_output_dim():
    net = vgg_like()
    dim, sz = netOutputDim(net, [32, 24, 3])
    assert sz == (8, 6, 8) and dim == 8 * 6 * 8
    net.meta["normalization"]["averageImage"] = np.zeros((20, 16, 3), np.float32)  # old-style full mean
    assert netOutputDim(net) == (5 * 4 * 8, (5, 4, 8))
    # a 1x1x3 mean cannot pass the pools: the model's imageSize is used instead
    net.meta["normalization"] = {"averageImage": np.zeros((1, 1, 3), np.float32),
                                 "imageSize": np.array([[12, 20, 3]], np.float64)}
    assert netOutputDim(net) == (3 * 5 * 8, (3, 5, 8))


def test_prepare_for_train_and_test():
    net = vgg_like()
    net.layers[0].learningRate = [2.0, 0.5]
    netPrepareForTrain(net, backPropToLayer=3)
    assert net.layers[0].momentum is None  # below backPropToLayer (1-based 3 = conv1_2)
    assert [m.shape for m in net.layers[2].momentum] == [w.shape for w in net.layers[2].weights]
    assert all(float(m.abs().sum()) == 0 for m in net.layers[2].momentum)
    assert net.layers[2].learningRate == [1.0, 1.0] and net.layers[2].weightDecay == [1.0, 1.0]
    assert net.layers[0].learningRate == [2.0, 0.5]  # existing multipliers are kept
    # precious: layers >= backPropToLayer-1 (1-based) not followed by a relu
    want = [False, True, False, True, True, False, True, True, False, False]
    assert [l.precious for l in net.layers] == want
    assert net.training
    netPrepareForTest(net, removeExtras=True)
    assert not net.training and not any(l.precious for l in net.layers)
    assert all(l.momentum is None for l in net.layers)


def test_prepare_for_test_removes_dropout():
    structs = vgg_like_structs()[:2] + [dict(name="drop", type="dropout", rate=0.5)]
    net = netPrepareForTest(SimpleNN.from_structs(structs), removeDropout=True)
    assert layerTypes(net) == ["conv", "relu"]


def test_struct_round_trip():
    for s in vgg_like_structs() + [dict(name="n", type="normalize", param=[5, 1, 1e-4, 0.75], precious=True,
                                        someUnknownField="kept")]:
        layer = layer_from_struct(s)
        back = layer_from_struct(layer.to_struct())
        assert back.to_struct().keys() == layer.to_struct().keys()
        for a, b in zip(layer.weights, back.weights):
            assert torch.equal(a, b)
    assert layer_from_struct(s).to_struct()["someUnknownField"] == "kept"


def test_bad_layer_structs_name_the_layer():
    with pytest.raises(LayerError, match="'conv9'.*missing required field 'weights'"):
        layer_from_struct(dict(name="conv9", type="conv", stride=1))
    with pytest.raises(LayerError, match="'pool3'.*missing required field 'pool'"):
        layer_from_struct(dict(name="pool3", type="pool"))
    with pytest.raises(LayerError, match="'weird'.*unsupported layer type 'bnorm2'"):
        layer_from_struct(dict(name="weird", type="bnorm2"))
    with pytest.raises(LayerError, match="layer3.*no 'type'"):
        layer_from_struct(dict(weights=[]), index=2)
    with pytest.raises(LayerError, match="'x'.*unknown layer class 'layerFoo'"):
        layer_from_struct(dict(name="x"), class_name="layerFoo")
    with pytest.raises(LayerError, match="'c'.*5 biases for 4 filters"):
        layer_from_struct(dict(name="c", type="conv", weights=[np.zeros((1, 1, 3, 4)), np.zeros(5)]))


def test_wrong_number_of_input_channels_names_the_layer():
    net = vgg_like()
    with pytest.raises(LayerError, match="'conv1_1'.*input has 4 channels, filters expect 3"):
        net(torch.zeros(1, 4, 8, 8))
    with pytest.raises(LayerError, match="'pool1'.*larger than the padded input"):
        net.layers[4](torch.zeros(1, 4, 1, 1))


def test_matlab_scalars_and_tensor_ownership():
    # MATLAB scalars arrive as 1x1 arrays
    relu = layer_from_struct(dict(name="r", type="relu", leak=np.array([[0.25]]), precious=np.array([[1]], bool)))
    assert relu.leak == 0.25 and relu.precious is True
    drop = layer_from_struct(dict(name="d", type="dropout", rate=np.array([[0.3]])))
    assert drop.rate == 0.3
    # tensors are taken over without a copy; numpy arrays are copied
    w = torch.randn(1, 1, 3, 2)
    conv = layer_from_struct(dict(name="c", type="conv", weights=[w, torch.zeros(2)]))
    assert conv.weights[0].data_ptr() == w.data_ptr()
    a = np.ones((1, 1, 3, 2), np.float32)
    conv = layer_from_struct(dict(name="c", type="conv", weights=[a, np.zeros(2, np.float32)]))
    with torch.no_grad():
        conv.weights[0].add_(1)
    assert a.max() == 1
