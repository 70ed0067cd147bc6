"""converters.matfile: MAT v5 / v7.3 reading and writing, MATLAB shapes, classdef objects."""

import h5py
import numpy as np
import pytest
import scipy.io

from converters.matfile import MatFileError, MatObject, loadmat, savemat

FORMATS = ["7.3", "5"]


def _sample():
    rng = np.random.default_rng(0)
    return {
        "mean_img": rng.standard_normal((1, 1, 3)).astype(np.float32),
        "kernel": rng.standard_normal((1, 1, 4, 2)).astype(np.float32),
        "vol": np.arange(24, dtype=np.float64).reshape(2, 3, 4),
        "col": np.arange(5, dtype=np.int32).reshape(5, 1),
        "scalar": np.array([[2.5]]),
        "u8": np.array([[1, 250]], dtype=np.uint8),
        "flag": np.array([[True, False, True]]),
        "empty": np.zeros((0, 0)),
        "title": "vd16_pitts30k",
        "blank": "",
        "net": {"zeta": np.ones((2, 2), np.float32), "alpha": "first", "mid": {"b": np.array([[1.0]])},
                "cellf": ["a", np.array([[7.0]]), ["nested"]]},
        "cells": ["x", np.float32([[1, 2]]), {"f": np.array([[3.0]])}],
        "obj": MatObject("layerWholeL2Normalize", {"type": "custom", "name": "postL2",
                                                   "precious": np.array([[False]])}),
        "sobj": MatObject("layerVLADv2", {"type": "custom", "name": "vlad:core",
                                          "K": np.array([[4.0]]),
                                          "weights": [rng.standard_normal((1, 1, 3, 4)).astype(np.float32),
                                                      rng.standard_normal((1, 1, 3, 4)).astype(np.float32)]},
                          saveobj=True),
    }


def _assert_same(a, b, where="x"):
    """Exact equality of plain values, including numpy dtype and shape."""
    if isinstance(a, np.ndarray) and a.dtype != object:
        assert isinstance(b, np.ndarray), where
        assert a.shape == b.shape and a.dtype == b.dtype, (where, a.shape, b.shape, a.dtype, b.dtype)
        assert np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), (where, list(a), list(b) if isinstance(b, dict) else b)
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}{{{i}}}")
    elif isinstance(a, MatObject):
        assert isinstance(b, MatObject) and (a.class_name, a.saveobj) == (b.class_name, b.saveobj), where
        _assert_same(a.props, b.props, where + "@")
    else:
        assert a == b and type(a) is type(b), (where, a, b)


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_exact(tmp_path, fmt):
    data = _sample()
    f = savemat(tmp_path / "x.mat", data, format=fmt)
    back = loadmat(f)
    assert sorted(back) == sorted(data)  # HDF5 lists variables by name
    _assert_same(data, {k: back[k] for k in data})


def test_v73_layout_on_disk_is_matlabs(tmp_path):
    """Independently of mat-io: HDF5 holds the transpose with MATLAB class attributes."""
    data = _sample()
    f = savemat(tmp_path / "x.mat", data, format="7.3")
    assert open(f, "rb").read(10) == b"MATLAB 7.3"
    with h5py.File(f, "r") as h:
        d = h["kernel"]
        assert d.shape == (2, 4, 1, 1)  # reversed MATLAB dims 1x1x4x2
        assert d.attrs["MATLAB_class"] == b"single"
        np.testing.assert_array_equal(d[()].T, data["kernel"])
        assert h["vol"].shape == (4, 3, 2)
        np.testing.assert_array_equal(h["vol"][()].T, data["vol"])
        assert h["net"].attrs["MATLAB_class"] == b"struct"
        assert [bytes(x).decode() for x in h["net"].attrs["MATLAB_fields"]] == ["zeta", "alpha", "mid", "cellf"]
        assert h["obj"].attrs["MATLAB_class"] == b"layerWholeL2Normalize"
        assert h["sobj"].attrs["MATLAB_class"] == b"layerVLADv2"


def test_v5_readable_by_scipy(tmp_path):
    data = _sample()
    f = savemat(tmp_path / "x.mat", {k: v for k, v in data.items() if "obj" not in k}, format="5")
    s = scipy.io.loadmat(f)
    assert s["mean_img"].shape == (1, 1, 3) and s["mean_img"].dtype == np.float32
    np.testing.assert_array_equal(s["kernel"], data["kernel"])
    np.testing.assert_array_equal(s["vol"], data["vol"])
    assert s["title"][0] == "vd16_pitts30k"
    assert s["net"].dtype.names == ("zeta", "alpha", "mid", "cellf")


@pytest.mark.parametrize("fmt", FORMATS)
def test_scipy_written_v5_and_shapes(tmp_path, fmt):
    """Files written by another writer decode with the same MATLAB shapes."""
    f = tmp_path / "s.mat"
    cell = np.empty((1, 2), dtype=object)
    cell[0, 0], cell[0, 1] = np.ones((3, 1)), "abc"
    scipy.io.savemat(f, {"a": np.ones((1, 1, 3), np.float32), "c": cell,
                         "s": {"p": np.array([[1.0]]), "q": "z"}})
    d = loadmat(f)
    assert d["a"].shape == (1, 1, 3)
    assert isinstance(d["c"], list) and d["c"][0].shape == (3, 1) and d["c"][1] == "abc"
    assert d["s"] == {"p": d["s"]["p"], "q": "z"} and d["s"]["p"].shape == (1, 1)


def test_two_dim_cell_keeps_shape(tmp_path):
    c = np.empty((2, 3), dtype=object)
    for i in range(2):
        for j in range(3):
            c[i, j] = np.array([[10.0 * i + j]])
    for fmt in FORMATS:
        back = loadmat(savemat(tmp_path / f"c{fmt}.mat", {"c": c}, format=fmt))["c"]
        assert isinstance(back, np.ndarray) and back.shape == (2, 3)
        assert back[1, 2][0, 0] == 12.0 and back[0, 1][0, 0] == 1.0


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_object_twice_is_one_handle(tmp_path, fmt):
    h = MatObject("myHandle", {"v": np.array([[3.0]])})
    back = loadmat(savemat(tmp_path / "h.mat", {"a": h, "b": [h]}, format=fmt))
    assert back["a"] is back["b"][0]
    assert back["a"].props["v"][0, 0] == 3.0


# ---------------------------------------------------------------- files MATLAB wrote

@pytest.fixture
def matlab_made(shared_dir):
    p = shared_dir / "fixtures" / "matlab-made"
    if not p.is_dir():
        pytest.skip(reason=f"{p} absent (MATNET_SHARED / ../shared)")
    return p


@pytest.mark.parametrize("ver", ["v7", "v73"])
def test_matlab_basic_types(matlab_made, ver):
    d = loadmat(matlab_made / f"test_basic_{ver}.mat")
    for t, dt in [("int8", np.int8), ("uint16", np.uint16), ("single", np.float32), ("double", np.float64)]:
        a = d[f"{t}_array"]
        assert a.dtype == dt and a.shape == (2, 3)
        assert d[f"{t}_scalar"].shape == (1, 1)
    np.testing.assert_array_equal(d["int32_array"], [[1, 2, 3], [4, 5, 6]])
    assert d["char_scalar"] == "Hello"
    assert d["char_empty"] == ""
    assert d["logical_array"].dtype == bool and d["logical_array"].tolist() == [[True, False, True]]
    assert d["numeric_empty"].shape == (0, 0)
    assert list(d["struct_scalar"]) == ["name", "value", "data"]
    assert d["struct_scalar"]["name"] == "test" and d["struct_scalar"]["value"][0, 0] == 123
    assert [s["info"] for s in d["struct_array"]] == ["first", "second"]
    ca = d["cell_array"]
    assert ca[0] == "A" and ca[1].shape == (2, 2) and ca[2][0].tolist() == [[True]]
    assert d["cell_nested"][0][0] == "level1"
    assert d["struct_nested"]["level1"]["level2"]["level3"]["value"][0, 0] == 42
    assert d["struct_no_fields"] == {} and d["cell_empty"] == []


@pytest.mark.parametrize("ver", ["v7", "v73"])
def test_matlab_classdef_objects(matlab_made, ver):
    d = loadmat(matlab_made / f"test_user_defined_{ver}.mat")
    o = d["obj_with_vals"]
    assert isinstance(o, MatObject) and o.class_name == "TestClasses.BasicClass" and not o.saveobj
    assert list(o.props) == ["a", "b", "c"] and o.props["a"][0, 0] == 10 and o.props["b"].shape == (0, 0)
    # unchanged properties come from the class-defaults table
    assert d["obj_with_default_val"].props["a"] == "Default String"
    assert d["obj_with_default_val"].props["b"][0, 0] == 10
    arr = d["obj_array"]
    assert arr.shape == (2, 2) and all(isinstance(x, MatObject) for x in arr.flat)
    assert [x.props["a"][0, 0] for x in arr.flat] == [1, 2, 3, 4]
    assert d["obj_handle_1"] is d["obj_handle_2"]  # one handle object saved twice
    nested = d["obj_with_nested_props"].props
    assert isinstance(nested["a"], MatObject) and isinstance(nested["b"][0], MatObject)
    assert isinstance(nested["c"]["InnerProp"], MatObject)


def test_matlab_function_handles_and_tables(matlab_made):
    d = loadmat(matlab_made / "test_function_handles_v73.mat")
    assert d["builtin_fh"].class_name == "function_handle" and d["builtin_fh"].props["function"] == "sin"
    assert d["anonymous_fh"].props["type"] == "anonymous"
    for ver in ["v7", "v73"]:
        t = loadmat(matlab_made / f"test_tables_{ver}.mat")
        assert list(t["table_var_names"].columns) == ["X", "Y"]


# ---------------------------------------------------------------- real dataset specs

# section 4 of ../shared/reference-numbers.md: (db images, queries)
SPECS = {"pitts30k_train": (10000, 7416), "pitts30k_val": (10000, 7608), "pitts30k_test": (10000, 6816),
         "pitts250k_train": (91464, 7824), "pitts250k_val": (78648, 7608), "pitts250k_test": (83952, 8280),
         "tokyo247": (75984, 315), "tokyoTM_train": (49104, 7277), "tokyoTM_val": (49056, 7186)}


@pytest.mark.parametrize("name", ["pitts30k_val", "pitts30k_test", "tokyo247", "tokyoTM_val", "pitts250k_test"])
def test_real_dataset_specs(shared_dir, name):
    f = shared_dir / "datasets" / f"{name}.mat"
    if not f.is_file():
        pytest.skip(reason=f"{f} absent (MATNET_SHARED / ../shared)")
    s = loadmat(f, "dbStruct")["dbStruct"]
    n_db, n_q = SPECS[name]
    tm = name.startswith("tokyoTM")
    expected = ["whichSet", "dbImageFns", "utmDb"] + (["dbTimeStamp"] if tm else []) + \
        ["qImageFns", "utmQ"] + (["qTimeStamp"] if tm else []) + \
        ["numImages", "numQueries", "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr"]
    assert list(s) == expected
    assert int(s["numImages"].item()) == n_db and int(s["numQueries"].item()) == n_q
    assert len(s["dbImageFns"]) == n_db and len(s["qImageFns"]) == n_q
    assert all(isinstance(x, str) and x for x in s["dbImageFns"][:50])
    assert s["utmDb"].shape == (2, n_db) and s["utmQ"].shape == (2, n_q)
    assert float(s["posDistThr"].item()) == 25 and float(s["nonTrivPosDistSqThr"].item()) == 100
    assert float(s["posDistSqThr"].item()) == 625
    if tm:
        assert s["dbTimeStamp"].size == n_db and s["qTimeStamp"].size == n_q


# ---------------------------------------------------------------- bad input

def test_errors_name_file_and_problem(tmp_path):
    txt = tmp_path / "notes.mat"
    txt.write_text("hello, not a MAT file" * 20)
    with pytest.raises(MatFileError, match=r"notes\.mat.*not a MAT file"):
        loadmat(txt)
    with pytest.raises(MatFileError, match=r"nothere\.mat.*no such file"):
        loadmat(tmp_path / "nothere.mat")
    good = savemat(tmp_path / "good.mat", {"a": np.ones((50, 50))})
    with pytest.raises(MatFileError, match=r"good\.mat.*variable\(s\) zz not in file"):
        loadmat(good, ["a", "zz"])
    for fmt in FORMATS:
        f = savemat(tmp_path / f"big{fmt}.mat", {"a": np.random.default_rng(0).random((300, 300)),
                                                 "b": ["x", {"c": np.ones(3)}]}, format=fmt)
        blob = f.read_bytes()
        cut = tmp_path / f"cut{fmt}.mat"
        cut.write_bytes(blob[:len(blob) // 2])
        with pytest.raises(MatFileError, match=rf"cut{fmt}\.mat"):
            loadmat(cut)
    tiny = tmp_path / "tiny.mat"
    tiny.write_bytes(b"MATLAB 5.0")
    with pytest.raises(MatFileError, match="tiny.mat.*128-byte header"):
        loadmat(tiny)


@pytest.mark.parametrize("fmt", FORMATS)
def test_failed_save_leaves_nothing(tmp_path, fmt):
    target = tmp_path / "out.mat"
    with pytest.raises(MatFileError, match=r"out\.mat.*net\.bad.*unsupported type"):
        savemat(target, {"ok": np.ones(3), "net": {"bad": object()}}, format=fmt)
    assert list(tmp_path.iterdir()) == []
    savemat(target, {"keep": np.ones((1, 2))}, format=fmt)
    with pytest.raises(MatFileError, match="not a MATLAB field name"):
        savemat(target, {"s": {"_x": 1.0}}, format=fmt)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mat"]
    assert list(loadmat(target)) == ["keep"]  # the old file is untouched


@pytest.mark.parametrize("fmt", FORMATS)
def test_whosmat(tmp_path, fmt):
    from converters.matfile import whosmat
    f = savemat(tmp_path / "w.mat", {"centres": np.ones((2, 5), np.float32), "x": "abc"}, format=fmt)
    assert sorted(whosmat(f)) == [("centres", (2, 5), "single"), ("x", (1, 3), "char")]
