"""SumMinTree against brute-force numpy: sums, positive minima and prefix-sum search."""

from __future__ import annotations

import numpy as np
import pytest

from flowrl.replay import SumMinTree


def brute_force_find(leaves: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The leaf whose cumulative-sum interval [c_{i-1}, c_i) holds each value."""
    return np.searchsorted(np.cumsum(leaves.astype(np.float64)), values, side="right")


@pytest.mark.parametrize(("capacity", "branching", "top_size"),
                         [(1, 2, 1), (7, 2, 1), (100, 4, 3), (1000, 16, 8), (5000, 16, 4096),
                          (4097, 8, 16)])
def test_sums_minima_and_search_match_brute_force(capacity, branching, top_size):
    rng = np.random.default_rng(capacity)
    tree = SumMinTree(capacity, branching=branching, top_size=top_size)
    leaves = np.zeros(capacity, np.float32)
    for _ in range(5):  # several rounds of random batched updates, with repeated indexes
        indexes = rng.integers(0, capacity, size=max(1, capacity // 3))
        values = rng.exponential(size=len(indexes)).astype(np.float32)
        tree.set(indexes, values)
        for index, value in zip(indexes, values):  # last value wins, as in the tree
            leaves[index] = value
        np.testing.assert_allclose(tree.total, leaves.sum(dtype=np.float64), rtol=1e-12)
        assert tree.min == pytest.approx(float(leaves[leaves > 0].min()))
        np.testing.assert_array_equal(tree.leaves, leaves)
        queries = np.sort(rng.random(2000)) * tree.total
        np.testing.assert_array_equal(tree.find_prefix_sum(queries),
                                      brute_force_find(leaves, queries))


def test_empty_leaves_are_never_found_and_left_out_of_the_minimum():
    tree = SumMinTree(40, branching=4, top_size=2)
    tree.set(np.array([3, 17, 18, 30]), np.array([2.0, 1.0, 0.5, 4.0]))
    assert tree.min == 0.5
    cumulative = np.array([2.0, 3.0, 3.5, 7.5])
    # Interval ends, values just below them, and values at or past the total.
    queries = np.concatenate([[0.0], cumulative, np.nextafter(cumulative, 0), [7.5, 100.0]])
    found = tree.find_prefix_sum(queries)
    assert set(found.tolist()) <= {3, 17, 18, 30}
    assert found.tolist() == [3, 17, 18, 30, 30, 3, 17, 18, 30, 30, 30]


def test_fill_sets_a_contiguous_range_like_set():
    filled, setted = SumMinTree(300, branching=4, top_size=5), SumMinTree(300, branching=4)
    filled.fill(37, 211, 0.25)
    setted.set(np.arange(37, 211), np.full(174, 0.25))
    np.testing.assert_array_equal(filled.leaves, setted.leaves)
    assert filled.total == setted.total == pytest.approx(174 * 0.25)
    assert filled.min == 0.25
    values = np.linspace(0, filled.total, 50, endpoint=False)
    np.testing.assert_array_equal(filled.find_prefix_sum(values), setted.find_prefix_sum(values))


def test_nbytes_counts_every_level():
    tree = SumMinTree(1_000_000)
    assert 4_000_000 <= tree.nbytes < 5_200_000  # float32 leaves plus ~1/16 in float64 levels


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"capacity": 0}, ValueError, "capacity must be >= 1"),
    ({"capacity": 2.5}, TypeError, "capacity must be an int"),
    ({"capacity": 8, "branching": 6}, ValueError, "power of two"),
    ({"capacity": 8, "branching": 1}, ValueError, "branching must be >= 2"),
])
def test_bad_construction_is_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        SumMinTree(**kwargs)


@pytest.mark.parametrize(("indexes", "values", "error", "message"), [
    (np.array([0, 8]), np.array([1.0, 1.0]), ValueError, r"\[0, 8\)"),
    (np.array([-1]), np.array([1.0]), ValueError, r"\[0, 8\)"),
    (np.array([0.0]), np.array([1.0]), TypeError, "integer"),
    (np.array([0, 1]), np.array([1.0]), ValueError, "one value per index"),
    (np.array([0]), np.array([-1.0]), ValueError, ">= 0"),
    (np.array([0]), np.array([np.nan]), ValueError, "finite"),
    (np.array([0]), np.array([1e39]), ValueError, "float32"),
])
def test_bad_set_is_refused_and_changes_nothing(indexes, values, error, message):
    tree = SumMinTree(8)
    tree.set(np.arange(8), np.arange(1.0, 9.0))
    with pytest.raises(error, match=message):
        tree.set(indexes, values)
    assert tree.total == 36.0
    np.testing.assert_array_equal(tree.leaves, np.arange(1.0, 9.0))


def test_search_needs_a_non_empty_tree_and_valid_values():
    tree = SumMinTree(8)
    with pytest.raises(ValueError, match="empty tree"):
        tree.find_prefix_sum(np.array([0.0]))
    tree.fill(0, 8, 1.0)
    with pytest.raises(ValueError, match="non-negative"):
        tree.find_prefix_sum(np.array([-1.0]))
    with pytest.raises(ValueError, match="1-D"):
        tree.find_prefix_sum(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="start <= stop"):
        tree.fill(5, 3, 1.0)


def test_many_small_writes_between_queries_stay_consistent():
    tree = SumMinTree(5000, branching=4, top_size=16)
    leaves = np.zeros(5000)
    rng = np.random.default_rng(0)
    for step in range(300):  # more writes than the tree lets wait before it refreshes
        start = int(rng.integers(0, 4990))
        tree.fill(start, start + 10, float(step + 1))
        leaves[start:start + 10] = step + 1
    assert len(tree._stale_parents) < 300  # pending work is bounded, not one entry per write
    assert tree.total == pytest.approx(leaves.sum())
    assert tree.min == leaves[leaves > 0].min()
    np.testing.assert_array_equal(tree.find_prefix_sum(np.array([0.0])), [np.argmax(leaves > 0)])
