"""The whole reference-harness path on data made here: a released-format network file
(v7.3, classdef NetVLAD layers, WPCA), JPEG images, a dbStruct spec with UTMs.  The
recall it reports must equal the recall computed independently from the same features."""
import json

import numpy as np
import torch
from PIL import Image

from converters.bin_features import read_bin
from converters.matfile import savemat
from converters.network import save_net
from matnet import SimpleNN
from matnet.layers import layerWholeL2Normalize
from reference.harness import RECALL_NS, run_reference
from helpers.released_format import released_format_net, rng

D, K, OUT = 8, 4, 12


def write_dataset(root, spec_dir, n_db=24, n_q=10):
    (root / "images").mkdir(parents=True)
    (root / "queries").mkdir()
    places = rng.integers(0, 255, (n_db, 24, 32, 3), dtype=np.uint8)
    db_fns, q_fns = [], []
    for i, im in enumerate(places):
        fn = f"{i // 10:03d}/db{i:04d}.jpg"
        (root / "images" / fn).parent.mkdir(exist_ok=True)
        Image.fromarray(im).save(root / "images" / fn, quality=95)
        db_fns.append(fn)
    utm_db = np.stack([np.arange(n_db) * 12.0 + 500000, np.full(n_db, 4.4e6)])  # 12 m apart on a line
    q_of = rng.choice(n_db, n_q, replace=False)
    for j, i in enumerate(q_of):
        noisy = np.clip(places[i].astype(int) + rng.integers(-40, 40, places[i].shape), 0, 255).astype(np.uint8)
        fn = f"q{j:04d}.jpg"
        Image.fromarray(noisy).save(root / "queries" / fn, quality=90)
        q_fns.append(fn)
    utm_q = utm_db[:, q_of] + rng.uniform(-6, 6, (2, n_q))
    spec = dict(whichSet="test", dbImageFns=[[f] for f in db_fns], utmDb=utm_db,
                qImageFns=[[f] for f in q_fns], utmQ=utm_q, numImages=np.uint16(n_db), numQueries=np.uint16(n_q),
                posDistThr=np.uint8(25), posDistSqThr=np.uint16(625), nonTrivPosDistSqThr=np.uint8(100))
    savemat(spec_dir / "pitts30k_test.mat", {"dbStruct": spec}, format="5")
    return utm_db, utm_q


def independent_recall(db_feats, q_feats, utm_db, utm_q, ns, crop=0):
    if crop:
        db_feats = db_feats[:, :crop] / np.linalg.norm(db_feats[:, :crop], axis=1, keepdims=True)
        q_feats = q_feats[:, :crop] / np.linalg.norm(q_feats[:, :crop], axis=1, keepdims=True)
    hits = np.zeros(len(ns))
    for j in range(len(q_feats)):
        order = np.argsort(((db_feats - q_feats[j]) ** 2).sum(1), kind="stable")
        pos = ((utm_db - utm_q[:, [j]]) ** 2).sum(0) <= 25 ** 2
        first = np.flatnonzero(pos[order])
        for a, n in enumerate(ns):
            hits[a] += first.size > 0 and first[0] < n
    return hits / len(q_feats)


def test_harness_end_to_end(tmp_path, capsys):
    net = released_format_net().eval()
    net_file = save_net(net, tmp_path / "tiny_released.mat")  # v7.3 with classdef layers
    spec_dir, db_root, out = tmp_path / "specs", tmp_path / "Pittsburgh", tmp_path / "out"
    spec_dir.mkdir()
    utm_db, utm_q = write_dataset(db_root, spec_dir)

    record = run_reference(net_file, "pitts30k_test", dims=[OUT, 5], specDir=spec_dir, dbRoot=db_root,
                           outDir=out, useGPU=False, batchSize=4)
    printed = capsys.readouterr().out
    assert "24/24 images present" in printed and "estimated extraction time" in printed

    db_feats = read_bin(out / "tiny_released_pitts30k_test_db.bin", D=OUT)
    q_feats = read_bin(out / "tiny_released_pitts30k_test_q.bin", D=OUT)
    # the features are the network's output on the mean-subtracted images
    im = np.asarray(Image.open(db_root / "images" / "000/db0003.jpg"), np.float32) - np.array([120, 110, 100])
    with torch.no_grad():
        want = net(torch.as_tensor(im, dtype=torch.float32).permute(2, 0, 1)[None]).reshape(-1).numpy()
    np.testing.assert_allclose(db_feats[3], want, rtol=1e-4, atol=1e-5)

    on_disk = json.loads((out / "tiny_released_pitts30k_test_matlab_recall.json").read_text())
    assert (out / "tiny_released_pitts30k_test_matlab_recall.png").stat().st_size > 1000
    for res, crop in zip(on_disk["results"], [0, 5]):
        assert res["cropToDim"] == crop
        want = independent_recall(db_feats, q_feats, utm_db, utm_q, RECALL_NS, crop)
        np.testing.assert_allclose(res["recall"], want)
        assert res["counts"] == [int(round(r * 10)) for r in want]
    assert record["results"][0]["recall"] == on_disk["results"][0]["recall"]


def test_harness_reports_missing_images_before_compute(tmp_path):
    import pytest
    from reference.harness import ReferenceError_
    net_file = save_net(released_format_net(), tmp_path / "n.mat")
    spec_dir, db_root = tmp_path / "specs", tmp_path / "Pittsburgh"
    spec_dir.mkdir()
    write_dataset(db_root, spec_dir)
    (db_root / "images" / "001" / "db0012.jpg").unlink()
    (db_root / "images" / "001" / "db0013.jpg").rename(db_root / "images" / "001" / "db0013.png")
    with pytest.raises(ReferenceError_, match=r"1 database and 0 query images .* missing.*db0012"):
        run_reference(net_file, "pitts30k_test", specDir=spec_dir, dbRoot=db_root, outDir=tmp_path / "o",
                      useGPU=False)
    assert not (tmp_path / "o" / "n_pitts30k_test_db.bin").exists()


def test_reference_without_data_says_what_is_unset(tmp_path, monkeypatch, capsys):
    """No placeholder: the unset variable/flag, the files looked for, the authors' project page."""
    from matnet.cli import main
    monkeypatch.delenv("MATNET_REFERENCE_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    page = "www.di.ens.fr/willow/research/netvlad/"
    assert main(["reference", "--net", "vd16_pitts30k", "--dataset", "pitts30k_test"]) == 1
    err = capsys.readouterr().err
    assert "neither --data-root nor $MATNET_REFERENCE_ROOT is set" in err and "looked for vd16_pitts30k" in err
    assert page in err and "<" not in err
    monkeypatch.setenv("MATNET_REFERENCE_ROOT", str(tmp_path / "ref"))
    assert main(["reference", "--net", "vd16", "--dataset", "tokyo247"]) == 1
    err = capsys.readouterr().err
    assert f"looked for vd16 and {tmp_path / 'ref' / 'networks' / 'vd16.mat'}" in err
    assert "($MATNET_REFERENCE_ROOT)" in err and page in err and "<" not in err
    net = save_net(SimpleNN([layerWholeL2Normalize("postL2")]), tmp_path / "n.mat")
    assert main(["reference", "--net", str(net), "--dataset", "tokyo247", "--data-root", str(tmp_path / "r2")]) == 1
    err = capsys.readouterr().err
    assert f"dataset spec 'tokyo247' not found; looked for {tmp_path / 'r2' / 'datasets' / 'tokyo247.mat'}" in err
    assert "(--data-root)" in err and page in err and "<" not in err
