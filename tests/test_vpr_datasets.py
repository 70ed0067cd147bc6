"""The VPR folder format both ways: dbVPR, `matnet dataset import vpr` (dbStruct written as
MATLAB writes the released specs), `matnet dataset export` and the round trip, bad inputs."""
import json
import os
import re
import struct
import warnings
import zlib

import numpy as np
import pytest
import scipy.io
from PIL import Image

from converters.dbstruct import DbStructError, dbstruct_fields, load_dbstruct, save_dbstruct
from converters.mat5 import savemat5
from converters.matfile import loadmat
from helpers.dataset_makers import make_vpr, tiny_jpeg, vpr_name
from matnet.cli import main as cli
from matnet.commands.dataset import import_specs
from matnet.datasets import dbSpec, dbTokyo247, dbVPR, db_from_spec
from matnet.datasets.vpr_format import VPRFormatError, parse_name
from matnet.recall_at_n import testCore

PITTS_FIELDS = ["whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages", "numQueries",
                "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr"]
TM_FIELDS = ["whichSet", "dbImageFns", "utmDb", "dbTimeStamp", "qImageFns", "utmQ", "qTimeStamp", "numImages",
             "numQueries", "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr"]


def payload(fn):
    """The decompressed first variable of a v5 MAT file (MATLAB compresses each one)."""
    b = open(fn, "rb").read()
    _, n = struct.unpack("<II", b[128:136])
    return zlib.decompress(b[136:136 + n])


@pytest.mark.parametrize("name", ["pitts30k_test", "tokyoTM_val"])
def test_spec_writer_reproduces_matlab_bytes(shared_dir, tmp_path, name):
    real = shared_dir / "datasets" / f"{name}.mat"
    s = loadmat(real)["dbStruct"]
    out = savemat5(tmp_path / f"{name}.mat", {"dbStruct": s})
    assert payload(out) == payload(real)  # every tag, class, storage type and byte as MATLAB wrote them
    # and through the high-level writer from the normalised reader
    d = load_dbstruct(real)
    fields = dbstruct_fields(d["whichSet"], d["dbImageFns"], d["utmDb"], d["qImageFns"], d["utmQ"],
                             d["posDistThr"], d["nonTrivPosDistSqThr"], d.get("dbTimeStamp"), d.get("qTimeStamp"))
    assert payload(save_dbstruct(tmp_path / "again.mat", fields)) == payload(real)
    with pytest.raises(DbStructError, match="again.mat: the spec file already exists"):
        save_dbstruct(tmp_path / "again.mat", fields)


def storage(fn):
    """Field -> (storage dtype, shape) as scipy reports them, and the MATLAB classes."""
    raw = scipy.io.loadmat(fn)["dbStruct"][0, 0]
    cls = scipy.io.loadmat(fn, mat_dtype=True)["dbStruct"][0, 0]
    return raw, cls


def test_import_vpr_writes_the_real_spec_format(tmp_path, shared_dir):
    root, specs = tmp_path / "mine", tmp_path / "specs"
    db_utm = np.array([[500010.25, 500000.00, 500300.50, 500020.75, 499990.01],
                       [4400000.5, 4400000.0, 4400000.0, 4400010.0, 4399990.0]])
    q_utm = np.array([[500005.0, 500290.0, 509000.0], [4400001.0, 4400003.0, 4400000.0]])
    db_names, q_names = make_vpr(root, "test", db_utm, q_utm,
                                 db_extra=[{"zone": 17, "letter": "T", "note": f"d{i}"} for i in range(5)])
    ts = [{"timestamp": t} for t in ("20091201_101010", "201306", "200912")]
    train_names, _ = make_vpr(root, "train", db_utm[:, :3], q_utm[:, :2], db_extra=ts, q_extra=ts[:2])
    with pytest.warns(UserWarning, match=r"queries: 1 of 3 queries have no database image within 25"):
        assert cli(["dataset", "import", "vpr", str(root), "--name", "mine", "--spec-dir", str(specs)]) == 0
    assert sorted(os.listdir(specs)) == ["mine_test.mat", "mine_train.mat"]

    raw, cls = storage(specs / "mine_test.mat")
    assert list(raw.dtype.names) == PITTS_FIELDS
    real_raw, real_cls = storage(shared_dir / "datasets" / "pitts30k_test.mat")
    assert list(real_raw.dtype.names) == PITTS_FIELDS
    for f in PITTS_FIELDS:  # same MATLAB classes as the released file
        assert cls[f].dtype == real_cls[f].dtype, f
    order = np.argsort(db_names)  # sorted paths, as VPR-methods-evaluation's glob
    assert raw["dbImageFns"].shape == (5, 1) and raw["qImageFns"].shape == (3, 1)
    assert [x[0] for x in raw["dbImageFns"][:, 0]] == ["images/test/database/" + db_names[i] for i in order]
    np.testing.assert_array_equal(raw["utmDb"], db_utm[:, order])  # 2 decimals: exact
    np.testing.assert_array_equal(raw["utmQ"], q_utm[:, np.argsort(q_names)])
    assert str(raw["whichSet"][0]) == "test"
    # counts and thresholds: doubles stored compactly, as MATLAB stores 10000 as uint16
    assert (raw["numImages"].dtype, raw["numQueries"].dtype, raw["posDistThr"].dtype,
            raw["posDistSqThr"].dtype, raw["nonTrivPosDistSqThr"].dtype) == ("uint8", "uint8", "uint8", "uint16", "uint8")
    assert [int(raw[f][0, 0]) for f in PITTS_FIELDS[5:]] == [5, 3, 25, 625, 100]

    raw, cls = storage(specs / "mine_train.mat")
    assert list(raw.dtype.names) == TM_FIELDS
    assert raw["dbTimeStamp"].dtype == "int32" and cls["dbTimeStamp"].dtype == "float64"
    np.testing.assert_array_equal(raw["dbTimeStamp"], [[[200912, 201306, 200912][i] for i in np.argsort(train_names)]])
    # matnet reads it back as any spec
    db = dbSpec(specs / "mine_test.mat", root)
    assert db.numImages == 5 and os.path.isfile(db.dbPath + db.dbImageFns[0])


def test_dbvpr_image_order_and_listing(tmp_path):
    root = tmp_path / "d"
    db_utm = np.array([[0.0, 10, 20, 30, 40, 50], [0.0, 0, 0, 0, 0, 0]]) + 1000
    db_names, q_names = make_vpr(root, "val", db_utm, db_utm[:, :2] + 1, subdirs=True)
    base = root / "images" / "val" / "database"
    (base / "00" / "notes.txt").write_text("not an image")
    tiny_jpeg(base / ".hidden" / vpr_name(1, 2), 0)                 # glob skips hidden names
    upper = vpr_name(2000, 1000, note="upper")[:-4] + ".JPG"        # extension case-insensitive
    tiny_jpeg(base / upper, 1)
    db = dbVPR(root, "val")
    want = sorted(db_names + [upper])
    assert db.dbImageFns == ["images/val/database/" + n for n in want]
    assert db.numImages == 7 and db.dbPath == str(root) + "/"
    np.testing.assert_array_equal(db.utmDb[:, want.index(upper)], [2000, 1000])
    # the optional list fixes the order (and the set of images)
    (root / "images" / "val" / "database_images_paths.txt").write_text("\n".join(db_names[::-1]) + "\n")
    db = dbVPR(root, "val")
    assert db.dbImageFns == ["images/val/database/" + n for n in db_names[::-1]]
    np.testing.assert_array_equal(db.utmDb, db_utm[:, ::-1])


def pitts_like(root, specs, n_pano=4, n_q=3, seed=0):
    """A pitts30k_test-style spec + images (names NNNNNN_pitchP_yawY.jpg under 000/)."""
    rng = np.random.default_rng(seed)
    db_fns, q_fns = [], []
    utm_db = []
    for p in range(n_pano):
        centre = [584000 + 40 * p + rng.uniform(0, 1), 4477000 + rng.uniform(0, 1)]
        for pitch in (1, 2):
            for yaw in (1, 2):
                db_fns.append(f"000/{800 + p:06d}_pitch{pitch}_yaw{yaw}.jpg")
                utm_db.append(centre)
    for j in range(n_q):
        q_fns.append(f"000/{500 + j:06d}_pitch1_yaw1.jpg")
    for fn in db_fns:
        tiny_jpeg(root / "images" / fn, len(fn))
    for fn in q_fns:
        tiny_jpeg(root / "queries" / fn, len(fn) + 1)
    utm_db = np.array(utm_db).T
    utm_q = utm_db[:, ::4][:, :n_q] + rng.uniform(-3, 3, (2, n_q))
    save_dbstruct(specs / "pitts30k_test.mat", dbstruct_fields("test", db_fns, utm_db, q_fns, utm_q))
    return utm_db, utm_q


def test_export_import_round_trip_pitts(tmp_path):
    root, specs, out = tmp_path / "Pittsburgh", tmp_path / "specs", tmp_path / "vpr"
    specs.mkdir()
    pitts_like(root, specs)
    assert cli(["dataset", "export", "--dataset", "pitts30k_test", "--spec-dir", str(specs), "--root", str(root),
                "--out", str(out)]) == 0
    first = sorted(os.listdir(out / "images" / "test" / "database"))[0]
    assert os.path.islink(out / "images" / "test" / "database" / first)  # symlinks by default
    f = parse_name(first)
    assert (f["zone"], f["letter"], f["pano_id"], f["tile"], f["note"]) == ("17", "T", "000800", "00", "pitch1_yaw1")
    # lat/lon from UTM 17T, as the downloader formats them (Pittsburgh: 40.4 N, 80.0 W)
    assert re.fullmatch(r"040\.4\d{4}", f["lat"]) and re.fullmatch(r"-079\.9\d{4}|-080\.0\d{4}", f["lon"]), f
    new = tmp_path / "new"
    assert cli(["dataset", "import", "vpr", str(out), "--name", "pitts30k", "--spec-dir", str(new)]) == 0
    a, b = load_dbstruct(specs / "pitts30k_test.mat"), load_dbstruct(new / "pitts30k_test.mat")
    assert set(a) == set(b)
    for k in ("whichSet", "numImages", "numQueries", "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr"):
        assert a[k] == b[k], k
    for k in ("utmDb", "utmQ"):  # 2 decimals in the names: within 0.005 m
        assert np.abs(a[k] - b[k]).max() <= 0.005 + 1e-9
    for part, old_root in (("dbImageFns", root / "images"), ("qImageFns", root / "queries")):
        assert [os.path.realpath(out / n) for n in b[part]] == [os.path.realpath(old_root / n) for n in a[part]]
    # --copy writes files; an existing folder needs --force
    with pytest.raises(DbStructError, match="folder exists and is not empty"):
        from matnet.datasets.vpr_export import export_vpr
        export_vpr(specs / "pitts30k_test.mat", root, out, copy=True)
    export_vpr(specs / "pitts30k_test.mat", root, out, copy=True, force=True)
    assert not os.path.islink(out / "images" / "test" / "database" / first)


def test_export_tokyo247_keeps_png_and_panoramas(tmp_path):
    """Tokyo 24/7: PNG database listed as .jpg, 12 cutouts per panorama; the exported
    set with panoramaNMS gives dbTokyo247's recall on the same features."""
    root, specs, out = tmp_path / "Tokyo247", tmp_path / "specs", tmp_path / "vpr"
    rng = np.random.default_rng(3)
    n_pano, n_q = 5, 6
    db_fns, utm_db = [], []
    for p in range(n_pano):
        pid = f"{p:02d}" + "x" * 20
        centre = [381000 + 15.0 * p, 3946000.0]
        for t in range(12):
            fn = f"03814/{centre[0]:.3f}_{centre[1]:.3f}/{pid}_012_{30 * t:03d}.jpg"
            db_fns.append(fn)
            utm_db.append(centre)
            path = root / "images" / fn
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).save(path.with_suffix(".png"))
    q_fns = [f"{10 + j:05d}.jpg" for j in range(n_q)]
    for fn in q_fns:
        tiny_jpeg(root / "query" / fn, 7, size=(20 + 2 * len(fn), 9))
    utm_db = np.array(utm_db).T
    utm_q = np.stack([381000 + rng.uniform(0, 60, n_q), np.full(n_q, 3946000.0)])
    specs.mkdir()
    save_dbstruct(specs / "tokyo247.mat", dbstruct_fields("test", db_fns, utm_db, q_fns, utm_q))
    with warnings.catch_warnings():  # .jpg listed, .png read (reported once per process)
        warnings.simplefilter("ignore")
        assert cli(["dataset", "export", "--spec", str(specs / "tokyo247.mat"), "--root", str(root),  # old spelling
                    "--out", str(out)]) == 0
    names = (out / "images" / "test" / "database_images_paths.txt").read_text().splitlines()
    assert all(n.endswith("@.png") for n in names) and len(names) == 60
    assert parse_name(names[13])["pano_id"] == "01" + "x" * 20 and parse_name(names[13])["tile"] == "01"
    vpr = dbVPR(out, "test", panoramaNMS=True)
    t247 = dbTokyo247(specDir=specs, dbRoot=root)
    assert vpr.cutoutsPerPanorama == 12
    dbF, qF = rng.standard_normal((60, 8)).astype(np.float32), rng.standard_normal((n_q, 8)).astype(np.float32)
    ns = [1, 2, 3, 4, 5]
    r_vpr, all_vpr = testCore(vpr, qF, dbF, recallNs=ns)
    r_t, all_t = testCore(t247, qF, dbF, recallNs=ns)
    np.testing.assert_array_equal(all_vpr, all_t)
    r_plain, _ = testCore(dbVPR(out, "test"), qF, dbF, recallNs=ns)
    assert not np.array_equal(r_plain, r_t)  # the suppression matters on this data


def test_export_tokyo_tm_time_stamps_round_trip(tmp_path):
    root, specs, out = tmp_path / "TokyoTM", tmp_path / "specs", tmp_path / "vpr"
    fns, stamps = [], [200912, 201306, 200912, 201403]
    for i, ts in enumerate(stamps):
        fn = f"--/p{i}/_{ts}/pano{i}xx__{ts}_35.650648_139.706413_{30 * i:03d}_012.jpg"
        tiny_jpeg(root / "images" / fn, i)
        fns.append(fn)
    utm = np.array([[382896.82 + i for i in range(4)], [3946000.0] * 4])
    specs.mkdir()
    save_dbstruct(specs / "tokyoTM_val.mat", dbstruct_fields("val", fns, utm, fns[:2], utm[:, :2],
                                                             dbTimeStamp=stamps, qTimeStamp=stamps[:2]))
    from matnet.datasets.vpr_export import export_vpr
    export_vpr(specs / "tokyoTM_val.mat", root, out, log=lambda *a: None)
    db = dbVPR(out, "val", timeFilter=True)
    np.testing.assert_array_equal(db.dbTimeStamp, stamps)
    f = parse_name(db.dbImageFns[2])
    assert (f["pano_id"], f["timestamp"], f["lat"], f["lon"], f["tile"]) == ("pano2xx", "200912", "35.650648",
                                                                               "139.706413", "02")
    # TokyoTM's rules on the exported set: query 0 (200912) never retrieves images of 200912
    tm = db_from_spec(specs / "tokyoTM_val.mat", root)
    searcher = lambda q, n: (np.tile(np.arange(4), (len(q), 1))[:, :n], np.zeros((len(q), min(n, 4))))
    np.testing.assert_array_equal(db.nnSearchPostprocess(searcher, np.array([0, 1]), 4)[0],
                                  tm.nnSearchPostprocess(searcher, np.array([0, 1]), 4)[0])
    assert [x.tolist() for x in db.nontrivialPosQ(np.array([0, 1]))] == \
        [x.tolist() for x in tm.nontrivialPosQ(np.array([0, 1]))]


def test_dbvpr_and_imported_spec_same_recall(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "street"
    db_utm = np.stack([500000 + np.arange(30) * 7.0, np.full(30, 4400000.0)])
    q_utm = db_utm[:, rng.choice(30, 10, replace=False)] + rng.uniform(-5, 5, (2, 10))
    make_vpr(root, "test", db_utm, q_utm)
    import_specs("vpr", root, "street", tmp_path / "specs", log=lambda *a: None)
    a, b = dbVPR(root, "test"), dbSpec(tmp_path / "specs" / "street_test.mat", root)
    assert a.dbImageFns == b.dbImageFns and a.qImageFns == b.qImageFns
    dbF, qF = rng.standard_normal((30, 16)).astype(np.float32), rng.standard_normal((10, 16)).astype(np.float32)
    ra, alla = testCore(a, qF, dbF, recallNs=[1, 5, 10])
    rb, allb = testCore(b, qF, dbF, recallNs=[1, 5, 10])
    np.testing.assert_array_equal(alla, allb)


# ---------------------------------------------------------------- bad inputs

def test_bad_vpr_inputs(tmp_path):
    root = tmp_path / "bad"
    make_vpr(root, "test", [[0.0, 5.0], [0.0, 0.0]], [[1.0], [0.0]])
    bad = root / "images" / "test" / "database" / "IMG_0001.jpg"
    tiny_jpeg(bad, 0)
    with pytest.raises(VPRFormatError, match=r"IMG_0001.jpg: file name has no UTM"):
        dbVPR(root, "test")
    bad.unlink()
    tiny_jpeg(bad.with_name("@east@4400000@@.jpg"), 0)
    with pytest.raises(VPRFormatError, match=r"@east@4400000@@.jpg: utm_east field 'east' is not a number"):
        dbVPR(root, "test")
    bad.with_name("@east@4400000@@.jpg").unlink()
    with pytest.raises(VPRFormatError, match=r"images/val: split folder not found"):
        dbVPR(root, "val")
    (root / "images" / "val" / "database").mkdir(parents=True)
    (root / "images" / "val" / "queries").mkdir()
    with pytest.raises(VPRFormatError, match=r"images/val/database: no images"):
        dbVPR(root, "val")
    with pytest.raises(VPRFormatError, match=r"images/val/database: no images"):  # import checks all splits first
        import_specs("vpr", root, "bad", tmp_path / "specs")
    assert not (tmp_path / "specs").exists()
    import shutil
    shutil.rmtree(root / "images" / "val")
    listing = root / "images" / "test" / "database_images_paths.txt"
    names = sorted(os.listdir(root / "images" / "test" / "database"))
    listing.write_text("\n".join(names + names[:1]))
    with pytest.raises(VPRFormatError, match=r"database_images_paths.txt: 1 duplicate image paths"):
        dbVPR(root, "test")
    listing.write_text("\n".join(names + ["missing.jpg"]))
    with pytest.raises(VPRFormatError, match=r"database_images_paths.txt: 1 of 3 listed images are not in"):
        dbVPR(root, "test")
    listing.unlink()
    import_specs("vpr", root, "bad", tmp_path / "specs", log=lambda *a: None)
    with pytest.raises(DbStructError, match=r"bad_test.mat: the spec file already exists \(pass --force"):
        import_specs("vpr", root, "bad", tmp_path / "specs")
    import_specs("vpr", root, "bad", tmp_path / "specs", force=True, log=lambda *a: None)


def test_export_labels_on_the_released_names(shared_dir):
    """The export's naming rules hold for every image name of the released specs: Tokyo
    24/7's pano ids group exactly dbTokyo247's blocks of 12 cutouts, Pitts and TokyoTM
    names all parse, and no two exported names collide."""
    from matnet.datasets.tokyo247 import panorama_of
    from matnet.datasets.vpr_export import labels
    s = load_dbstruct(shared_dir / "datasets" / "tokyo247.mat")
    panos = [labels("tokyo247", fn)["pano_id"] for fn in s["dbImageFns"]]
    _, group = np.unique(panos, return_inverse=True)
    ids = np.arange(len(panos))
    # same partition: the first id of each group maps to a distinct block, and back
    assert len(set(zip(group.tolist(), panorama_of(ids).tolist()))) == len(set(group.tolist())) == s["numImages"] // 12
    assert [labels("tokyo247", fn)["tile"] for fn in s["dbImageFns"][:13]] == [f"{t:02d}" for t in range(12)] + ["00"]
    for name, kind in (("pitts30k_test", "pitts"), ("tokyoTM_val", "tokyoTM")):
        s = load_dbstruct(shared_dir / "datasets" / f"{name}.mat")
        for part, ts in (("dbImageFns", s.get("dbTimeStamp")), ("qImageFns", s.get("qTimeStamp"))):
            lab = [labels(kind, fn, None if ts is None else ts[i]) for i, fn in enumerate(s[part])]
            assert all(f.get("pano_id") for f in lab), (name, part)  # every name matched its rule
            keys = {(round(s["utmDb" if part == "dbImageFns" else "utmQ"][0, i], 2), f["pano_id"], f.get("tile"),
                     f.get("note"), f.get("timestamp")) for i, f in enumerate(lab)}
            assert len(keys) == len(lab), (name, part)


def test_utm_inverse_against_the_tokyo_tm_names(shared_dir):
    """TokyoTM's names hold the lat/lon its spec's UTM (zone 54) was computed from."""
    from matnet.datasets.utm_inverse import utm_to_latlon
    s = load_dbstruct(shared_dir / "datasets" / "tokyoTM_val.mat")
    ll = np.array([re.search(r"__\d{6}_(-?[\d.]+)_(-?[\d.]+)_", fn).groups() for fn in s["qImageFns"]], float)
    lat, lon = utm_to_latlon(s["utmQ"][0], s["utmQ"][1], 54)
    assert np.abs(lat - ll[:, 0]).max() < 1e-7 and np.abs(lon - ll[:, 1]).max() < 1e-7  # 6 decimals in the names
    lat, lon = utm_to_latlon([500000.0], [0.0], 31)  # the equator on a central meridian
    np.testing.assert_allclose([lat[0], lon[0]], [0.0, 3.0], atol=1e-12)


# ---------------------------------------------------------------- issue 24: odd inputs

def test_symlink_loop_in_a_vpr_folder_refused(tmp_path):
    """Case 3: a link to a folder above it listed each image ~41 times (16,400 of 400)."""
    root = tmp_path / "d"
    make_vpr(root, "test", [[0.0, 5.0, 10.0], [0.0, 0.0, 0.0]], [[1.0], [0.0]])
    base = root / "images" / "test" / "database"
    (base / "sub").mkdir()
    os.symlink("..", base / "sub" / "loop")
    with pytest.raises(VPRFormatError, match=r"database/sub/loop: a symbolic link to .*database.*loop"):
        dbVPR(root, "test")
    os.unlink(base / "sub" / "loop")
    # a link to a folder outside, reached once: followed, each image once
    outside = tmp_path / "more"
    tiny_jpeg(outside / vpr_name(20.0, 0.0), 3)
    os.symlink(outside, base / "sub" / "more")
    db = dbVPR(root, "test")
    assert db.numImages == 4 and len(set(db.dbImageFns)) == 4
    # the same real folder twice (a second link to it): refused, naming both
    os.symlink(outside, base / "again")
    with pytest.raises(VPRFormatError, match=r"database/sub/more.*database/again|database/again.*database/sub/more"):
        dbVPR(root, "test")


@pytest.mark.parametrize("name, message", [
    ("0584000.00@4477000.00@17@T@@@@@@@@@@@.jpg", r"file name does not start with '@'.*northing would be '4477000.00'"),
    ("@0584000.00@4477000.00@17@T@@@@@@@@@@@x@.jpg", r"file name has 15 fields between .@. signs, the VPR format has 14"),
    ("@nan@4477000.00@17@T@@@@@@@@@@@.jpg", r"utm_east field 'nan' is not a finite number"),
    ("@0584000.00@inf@17@T@@@@@@@@@@@.jpg", r"utm_north field 'inf' is not a finite number"),
    ("@0584000.00@4477000.00@T@17@@@@@@@@@@@.jpg", r"zone field 'T' is not a UTM zone"),
    ("@0584000.00@4477000.00@17@T@40.4.1@@@@@@@@@@.jpg", r"lat field '40.4.1' is not a finite number"),
])
def test_vpr_names_parsed_strictly(tmp_path, name, message):
    """Case 4 (and 14's VPR part): a name without the leading '@' was read with
    northing = the zone (17); NaN/Inf reached scipy with no file named."""
    with pytest.raises(VPRFormatError, match=re.escape(name) + ": " + message):
        parse_name(tmp_path / name)
    root = tmp_path / "d"
    make_vpr(root, "test", [[0.0, 5.0], [0.0, 0.0]], [[1.0], [0.0]])
    tiny_jpeg(root / "images" / "test" / "database" / name, 0)
    with pytest.raises(VPRFormatError, match=re.escape(name) + ": " + message):
        dbVPR(root, "test")


def _char_types(fn):
    """(mat5 data type, decoded text) of every char row in a v5 MAT file written by savemat5."""
    b = payload(fn)
    out = []
    for m in re.finditer(rb"\x06\x00\x00\x00\x08\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00", b):
        i = m.end()  # after the array flags: dims, name, data
        _, n = struct.unpack_from("<II", b, i)
        j = i + 8 + n + (-n % 8)
        j += 8  # empty name
        t, n = struct.unpack_from("<II", b, j)
        if t >> 16:
            t, n, data = t & 0xFFFF, t >> 16, b[j + 4:j + 4 + (t >> 16)]
        else:
            data = b[j + 8:j + 8 + n]
        out.append((t, data.decode("utf-8" if t == 16 else "utf-16-le")))
    return out


def test_non_ascii_names_round_trip(tmp_path):
    """Case 15: names with non-ASCII characters were written as multi-byte UTF-8 with the
    character count as dimensions; matnet's reader cut them short (scipy read them), so
    evaluate said the images were missing.  MATLAB writes char data as UTF-8 only when
    every character is ASCII, as UTF-16 otherwise: so does the writer now."""
    root, specs = tmp_path / "ü", tmp_path / "specs"
    notes = [{"note": n} for n in ("Zürich_été", "京都", "plain", "Ελλάδα")]
    db_names, q_names = make_vpr(root, "test", [[0.0, 5.0, 10.0, 15.0], [0.0] * 4], [[1.0], [0.0]], db_extra=notes)
    assert import_specs("vpr", root, "u", specs, log=lambda *a: None)
    fn = specs / "u_test.mat"
    want = ["images/test/database/" + n for n in sorted(db_names)]
    assert load_dbstruct(fn)["dbImageFns"] == want                          # matnet's reader
    assert [x[0] for x in scipy.io.loadmat(fn)["dbStruct"][0, 0]["dbImageFns"][:, 0]] == want  # scipy
    types = dict((s, t) for t, s in _char_types(fn))
    assert types["images/test/database/" + vpr_name(10.0, 0.0, note="plain")] == 16    # miUTF8
    assert types["images/test/database/" + vpr_name(0.0, 0.0, note="Zürich_été")] == 17  # miUTF16
    db = dbSpec(fn, root)
    assert all(os.path.isfile(db.dbPath + f) for f in db.dbImageFns)        # evaluate finds the images


def test_export_a_spec_imported_from_a_vpr_folder(tmp_path):
    """Case 16: every spec imported from a VPR folder was refused (its names hold '@');
    now the labels of the original names are kept and the round trip is exact."""
    root, specs, out = tmp_path / "mine", tmp_path / "specs", tmp_path / "vpr"
    extra = [{"zone": 17, "letter": "T", "pano_id": "p1", "note": "nx"}, {}, {"heading": "90"}]
    db_names, q_names = make_vpr(root, "test", [[584000.0, 584005.0, 584010.0], [4477000.0] * 3],
                                 [[584001.0], [4477000.0]], db_extra=extra)
    import_specs("vpr", root, "mine", specs, log=lambda *a: None)
    assert cli(["dataset", "export", "--spec", str(specs / "mine_test.mat"), "--root", str(root),
                "--out", str(out)]) == 0
    exported = sorted(os.listdir(out / "images" / "test" / "database"))
    assert exported == sorted(db_names)  # the same names: labels kept, UTM as written
    import_specs("vpr", out, "again", specs, log=lambda *a: None)
    a, b = load_dbstruct(specs / "mine_test.mat"), load_dbstruct(specs / "again_test.mat")
    assert a["dbImageFns"] == b["dbImageFns"] and a["qImageFns"] == b["qImageFns"]
    np.testing.assert_array_equal(a["utmDb"], b["utmDb"])


def test_concurrent_imports_never_replace_each_other(tmp_path, monkeypatch):
    """Case 6: two `dataset import` runs without --force both passed the existence check,
    and one spec silently replaced the other.  Now the write itself refuses."""
    root, specs = tmp_path / "mine", tmp_path / "specs"
    make_vpr(root, "test", [[0.0, 5.0], [0.0, 0.0]], [[1.0], [0.0]])
    from converters import mat5
    real, calls = mat5._named, []

    def other_run_writes_first(*a):  # the other run writes its spec between our checks and our rename
        if not calls:
            calls.append(1)
            save_dbstruct(specs / "mine_test.mat", dbstruct_fields("other", ["x.jpg"], np.zeros((2, 1)), [],
                                                                    np.zeros((2, 0))))
        return real(*a)
    monkeypatch.setattr(mat5, "_named", other_run_writes_first)
    with pytest.raises(DbStructError, match=r"mine_test.mat: the spec file already exists .*another run wrote it"):
        import_specs("vpr", root, "mine", specs, log=lambda *a: None)
    assert load_dbstruct(specs / "mine_test.mat")["whichSet"] == "other"  # the other run's spec is intact
    assert not list(specs.glob("*.matnet-tmp"))
    monkeypatch.undo()
    import_specs("vpr", root, "mine", specs, force=True, log=lambda *a: None)  # --force replaces
    assert load_dbstruct(specs / "mine_test.mat")["whichSet"] == "test"


def test_killed_export_is_not_imported_as_complete(tmp_path, monkeypatch):
    """Case 8: a killed `dataset export` was imported as a smaller dataset (4,776 of 15,000
    queries).  Now the export marks completion last and dbVPR / import refuse the split."""
    root, specs, out = tmp_path / "Pittsburgh", tmp_path / "specs", tmp_path / "vpr"
    specs.mkdir()
    pitts_like(root, specs)
    from matnet.datasets import vpr_export
    calls = []
    real = os.symlink

    def killed_after_20(src, dst):
        calls.append(dst)
        if len(calls) > 10:
            raise KeyboardInterrupt("killed")
        real(src, dst)
    monkeypatch.setattr(vpr_export.os, "symlink", killed_after_20)
    with pytest.raises(KeyboardInterrupt):
        vpr_export.export_vpr(specs / "pitts30k_test.mat", root, out, log=lambda *a: None)
    monkeypatch.undo()
    marker = out / "images" / "test" / "matnet_export.json"
    with pytest.raises(VPRFormatError, match=r"matnet_export.json: the export of .*pitts30k_test.mat into .* did not "
                                             r"finish \(16 database, 3 queries images expected\); rerun"):
        dbVPR(out, "test")
    with pytest.raises(VPRFormatError, match="did not finish"):
        import_specs("vpr", out, "p", tmp_path / "new", log=lambda *a: None)
    vpr_export.export_vpr(specs / "pitts30k_test.mat", root, out, force=True, log=lambda *a: None)
    assert json.loads(marker.read_text())["complete"] is True
    db = dbVPR(out, "test")
    assert (db.numImages, db.numQueries) == (16, 3)


def test_killed_export_temporaries_removed_by_the_next(tmp_path, monkeypatch):
    """Issue 24 case 19 (dataset export): temporaries of a killed export are removed by
    the next export into that folder."""
    root, specs, out = tmp_path / "Pittsburgh", tmp_path / "specs", tmp_path / "vpr"
    specs.mkdir()
    pitts_like(root, specs)
    target = out / "images" / "test" / "database"
    target.mkdir(parents=True)
    (target / "x.jpg.4242-deadbeef.matnet-tmp").write_bytes(b"x")
    lines = []
    from matnet.datasets.vpr_export import export_vpr
    export_vpr(specs / "pitts30k_test.mat", root, out, force=True, log=lines.append)
    assert not list(target.glob("*.matnet-tmp")) and any("removed 1 temporaries" in l for l in lines)
