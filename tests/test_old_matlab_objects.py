"""Classdef objects written by MATLAB before 2024 (MCOS FileWrapper__ versions 2 and 3).

The released NetVLAD networks (2016-2017) were saved by MATLAB releases that write the
object subsystem as FileWrapper__ version 2 or 3; every MATLAB-made file we have is
version 4 (MATLAB 2024+).  mat-io's reader (matio/subsystem/subsys.py,
``MatSubsystem.load_mcos_data``) tells them apart by the version number in the first
4 bytes of the FileWrapper__ metadata and by the cell's layout:

    v4: [metadata, unknown, saved properties..., class templates, class aliases, defaults]
    v3: [metadata, unknown, saved properties...,                   class aliases, defaults]
    v2: [metadata, unknown, saved properties...,                                  defaults]

``older_filewrapper`` rewrites a v4 file into those layouts, so the released files'
likely format goes through the real reader.
"""
import shutil

import h5py
import numpy as np
import pytest
import torch

import matnet
from converters.matfile import MatFileError, MatObject, filewrapper_version, loadmat, savemat
from helpers.released_net import EXPECTED_CLASSES, released_net


def older_filewrapper(src, dst, version: int, layout: int | None = None):
    """Copy the v7.3 file ``src`` to ``dst`` with its FileWrapper__ rewritten as ``version``,
    its cell in the layout of ``layout`` (default: the same version)."""
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        cell = f["#subsystem#/MCOS"]
        attrs = dict(cell.attrs)
        refs = list(cell[()].reshape(-1))
        meta = f[refs[0]]
        head = meta[()]
        flat = head.reshape(-1).copy()
        assert int(flat[:4].view("<i4")[0]) == 4  # the source is MATLAB 2024+'s layout
        flat[:4] = np.array([version], "<i4").view(np.uint8)
        meta[...] = flat.reshape(head.shape)
        layout = version if layout is None else layout
        if layout == 3:    # no class templates
            refs = refs[:-3] + refs[-2:]
        elif layout == 2:  # no class templates, no class aliases
            refs = refs[:-3] + refs[-1:]
        del f["#subsystem#/MCOS"]
        new = f["#subsystem#"].create_dataset("MCOS", data=np.array(refs, dtype=h5py.ref_dtype).reshape(1, -1))
        for k, v in attrs.items():
            new.attrs[k] = v
    return dst


def same(a, b, where="value"):
    """Deep equality of loadmat values (dicts, lists, MatObject, arrays, strings)."""
    assert type(a) is type(b), where
    if isinstance(a, MatObject):
        assert a.class_name == b.class_name and a.saveobj == b.saveobj, where
        same(a.props, b.props, f"{where}.{a.class_name}")
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert a.shape == b.shape, where
        for i, (x, y) in enumerate(zip(a.reshape(-1), b.reshape(-1))):
            same(x, y, f"{where}{{{i}}}")
    elif isinstance(a, np.ndarray):
        assert a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), where
    else:
        assert a == b, where


@pytest.mark.parametrize("version", [2, 3])
def test_released_network_from_older_matlab(tmp_path, version):
    v4 = savemat(tmp_path / "net_v4.mat", {"net": released_net()})
    old = older_filewrapper(v4, tmp_path / f"net_v{version}.mat", version)
    assert filewrapper_version(v4) == 4 and filewrapper_version(old) == version
    assert filewrapper_version(savemat(tmp_path / "net_v5.mat", {"net": released_net()}, format="5")) == 4
    assert filewrapper_version(savemat(tmp_path / "plain.mat", {"x": np.ones((2, 2))})) is None
    same(loadmat(old), loadmat(v4))
    net, ref = matnet.load_net(old), matnet.load_net(v4)
    assert [type(l).__name__ for l in net.layers] == EXPECTED_CLASSES
    for a, b in zip(net.layers, ref.layers):
        assert a.name == b.name and all(torch.equal(x, y) for x, y in zip(a.weights, b.weights))
    x = torch.randn(2, 3, 12, 10)
    torch.testing.assert_close(net.eval()(x), ref.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("version", [2, 3])
def test_matlab_made_objects_in_older_layouts(shared_dir, tmp_path, version):
    """MATLAB's own user-defined objects (nested, handles, arrays, defaults) read the same."""
    src = shared_dir / "fixtures" / "matlab-made" / "test_user_defined_v73.mat"
    if not src.is_file():
        pytest.skip(reason=f"{src} absent (MATNET_SHARED)")
    old = older_filewrapper(src, tmp_path / f"user_defined_v{version}.mat", version)
    ref = loadmat(src)
    assert any(isinstance(v, MatObject) for v in ref.values())
    same(loadmat(old), ref)


def test_undecodable_objects_are_an_error_naming_the_version(tmp_path):
    v4 = savemat(tmp_path / "net_v4.mat", {"net": released_net()})
    # a version mat-io does not know: the whole subsystem is dropped
    v1 = older_filewrapper(v4, tmp_path / "net_v1.mat", 1, layout=4)
    with pytest.raises(MatFileError, match=r"net_v1\.mat: the MATLAB object data .* could not be decoded"
                                           r".*FileWrapper__ block \(version 1;.*version 1 is not supported"):
        loadmat(v1)
    with pytest.raises(MatFileError, match=r"could not be decoded"):  # not "net.layers{10} is a ndarray"
        matnet.load_net(v1)
    # a version 3 header over a version 2 layout: each object fails, mat-io's reason is quoted
    bad = older_filewrapper(v4, tmp_path / "net_v3_bad.mat", 3, layout=2)
    with pytest.raises(MatFileError, match=r"\(version 3;.*Failed to load object instance of class layerVLADv2"):
        matnet.load_net(bad)
