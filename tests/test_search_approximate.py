"""searchMethod (faiss) in testFromFn: an exhaustive index gives the exact recall, IVF-PQ
reports its recall next to the exact one on a query sample; bad methods and parameters."""
import numpy as np
import pytest

from converters.bin_features import write_bin
from matnet.search.approximate import factory_string
from matnet.recall_at_n import testFromFn
from helpers.dataset_makers import make_db, street_positions

pytest.importorskip("faiss")


@pytest.fixture
def street(tmp_path):
    nDb, nQ, D = 1500, 60, 32
    rng, utmDb, utmQ = street_positions(3, nDb, nQ, 600)
    basis = rng.standard_normal((2, D))
    dbFeat = (utmDb.T / 60 @ basis + 1.2 * rng.standard_normal((nDb, D))).astype(np.float32)
    qFeat = (utmQ.T / 60 @ basis + 1.2 * rng.standard_normal((nQ, D))).astype(np.float32)
    write_bin(tmp_path / "db.bin", dbFeat)
    write_bin(tmp_path / "q.bin", qFeat)
    return make_db(tmp_path, utmDb, utmQ), tmp_path


NS = [1, 5, 10, 20]


@pytest.mark.parametrize("method,params", [("flat", None), ("IVF8,Flat", {"nprobe": 8})])
def test_exhaustive_indexes_give_the_exact_recall(street, method, params):
    db, d = street
    exact, _, allExact, _ = testFromFn(db, d / "db.bin", d / "q.bin", recallNs=NS)
    rec, _, allRec, opts = testFromFn(db, d / "db.bin", d / "q.bin", recallNs=NS, searchMethod=method,
                                      searchParams=params, searchCheckSample=30)
    np.testing.assert_array_equal(allRec, allExact)
    check = opts["searchCheck"]
    assert check["queries"] == 30 and check["approximate"] == check["exact"]
    assert 0 < exact[0] < 1


def test_ivfpq_reports_its_recall_next_to_exact(street, capsys, monkeypatch):
    import matnet.search.memory as memory
    monkeypatch.setattr(memory, "WORKING_SET", 0)  # a tiny cap on a tiny file: chunking, not memory
    db, d = street
    exact, _, _, _ = testFromFn(db, d / "db.bin", d / "q.bin", recallNs=NS)
    rec, _, _, opts = testFromFn(db, d / "db.bin", d / "q.bin", recallNs=NS, searchMethod="ivfpq",
                                 searchParams={"nlist": 16, "m": 8, "nbits": 4, "nprobe": 4}, searchCheckSample=60,
                                 memoryCap=120_000)  # streamed: the index is built chunk by chunk
    check = opts["searchCheck"]
    assert check["index"] == "IVF16,PQ8x4" and check["queries"] == 60
    np.testing.assert_allclose(check["exact"], exact)          # all 60 queries sampled: the exact run
    np.testing.assert_allclose(check["approximate"], rec)
    assert np.all(np.abs(np.asarray(rec) - exact) <= 0.25)     # compressed, yet close
    assert "vs exact on 60 sampled queries" in capsys.readouterr().out


def test_bad_methods_and_parameters(street):
    db, d = street
    with pytest.raises(ValueError, match="searchMethod 'IVF,Nonsense'"):
        testFromFn(db, d / "db.bin", d / "q.bin", searchMethod="IVF,Nonsense")
    with pytest.raises(ValueError, match="searchParams: unknown nprob"):
        testFromFn(db, d / "db.bin", d / "q.bin", searchMethod="ivfpq", searchParams={"nprob": 3})
    assert factory_string("ivfpq", 10_000, 4096, {}) == "IVF400,PQ256x8"
    assert factory_string("ivfpq", 100, 30, {"m": 4}) == "IVF40,PQ3x8"  # m rounded to a divisor of D


def test_gpu_index_falls_back_to_the_cpu(monkeypatch):
    """With faiss-gpu (faked here): an index faiss cannot move to the GPU (HNSW, large PQ
    codes) stays on the CPU with a warning; a k above faiss-gpu's limit, or one an older
    faiss-gpu refuses, is searched on the CPU copy."""
    import faiss

    from matnet.search import approximate
    rng = np.random.default_rng(0)
    db = rng.standard_normal((300, 16)).astype(np.float32)
    q = rng.standard_normal((5, 16)).astype(np.float32)
    ref = approximate.FaissSearcher(q, db, "flat")([0, 1, 2], 10)

    class FakeGpu:
        def __init__(self, cpu, fail_k):
            self.cpu, self.fail_k, self.calls = cpu, fail_k, []

        def search(self, x, k):
            self.calls.append(k)
            if k > self.fail_k:
                raise RuntimeError("Error: 'k <= GPU_MAX_SELECTION_K' failed")
            return self.cpu.search(x, k)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1, raising=False)
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: object(), raising=False)

    def refuse(res, dev, index):
        raise RuntimeError("Error: not implemented for this type of index")
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", refuse, raising=False)
    with pytest.warns(UserWarning, match="cannot move index 'Flat' to the GPU.*searching on the CPU"):
        s = approximate.FaissSearcher(q, db, "flat", useGPU=True)
    assert s.gpu_index is None
    np.testing.assert_array_equal(s([0, 1, 2], 10)[0], ref[0])
    fakes = []
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", lambda res, dev, index: fakes.append(FakeGpu(index, 20))
                        or fakes[-1], raising=False)
    s = approximate.FaissSearcher(q, db, "flat", useGPU=True)
    np.testing.assert_array_equal(s([0, 1, 2], 10)[0], ref[0])
    assert s([0], 50)[0].shape == (1, 50)
    big = s([0], approximate.GPU_MAX_K + 1)[0]  # faiss pads the rows past N with -1
    assert big.shape == (1, approximate.GPU_MAX_K + 1) and (big[0, :300] >= 0).all() and (big[0, 300:] == -1).all()
    assert fakes[0].calls == [10, 50]  # 50: refused by the "GPU", answered by the CPU copy; 2049: never asked
