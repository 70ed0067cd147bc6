"""matnet.feature_files: the sidecars of a feature extraction keep their formats (reuse:
``.done.json``; a rank's shard: ``.shard<r>of<W>.json``; resume: ``.partial.json``) and
the fingerprint tells networks, image lists and precisions apart."""
import json

import numpy as np

from matnet.feature_files import (PartialFeatures, done_path, features_complete, fingerprint, is_complete,
                                  mark_complete)
from matnet.simplenn import SimpleNN
from matnet.synthetic import tiny_net_structs


def test_fingerprint_and_done_sidecar(tmp_path):
    net = SimpleNN.from_structs(tiny_net_structs(), meta={"normalization": {"averageImage": np.zeros((1, 1, 3))}})
    fp = fingerprint(net, "root/", ["a.jpg", "b.jpg"])
    assert fingerprint(net, "root/", ["a.jpg", "b.jpg"], "fast") == fp + "+fast"
    assert fingerprint(net, "root/", ["b.jpg", "a.jpg"]) != fp and fingerprint(net, "other/", ["a.jpg", "b.jpg"]) != fp
    out = tmp_path / "f.bin"
    assert not features_complete(net, "root/", ["a.jpg", "b.jpg"], out)
    out.write_bytes(b"\0" * 8)
    mark_complete(done_path(out), fp, 2)
    assert done_path(out).read_text() == json.dumps({"fingerprint": fp, "images": 2})
    assert features_complete(net, "root/", ["a.jpg", "b.jpg"], out)
    assert not features_complete(net, "root/", ["a.jpg", "b.jpg"], out, "fast")
    assert is_complete(done_path(out), out, fp) and not is_complete(done_path(out), tmp_path / "gone.bin", fp)


def test_partial_features_resume(tmp_path):
    out = tmp_path / "f.bin"
    ck = PartialFeatures(out, "fp", 5)
    assert ck.resume() == 0
    ck.append(np.ones((2, 3), np.float32))
    ck.close()
    assert json.loads((tmp_path / "f.bin.partial.json").read_text()) == {"fingerprint": "fp", "nImages": 5, "D": 3,
                                                                          "done": 2}
    again = PartialFeatures(out, "fp", 5)
    assert again.resume() == 2
    again.append(np.zeros((3, 3), np.float32))
    again.finish(out)
    assert out.stat().st_size == 5 * 3 * 4 and not (tmp_path / "f.bin.partial.json").exists()
    assert PartialFeatures(out, "other", 5).resume() == 0
