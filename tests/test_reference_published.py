"""The published table agrees with itself and with ../shared/reference-numbers.md."""
import re

from reference.published import published


def test_counts_are_consistent_with_recall():
    rows = published()
    assert rows
    for r in rows:
        if r.count is not None:
            # a derived count must reproduce the verbatim percentage to its printed precision
            assert abs(100 * r.count / r.num_queries - r.recall) < 0.01, r
        assert 0 < r.recall <= 100


def test_recall_is_monotone_in_n():
    by_key = {}
    for r in published(targets_only=True):
        by_key.setdefault((r.network, r.dims, r.test_set), []).append((r.n, r.recall))
    assert len(by_key) == 6
    for pairs in by_key.values():
        pairs.sort()
        assert [n for n, _ in pairs] == [1, 5, 10, 20, 50, 100]
        assert all(a[1] <= b[1] for a, b in zip(pairs, pairs[1:]))


def test_every_target_figure_appears_in_the_shared_source(shared_dir):
    text = (shared_dir / "reference-numbers.md").read_text()
    for r in published(targets_only=True):
        assert f"{r.recall:.3f}" in text, r
    pitts = published(test_set="pitts250k_test", dims=4096)
    assert re.search(r"7117/7717/7877 of 8280", text) and [r.count for r in pitts[:3]] == [7117, 7717, 7877]
