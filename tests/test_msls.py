"""dbMSLS on small MSLS folders written here (official layout and CSV columns): the rules of
mapillary_sls's evaluation (panoramas and subtask rows out, queries without positives out,
positives within a city) and recall equal to an independent computation of theirs."""
import numpy as np
import pytest

from converters.dbstruct import load_dbstruct
from helpers.dataset_makers import MSLS_POST, make_msls_part, write_csv
from matnet.commands.dataset import import_specs
from matnet.datasets import dbMSLS
from matnet.datasets.msls import MSLSError
from matnet.recall_at_n import testCore


def two_cities(root):
    """cph and sf on the SAME numeric UTM grid (different zones in reality): a positive
    across cities would be found if cities were not kept apart."""
    grid = np.stack([np.arange(6) * 20.0 + 350000, np.full(6, 6170000.0)])
    for city in ("cph", "sf"):
        base = root / "train_val" / city
        make_msls_part(base / "database", [f"{city}_db{i}" for i in range(6)], grid,
                       pano=[False, False, True, False, False, False], subtask_all=[True] * 6)
        q = np.stack([grid[0, [0, 3, 5]] + [3, -4, 400], grid[1, :3]])  # the third is 400 m away
        make_msls_part(base / "query", [f"{city}_q{i}" for i in range(3)], q, night=[True, False, False],
                       subtask_all=[True, True, True] if city == "cph" else [True, False, True])
    return grid


def test_dbmsls_official_rules(tmp_path):
    grid = two_cities(tmp_path)
    with pytest.warns(UserWarning, match=r"1 of 3 in .*cph/query; 1 of 2 in .*sf/query"):
        db = dbMSLS(tmp_path, "val")
    assert db.cities == ["cph", "sf"] and db.numImages == 10 and db.numQueries == 3
    assert db.dbImageFns[:2] == ["train_val/cph/database/images/cph_db0.jpg", "train_val/cph/database/images/cph_db1.jpg"]
    assert "train_val/cph/database/images/cph_db2.jpg" not in db.dbImageFns  # panorama left out
    assert db.qImageFns == ["train_val/cph/query/images/cph_q0.jpg", "train_val/cph/query/images/cph_q1.jpg",
                            "train_val/sf/query/images/sf_q0.jpg"]  # sf_q1 not in subtask 'all', q2 no positive
    np.testing.assert_array_equal(db.utmDb[:, 5], grid[:, 0] + [1e7, 0])  # sf shifted by 1e7 m
    assert db.qCity == ["cph", "cph", "sf"] and db.qNight.tolist() == [True, False, True]
    # positives stay within the city: sf query 0 sits on the grid point of cph's db0
    assert not db.dbPano.any()
    with pytest.warns(UserWarning):
        with_panos = dbMSLS(tmp_path, "val", excludePanos=False)
    assert with_panos.numImages == 12 and with_panos.dbPano.tolist() == [False, False, True, False, False, False] * 2
    assert db.posDb(0).tolist() == [0, 1]  # 20 m apart; not sf_db0 (id 5) at the same numbers
    np.testing.assert_array_equal(db.isPosQ(2, np.arange(10)), [0] * 5 + [1, 1] + [0] * 3)  # 3 and 17 m


def official_recall(root, qF, dbF, ks, thr=25.0):
    """mapillary_sls's im2im evaluation written out directly: per city, keep non-panorama
    rows in subtask 'all', positives within thr in the same city, queries with none
    dropped, then recall@k over the ranking of all database images."""
    import csv
    rows = lambda p: list(csv.DictReader(open(p)))
    db_city, db_xy, q_city, q_xy = [], [], [], []
    for city in ("cph", "sf"):
        for part, city_l, xy_l in (("database", db_city, db_xy), ("query", q_city, q_xy)):
            d = root / "train_val" / city / part
            post, raw, sub = rows(d / "postprocessed.csv"), rows(d / "raw.csv"), rows(d / "subtask_index.csv")
            for p, r, s in zip(post, raw, sub):
                if r["pano"] == "False" and s["all"] == "True":
                    city_l.append(city)
                    xy_l.append((float(p["easting"]), float(p["northing"])))
    db_xy, q_xy = np.array(db_xy), np.array(q_xy)
    pos = [[i for i in range(len(db_xy)) if db_city[i] == q_city[j] and np.hypot(*(db_xy[i] - q_xy[j])) <= thr]
           for j in range(len(q_xy))]
    keep = [j for j in range(len(q_xy)) if pos[j]]
    hits = np.zeros(len(ks))
    for j, qi in enumerate(keep):
        rank = np.argsort(((dbF - qF[j]) ** 2).sum(1), kind="stable")
        for a, k in enumerate(ks):
            hits[a] += np.isin(rank[:k], pos[qi]).any()
    return hits / len(keep)


def test_dbmsls_recall_equals_official(tmp_path):
    two_cities(tmp_path)
    with pytest.warns(UserWarning):
        db = dbMSLS(tmp_path, "val")
    rng = np.random.default_rng(4)
    for trial in range(5):
        dbF = rng.standard_normal((10, 4)).astype(np.float32)
        qF = rng.standard_normal((3, 4)).astype(np.float32)
        ks = [1, 2, 3, 5]
        ours, _ = testCore(db, qF, dbF, recallNs=ks)
        np.testing.assert_allclose(ours, official_recall(tmp_path, qF, dbF, ks))


def test_import_msls_and_bad_inputs(tmp_path):
    two_cities(tmp_path)
    with pytest.warns(UserWarning):
        outs = import_specs("msls", tmp_path, "msls", tmp_path / "specs", log=lambda *a: None)
    assert [o.name for o in outs] == ["msls_val.mat"]
    s = load_dbstruct(outs[0])
    assert s["numImages"] == 10 and s["numQueries"] == 3 and s["whichSet"] == "val"
    assert s["qImageFns"][2] == "train_val/sf/query/images/sf_q0.jpg"
    with pytest.raises(MSLSError, match=r"train_val/nowhere: city folder not found"):
        dbMSLS(tmp_path, "val", cities=["cph", "nowhere"])
    # a CSV without the UTM columns
    post = tmp_path / "train_val" / "sf" / "query" / "postprocessed.csv"
    write_csv(post, [c for c in MSLS_POST if c != "northing"], [[0, "sf_q0", 1.0, "False", "False", "Forward", 0]])
    with pytest.raises(MSLSError, match=r"sf/query/postprocessed.csv: missing column\(s\) northing"):
        dbMSLS(tmp_path, "val")
    with pytest.warns(UserWarning):
        assert dbMSLS(tmp_path, "val", cities=["cph"]).numQueries == 2
    # duplicate keys
    make_msls_part(tmp_path / "train_val" / "sf" / "query", ["k", "k"], np.zeros((2, 2)), subtask_all=[True, True], images=False)
    with pytest.raises(MSLSError, match=r"sf/query/postprocessed.csv: duplicate image key k"):
        dbMSLS(tmp_path, "val")
    with pytest.warns(UserWarning, match=r"cph: no database or no query images left for subtask 's2w'"), \
            pytest.raises(MSLSError, match=r"no database and query images in cities cph for subtask 's2w'"):
        dbMSLS(tmp_path, "val", cities=["cph"], subtask="s2w")
    with pytest.raises(MSLSError, match="whichSet must be train or val"):
        dbMSLS(tmp_path, "test")


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity"])
def test_msls_non_finite_coordinates_named(tmp_path, value):
    """Case 14: NaN/Inf eastings reached scipy's KD-tree, whose message names no file."""
    two_cities(tmp_path)
    post = tmp_path / "train_val" / "sf" / "database" / "postprocessed.csv"
    lines = post.read_text().splitlines()
    cells = lines[3].split(",")
    cells[2] = value
    lines[3] = ",".join(cells)
    post.write_text("\n".join(lines) + "\n")
    with pytest.raises(MSLSError, match=r"sf/database/postprocessed.csv: row 3 \(line 4\), column easting: "
                                        + f"'{value}' is not a finite number"):
        dbMSLS(tmp_path, "val")


def test_msls_csv_encodings(tmp_path):
    """Case 14: a UTF-8 byte-order mark made the first column '\\ufeff' (invisible in the
    message); a cp1252 file gave a UnicodeDecodeError naming no file."""
    two_cities(tmp_path)
    post = tmp_path / "train_val" / "cph" / "query" / "postprocessed.csv"
    text = post.read_text()
    no_index = "".join(line.split(",", 1)[1] + "\n" for line in text.splitlines())  # "key" first
    post.write_bytes(b"\xef\xbb\xbf" + no_index.encode())
    with pytest.warns(UserWarning):
        assert dbMSLS(tmp_path, "val").numQueries == 3  # read as utf-8-sig
    raw = tmp_path / "train_val" / "cph" / "query" / "raw.csv"
    post.write_text(text)
    raw.write_bytes(raw.read_bytes().replace(b"2016-06-01", b"2016-06-01 caf\xe9", 1))  # cp1252 e-acute
    with pytest.raises(MSLSError, match=r"cph/query/raw.csv: not UTF-8 text \(line 2, byte \d+: b'\\xe9'\); save it as UTF-8"):
        dbMSLS(tmp_path, "val")


def test_msls_cities_from_the_command_line(tmp_path):
    """Case 17: `evaluate msls:ROOT` with only some official cities asked for `cities=`,
    which the command cannot give; now the message gives the dataset text that works,
    and msls:ROOT:split:city,city selects them."""
    from matnet.datasets import parse_dataset
    two_cities(tmp_path)
    import shutil
    shutil.rmtree(tmp_path / "train_val" / "sf")
    with pytest.raises(MSLSError, match=rf"train_val/sf: city folder not found; name the cities you have: "
                                        rf"msls:{tmp_path}:val:cph on the command line"):
        parse_dataset(f"msls:{tmp_path}")
    with pytest.warns(UserWarning):
        db = parse_dataset(f"msls:{tmp_path}:val:cph")
    assert db.cities == ["cph"] and db.numQueries == 2
