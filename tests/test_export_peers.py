"""matnet export --format patchnetvlad|hloc: the written files, loaded by the key names
and conventions of the peers' code, through a plain-torch restatement of what their
modules compute (torchvision does not import here), against matnet's descriptors."""
import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F

from matnet.descriptor_net import DescriptorNet
from matnet.export import export_hloc, export_patchnetvlad
from matnet.export.vgg16_layout import LayoutError
from matnet.synthetic.vgg16_netvlad import vgg16_netvlad

WIDTHS = (4, 6, 8, 8, 12)
# torchvision vgg16().features[:-2], written out: C conv 3x3 pad 1, R relu, P max pool 2x2/2
SEQUENCE = ["C", "R", "C", "R", "P", "C", "R", "C", "R", "P", "C", "R", "C", "R", "C", "R", "P",
            "C", "R", "C", "R", "C", "R", "P", "C", "R", "C", "R", "C"]
IMAGENET_MEAN_255 = (0.485 * 255, 0.456 * 255, 0.406 * 255)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b), axis=1).max() / np.linalg.norm(b, axis=1).min())


def images01(n, h, w, seed):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def vgg_features(sd, prefix, x):
    for i, kind in enumerate(SEQUENCE):
        if kind == "C":
            x = F.conv2d(x, sd[f"{prefix}{i}.weight"], sd[f"{prefix}{i}.bias"], padding=1)
        elif kind == "R":
            x = F.relu(x)
        else:
            x = F.max_pool2d(x, 2, 2)
    return x


def patchnetvlad_forward(sd, x01):
    """Patch-NetVLAD's model (encoder, pool = NetVLAD, WPCA) on ImageNet-normalised 0..1 images."""
    x = vgg_features(sd, "encoder.", (x01 - MEAN) / STD)
    n, c = x.shape[:2]
    x = F.normalize(x, p=2, dim=1)
    soft = F.softmax(F.conv2d(x, sd["pool.conv.weight"], sd.get("pool.conv.bias")).view(n, -1, x.shape[2] * x.shape[3]), 1)
    flat = x.view(n, c, -1)
    cents = sd["pool.centroids"]
    vlad = torch.stack([((flat - cents[k][None, :, None]) * soft[:, k:k + 1]).sum(-1) for k in range(cents.shape[0])], 1)
    vlad = F.normalize(vlad, p=2, dim=2).view(n, -1)
    vlad = F.normalize(vlad, p=2, dim=1)
    if "WPCA.0.weight" in sd:
        vlad = F.conv2d(vlad[:, :, None, None], sd["WPCA.0.weight"], sd["WPCA.0.bias"]).view(n, -1)
        vlad = F.normalize(vlad, p=2, dim=-1)
    return vlad


def hloc_load(path):
    """hloc's parsing of the struct .mat into its modules' parameters (by its names)."""
    mat = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
    layers = mat["net"].layers
    sd = {}
    for i, kind in enumerate(SEQUENCE):
        if kind == "C":
            sd[f"backbone.{i}.weight"] = torch.tensor(layers[i].weights[0]).float().permute(3, 2, 0, 1)
            sd[f"backbone.{i}.bias"] = torch.tensor(layers[i].weights[1]).float()
    sd["netvlad.score_proj.weight"] = torch.tensor(layers[30].weights[0]).float().permute(1, 0).unsqueeze(-1)
    sd["netvlad.centers"] = -torch.tensor(layers[30].weights[1]).float()
    if len(layers) > 33:
        sd["whiten.weight"] = torch.tensor(layers[33].weights[0]).float().squeeze().permute(1, 0)
        sd["whiten.bias"] = torch.tensor(layers[33].weights[1].squeeze()).float()
    return sd, mat["net"].meta.normalization.averageImage[0, 0]


def hloc_forward(sd, mean, x01):
    """hloc's NetVLAD._forward on 0..1 images."""
    x = torch.clamp(x01 * 255, 0.0, 255.0) - torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    x = vgg_features(sd, "backbone.", x)
    b, c = x.shape[:2]
    x = F.normalize(x.view(b, c, -1), dim=1)
    scores = F.softmax(F.conv1d(x, sd["netvlad.score_proj.weight"]), dim=1)
    diff = x.unsqueeze(2) - sd["netvlad.centers"].unsqueeze(0).unsqueeze(-1)
    desc = (scores.unsqueeze(1) * diff).sum(dim=-1)
    desc = F.normalize(desc, dim=1).view(b, -1)
    desc = F.normalize(desc, dim=1)
    if "whiten.weight" in sd:
        desc = F.normalize(F.linear(desc, sd["whiten.weight"], sd["whiten.bias"]), dim=1)
    return desc


def matnet_desc(net, x01, dims=None):
    with torch.no_grad():
        return DescriptorNet(net, dims).eval()(x01 * 255).numpy()


@pytest.mark.parametrize("v2,pca", [(False, 10), (True, None)])
def test_patchnetvlad_checkpoint_gives_matnet_descriptors(tmp_path, v2, pca):
    net = vgg16_netvlad(WIDTHS, num_clusters=5, pca_dim=pca, vladv2=v2, average_colour=IMAGENET_MEAN_255,
                        image_size=(48, 64), seed=1)
    with pytest.warns(UserWarning, match="not torchvision VGG16"):
        out = export_patchnetvlad(net, tmp_path / "ckpt.pth.tar")
    ckpt = torch.load(out, weights_only=True)
    assert set(ckpt) == {"epoch", "best_score", "state_dict"}
    sd = ckpt["state_dict"]
    assert sd["pool.centroids"].shape == (5, 12) and sd["pool.conv.weight"].shape == (5, 12, 1, 1)
    assert ("pool.conv.bias" in sd) == v2 and ("WPCA.0.weight" in sd) == bool(pca)
    assert sorted(k for k in sd if k.startswith("encoder.")) == sorted(
        f"encoder.{i}.{p}" for i, kind in enumerate(SEQUENCE) if kind == "C" for p in ("weight", "bias"))
    for h, w in [(48, 64), (40, 56)]:
        x = images01(2, h, w, seed=h)
        theirs = patchnetvlad_forward(sd, x).numpy()
        ours = matnet_desc(net, x)
        if not pca:  # their order is K-major: (k, d) at d + D*k
            theirs = theirs.reshape(2, 5, 12).transpose(0, 2, 1).reshape(2, -1)
        assert rel_err(theirs, ours) <= 1e-4


def test_patchnetvlad_dims_crops_wpca(tmp_path):
    net = vgg16_netvlad(WIDTHS, num_clusters=5, pca_dim=10, average_colour=IMAGENET_MEAN_255,
                        image_size=(48, 64), seed=2)
    with pytest.warns(UserWarning):
        sd = torch.load(export_patchnetvlad(net, tmp_path / "c4.pth.tar", dims=4), weights_only=True)["state_dict"]
    assert sd["WPCA.0.weight"].shape == (4, 60, 1, 1)
    x = images01(2, 48, 64, seed=3)
    assert rel_err(patchnetvlad_forward(sd, x).numpy(), matnet_desc(net, x, dims=4)) <= 1e-4
    net_nopca = vgg16_netvlad(WIDTHS, num_clusters=5, pca_dim=None, image_size=(48, 64))
    with pytest.raises(ValueError, match="dims needs a network with WPCA"), pytest.warns(UserWarning):
        export_patchnetvlad(net_nopca, tmp_path / "x.pth.tar", dims=4)


def test_patchnetvlad_preprocessing_fold_differs_only_on_the_padded_frame(tmp_path):
    """With an average colour other than 255 x ImageNet's mean, conv1_1 agrees inside the
    image and differs on the one-pixel frame by sum over the taps outside the image of
    W (255 m - avg) -- the documented condition."""
    avg = (122.74, 116.78, 103.94)
    net = vgg16_netvlad(WIDTHS, num_clusters=5, pca_dim=None, average_colour=avg, image_size=(48, 64), seed=4)
    with pytest.warns(UserWarning):
        sd = torch.load(export_patchnetvlad(net, tmp_path / "c.pth.tar"), weights_only=True)["state_dict"]
    x01 = images01(1, 20, 24, seed=5)
    theirs = F.conv2d((x01 - MEAN) / STD, sd["encoder.0.weight"], sd["encoder.0.bias"], padding=1)
    conv1 = net.layers[0]
    w = conv1.weights[0].detach().permute(3, 2, 0, 1)
    ours = F.conv2d(x01 * 255 - torch.tensor(avg).view(1, 3, 1, 1), w, conv1.weights[1].detach(), padding=1)
    shift = (255 * MEAN - torch.tensor(avg).view(1, 3, 1, 1)).double()
    # taps inside the image see the shift through the bias; padding taps do not in MatConvNet
    inside = F.conv2d(shift.expand(1, 3, 20, 24), w.double(), padding=1)
    expected = ((w.double() * shift).sum((1, 2, 3)).view(1, -1, 1, 1) - inside).float()
    diff = theirs - ours
    torch.testing.assert_close(diff[:, :, 1:-1, 1:-1], torch.zeros_like(diff[:, :, 1:-1, 1:-1]), atol=2e-3, rtol=0)
    torch.testing.assert_close(diff, expected, atol=2e-3, rtol=0)
    assert expected[:, :, 0].abs().max() > 0.01  # the frame really differs


def test_hloc_struct_file_gives_matnet_descriptors(tmp_path):
    net = vgg16_netvlad(WIDTHS, num_clusters=5, pca_dim=10, image_size=(48, 64), seed=6)
    out = export_hloc(net, tmp_path / "VGG16-NetVLAD-Pitts30K.mat")
    sd, mean = hloc_load(out)
    np.testing.assert_allclose(mean, net.meta["normalization"]["averageImage"][0, 0], rtol=1e-6)
    assert sd["netvlad.score_proj.weight"].shape == (5, 12, 1) and sd["whiten.weight"].shape == (10, 60)
    for h, w in [(48, 64), (40, 56)]:
        x = images01(2, h, w, seed=w)
        assert rel_err(hloc_forward(sd, mean, x).numpy(), matnet_desc(net, x)) <= 1e-4
    # dims crops the whitening; a 1x1x3 averageImage is written so that hloc's [0, 0] finds the colour
    net.meta["normalization"]["averageImage"] = np.asarray([[[100.0, 110.0, 120.0]]], np.float32)
    sd, mean = hloc_load(export_hloc(net, tmp_path / "cropped.mat", dims=3))
    np.testing.assert_allclose(mean, [100, 110, 120])
    x = images01(2, 48, 64, seed=7)
    assert rel_err(hloc_forward(sd, mean, x).numpy(), matnet_desc(net, x, dims=3)) <= 1e-4


def test_layout_errors_name_the_layer(tmp_path):
    net = vgg16_netvlad(WIDTHS, num_clusters=5, pca_dim=None, vladv2=True, image_size=(48, 64))
    with pytest.raises(ValueError, match="no assignment bias"):
        export_hloc(net, tmp_path / "v2.mat")
    del net.layers[31]  # no intra-normalisation: the first layer that differs is named, not a count
    with pytest.raises(LayoutError, match="hloc: layer 32 \\('postL2'\\): expected the intra normalisation"):
        export_hloc(net, tmp_path / "x.mat")
    del net.layers[20:]  # cut inside the trunk
    with pytest.raises(LayoutError, match="the network ends at layer 20 \\('conv4_2'\\); layer 21 should be a relu"):
        export_hloc(net, tmp_path / "x.mat")
    net = vgg16_netvlad(WIDTHS, num_clusters=5, pca_dim=4, image_size=(48, 64))
    net.layers.append(net.layers[-1])
    with pytest.raises(LayoutError, match="layer 36 \\('finalL2'\\): a layer after the final L2"):
        export_patchnetvlad(net, tmp_path / "x.pth.tar")
    net = vgg16_netvlad(WIDTHS, num_clusters=5, pca_dim=None, image_size=(48, 64))
    net.layers[31], net.layers[32] = net.layers[32], net.layers[31]
    with pytest.raises(LayoutError, match="layer 32 \\('postL2'\\): expected the intra normalisation"):
        export_patchnetvlad(net, tmp_path / "x.pth.tar")
    net = vgg16_netvlad(WIDTHS, num_clusters=5, pca_dim=None, image_size=(48, 64))
    net.layers[7].pad = (0, 0, 0, 0)
    with pytest.raises(LayoutError, match="layer 8 \\('conv2_2'\\): expected 3x3x6 filters"):
        export_patchnetvlad(net, tmp_path / "x.pth.tar")
