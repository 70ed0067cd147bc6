"""torch.hub entry point (hubconf.py) on network files the tests write, against
computeRepresentation (the MATLAB pipeline) and testFromFn's cropToDim."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from converters.network import save_net
from matnet import computeRepresentation
from matnet.recall_at_n import relja_l2normalize_rows
from matnet.hub import cache_path, file_sha256, preprocess as hub_preprocess, resolve_weights
from matnet.synthetic.vgg16_netvlad import vgg16_netvlad

REPO = str(Path(__file__).resolve().parents[1])
WIDTHS = (4, 8, 8, 16, 16)


@pytest.fixture(scope="module")
def net():
    return vgg16_netvlad(WIDTHS, num_clusters=4, pca_dim=12, image_size=(48, 64), seed=5)


@pytest.fixture(scope="module")
def files(net, tmp_path_factory):
    d = tmp_path_factory.mktemp("hubnets")
    return {"mat": save_net(net, d / "net.mat"), "safetensors": save_net(net, d / "net.safetensors"),
            "struct": save_net(net, d / "net_struct.mat", format="5")}


@pytest.fixture(autouse=True)
def hub_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torch.hub.get_dir() = $TORCH_HOME/hub
    assert Path(torch.hub.get_dir()) == tmp_path / "torch" / "hub"
    return tmp_path / "torch" / "hub"


def images(seed, n=2, h=48, w=64):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def expected(net, ims, dims=None):
    ref = np.stack([computeRepresentation(net, im.astype(np.float32), useGPU=False) for im in ims])
    return relja_l2normalize_rows(ref[:, :dims]) if dims else ref


@pytest.mark.parametrize("kind", ["mat", "safetensors", "struct"])
def test_hub_load_local_file_matches_computeRepresentation(net, files, kind):
    model = torch.hub.load(REPO, "netvlad", weights=str(files[kind]), source="local")
    assert isinstance(model, torch.nn.Module) and not model.training
    ims = images(1) + images(2, n=1)
    with torch.no_grad():
        y = model(model.preprocess(ims))
    assert y.shape == (3, 12)
    np.testing.assert_allclose(y.numpy(), expected(net, ims), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y.norm(dim=1).numpy(), 1, rtol=1e-6)
    # another image size through the same module
    ims2 = images(3, h=40, w=72)
    with torch.no_grad():
        np.testing.assert_allclose(model(model.preprocess(ims2)).numpy(), expected(net, ims2), rtol=1e-5, atol=1e-6)


def test_dims_is_cropToDim(net, files):
    model = torch.hub.load(REPO, "netvlad", weights=str(files["mat"]), dims=5, source="local")
    ims = images(4)
    with torch.no_grad():
        y = model(model.preprocess(ims))
    assert y.shape == (2, 5)
    np.testing.assert_allclose(y.numpy(), expected(net, ims, dims=5), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="between 1 and the network's output size 12"):
        torch.hub.load(REPO, "netvlad", weights=str(files["mat"]), dims=13, source="local")


def preprocess(images):
    """hubconf's preprocess entry point, through torch.hub (hubconf.py is not on sys.path)."""
    return torch.hub.load(REPO, "preprocess", images, source="local")


def test_preprocess_pil_and_arrays():
    rgb = images(5, n=1, h=3, w=4)[0]
    gray = rgb[:, :, 0]
    rgba = np.concatenate([rgb, np.full((3, 4, 1), 7, np.uint8)], axis=2)
    x = preprocess([Image.fromarray(rgb), rgb, Image.fromarray(gray), gray, Image.fromarray(rgba)])
    assert x.shape == (5, 3, 3, 4) and x.dtype == torch.float32
    want_rgb = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)
    want_gray = torch.from_numpy(gray.astype(np.float32))[None].expand(3, -1, -1)
    for i, want in enumerate([want_rgb, want_rgb, want_gray, want_gray, want_rgb]):
        assert torch.equal(x[i], want)
    assert torch.equal(preprocess(np.stack([rgb, rgb])), x[:2])
    with pytest.raises(TypeError, match="uint8"):
        preprocess(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="different sizes"):
        preprocess([rgb, images(6, n=1, h=5, w=4)[0]])


def test_url_is_downloaded_into_the_hub_cache_and_checked(net, files, hub_dir):
    src = files["safetensors"]
    url = src.resolve().as_uri()  # file:// -- torch.hub's downloader, no network
    digest = file_sha256(src)
    model = torch.hub.load(REPO, "netvlad", weights=url, sha256=digest, source="local")
    cached = cache_path(url)
    assert cached.parent.parent == hub_dir / "checkpoints" / "matnet" and cached.name == src.name
    assert cached.is_file() and file_sha256(cached) == digest
    ims = images(7)
    with torch.no_grad():
        np.testing.assert_allclose(model(model.preprocess(ims)).numpy(), expected(net, ims), rtol=1e-5, atol=1e-6)
    # a second load uses the cache (the source may be gone)
    moved = src.with_suffix(".moved")
    src.rename(moved)
    try:
        torch.hub.load(REPO, "netvlad", weights=url, sha256=digest, source="local")
    finally:
        moved.rename(src)
    # a wrong checksum is refused, and the bad download is not kept
    cached.unlink()
    with pytest.raises(ValueError, match="SHA-256 is " + digest):
        torch.hub.load(REPO, "netvlad", weights=url, sha256="0" * 64, source="local")
    assert not cached.exists()


def test_local_file_errors(files, tmp_path):
    with pytest.raises(ValueError, match="refusing"):
        torch.hub.load(REPO, "netvlad", weights=str(files["mat"]), sha256="ab" * 32, source="local")
    with pytest.raises(FileNotFoundError, match="nothere.mat"):
        torch.hub.load(REPO, "netvlad", weights=str(tmp_path / "nothere.mat"), source="local")


def test_cache_keyed_by_url_and_verified(net, files, hub_dir, tmp_path):
    """Case 7: a second URL whose file had the same name returned the first, cached
    network; a broken cached download was reused forever."""
    other_net = vgg16_netvlad(WIDTHS, num_clusters=4, pca_dim=12, image_size=(48, 64), seed=6)
    other = save_net(other_net, tmp_path / "elsewhere" / "net.safetensors")
    url_a, url_b = files["safetensors"].resolve().as_uri(), other.resolve().as_uri()
    ims = images(3)
    with torch.no_grad():
        a = torch.hub.load(REPO, "netvlad", weights=url_a, source="local")(hub_preprocess(ims)).numpy()
        b = torch.hub.load(REPO, "netvlad", weights=url_b, source="local")(hub_preprocess(ims)).numpy()
    np.testing.assert_allclose(a, expected(net, ims), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, expected(other_net, ims), rtol=1e-5, atol=1e-6)
    assert cache_path(url_a) != cache_path(url_b)
    # a damaged cached file (truncated) is downloaded again, with a warning
    cached = cache_path(url_b)
    cached.write_bytes(cached.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="incomplete or changed.*downloading it again"):
        path = resolve_weights(url_b)
    assert file_sha256(path) == file_sha256(other)
    # a cached file without its record (an interrupted download) is not trusted either
    cached.with_name(cached.name + ".json").unlink()
    with pytest.warns(UserWarning, match="no record"):
        resolve_weights(url_b)
