"""PrioritizedReplayBuffer: sampling frequencies, importance weights and priority updates."""

from __future__ import annotations

import numpy as np
import pytest

from flowrl.data.sample_batch import SampleBatch
from flowrl.replay import PrioritizedReplayBuffer

# The 0.999 quantile of the chi-square distribution with 7 degrees of freedom (8 rows). Stratified
# sampling has less variance than independent draws, so the test is conservative.
CHI_SQUARE_7_DOF_999 = 24.32


def rows(count: int, start: int = 0) -> SampleBatch:
    ids = np.arange(start, start + count)
    return SampleBatch({"obs": ids[:, None].astype(np.float32), "actions": ids})


def frequencies(buffer: PrioritizedReplayBuffer, draws: int = 200_000) -> np.ndarray:
    slots = np.concatenate([buffer.sample(1000)["batch_indexes"] for _ in range(draws // 1000)])
    return np.bincount(slots, minlength=len(buffer)) / len(slots)


def assert_frequencies_match(observed: np.ndarray, expected: np.ndarray, draws: int = 200_000):
    counts, expected_counts = observed * draws, expected * draws
    chi_square = float(((counts - expected_counts) ** 2 / expected_counts).sum())
    assert chi_square < CHI_SQUARE_7_DOF_999, (observed, expected)


def test_rows_are_drawn_in_proportion_to_priority_to_the_alpha():
    buffer = PrioritizedReplayBuffer(capacity=8, alpha=0.7, eps=1e-6, seed=0)
    buffer.add(rows(8))
    priorities = np.array([0.1, 0.5, 1.0, 2.0, 4.0, 0.3, 8.0, 1.5])
    buffer.update_priorities(np.arange(8), priorities)
    expected = (priorities + 1e-6) ** 0.7
    assert_frequencies_match(frequencies(buffer), expected / expected.sum())


def test_sample_columns_and_row_alignment():
    buffer = PrioritizedReplayBuffer(capacity=8, seed=0)
    buffer.add(rows(8))
    batch = buffer.sample(64)
    assert batch.columns == ["obs", "actions", "weights", "batch_indexes"]
    assert batch["weights"].dtype == np.float32 and batch["weights"].shape == (64,)
    assert batch["batch_indexes"].dtype == np.int64
    # Slot i holds row i here, so every column must agree with batch_indexes row by row.
    np.testing.assert_array_equal(batch["actions"], batch["batch_indexes"])
    np.testing.assert_array_equal(batch["obs"][:, 0], batch["batch_indexes"])


@pytest.mark.parametrize("beta", [0.0, 0.4, 1.0])
def test_importance_weights_follow_the_paper_formula(beta):
    alpha, eps = 0.6, 1e-3
    buffer = PrioritizedReplayBuffer(capacity=10, alpha=alpha, beta=0.5, eps=eps, seed=2)
    buffer.add(rows(6))
    priorities = np.array([0.2, 3.0, 1.0, 0.05, 7.0, 2.5])
    buffer.update_priorities(np.arange(6), priorities)
    batch = buffer.sample(200, beta=beta)

    # By hand: P(i) = p_i^a / sum p^a; w_i = (N P(i))^-b / max_j (N P(j))^-b, with N stored rows.
    scaled = (priorities + eps) ** alpha
    probability = scaled / scaled.sum()
    n = 6
    max_weight = (n * probability.min()) ** -beta
    expected = (n * probability[batch["batch_indexes"]]) ** -beta / max_weight
    np.testing.assert_allclose(batch["weights"], expected, rtol=1e-5)
    assert batch["weights"].max() <= 1.0


def test_beta_can_be_changed_on_the_buffer_or_per_call():
    buffer = PrioritizedReplayBuffer(capacity=4, alpha=1.0, beta=0.4, eps=0.0, seed=0)
    buffer.add(rows(4))
    buffer.update_priorities(np.arange(4), np.array([1.0, 2.0, 4.0, 8.0]))
    assert buffer.sample(50, beta=0.0)["weights"].tolist() == [1.0] * 50
    buffer.beta = 1.0
    batch = buffer.sample(50)
    np.testing.assert_allclose(batch["weights"], 1.0 / 2.0 ** batch["batch_indexes"], rtol=1e-6)
    assert buffer.beta == 1.0 and buffer.stats()["beta"] == 1.0
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        buffer.beta = -0.1
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        buffer.sample(5, beta=float("nan"))
    assert buffer.beta == 1.0


def test_new_rows_enter_with_the_largest_priority_seen():
    buffer = PrioritizedReplayBuffer(capacity=8, alpha=0.5, eps=0.0, seed=0)
    buffer.add(rows(2))
    assert buffer.max_priority == 1.0
    np.testing.assert_allclose(buffer.get_state()["priority_alpha"], [1.0, 1.0])
    buffer.update_priorities(np.array([0, 1]), np.array([9.0, 0.25]))
    buffer.update_priorities(np.array([0]), np.array([0.5]))  # lowering keeps the maximum seen
    assert buffer.max_priority == 9.0 and buffer.stats()["max_priority"] == 9.0
    buffer.add(rows(2, start=2))
    np.testing.assert_allclose(buffer.get_state()["priority_alpha"],
                               [0.5**0.5, 0.25**0.5, 3.0, 3.0], rtol=1e-6)
    stats = buffer.stats()
    assert stats["priority_alpha_sum"] == pytest.approx(0.5**0.5 + 0.5 + 6.0)
    assert stats["priority_alpha_min"] == pytest.approx(0.5)


def test_updating_priorities_changes_sampling_frequencies():
    buffer = PrioritizedReplayBuffer(capacity=8, alpha=1.0, eps=0.0, seed=5)
    buffer.add(rows(8))
    assert_frequencies_match(frequencies(buffer), np.full(8, 1 / 8))
    buffer.update_priorities(np.array([3, 6]), np.array([8.0, 0.5]))
    expected = np.array([1, 1, 1, 8, 1, 1, 0.5, 1]) / 14.5
    assert_frequencies_match(frequencies(buffer), expected)


def test_repeated_indexes_keep_the_last_priority():
    buffer = PrioritizedReplayBuffer(capacity=4, alpha=1.0, eps=0.0)
    buffer.add(rows(4))
    buffer.update_priorities(np.array([2, 1, 2, 2]), np.array([5.0, 3.0, 7.0, 0.5]))
    np.testing.assert_allclose(buffer.get_state()["priority_alpha"], [1.0, 3.0, 0.5, 1.0])
    assert buffer.max_priority == 7.0


def test_overwritten_slots_take_the_max_priority_again():
    buffer = PrioritizedReplayBuffer(capacity=3, alpha=1.0, eps=0.0)
    buffer.add(rows(3))
    buffer.update_priorities(np.arange(3), np.array([0.5, 2.0, 0.25]))
    buffer.add(rows(1, start=3))  # overwrites slot 0
    np.testing.assert_allclose(buffer.get_state()["priority_alpha"], [2.0, 2.0, 0.25])


@pytest.mark.parametrize(("indexes", "priorities", "error", "message"), [
    (np.array([0, 5]), np.array([1.0, 1.0]), ValueError, r"filled slots in \[0, 5\)"),
    (np.array([-1]), np.array([1.0]), ValueError, r"filled slots in \[0, 5\)"),
    (np.array([0.0, 1.0]), np.array([1.0, 1.0]), TypeError, "1-D integer array"),
    (np.array([[0]]), np.array([[1.0]]), TypeError, "1-D integer array"),
    (np.array([0, 1]), np.array([1.0]), ValueError, "one priority per index"),
    (np.array([0, 1]), np.array([1.0, -0.5]), ValueError, r"finite and >= 0.*-0.5"),
    (np.array([0, 1]), np.array([np.nan, 1.0]), ValueError, "finite and >= 0"),
    (np.array([0, 1]), np.array([1.0, np.inf]), ValueError, "finite and >= 0"),
    (np.array([0]), np.array([1e300]), ValueError, "overflows float32"),
])
def test_bad_priority_updates_are_refused_and_change_nothing(indexes, priorities, error, message):
    buffer = PrioritizedReplayBuffer(capacity=8, alpha=1.0, seed=0)
    buffer.add(rows(5))
    buffer.update_priorities(np.arange(5), np.arange(1.0, 6.0))
    before = buffer.get_state()
    with pytest.raises(error, match=message):
        buffer.update_priorities(indexes, priorities)
    after = buffer.get_state()
    np.testing.assert_array_equal(after["priority_alpha"], before["priority_alpha"])
    assert after["max_priority"] == before["max_priority"] and len(buffer) == 5


def test_priority_overflow_is_refused_for_any_alpha():
    buffer = PrioritizedReplayBuffer(capacity=4, alpha=2.0)
    buffer.add(rows(2))
    with pytest.raises(ValueError, match="overflows float32"):
        buffer.update_priorities(np.array([0]), np.array([1e300]))
    buffer.update_priorities(np.array([0]), np.array([1e18]))  # (1e18)^2 fits in float32
    assert buffer.max_priority == pytest.approx(1e18)


def test_zero_priority_needs_a_positive_eps():
    buffer = PrioritizedReplayBuffer(capacity=4, eps=0.0)
    buffer.add(rows(2))
    with pytest.raises(ValueError, match="use eps > 0"):
        buffer.update_priorities(np.array([0]), np.array([0.0]))
    with_eps = PrioritizedReplayBuffer(capacity=4, alpha=1.0, eps=1e-6)
    with_eps.add(rows(2))
    with_eps.update_priorities(np.array([0]), np.array([0.0]))
    np.testing.assert_allclose(with_eps.get_state()["priority_alpha"], [1e-6, 1.0], rtol=1e-6)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"alpha": -0.1}, ValueError, "alpha must be a finite number >= 0"),
    ({"beta": -1.0}, ValueError, "beta must be a finite number >= 0"),
    ({"eps": -1e-6}, ValueError, "eps must be a finite number >= 0"),
    ({"alpha": float("inf")}, ValueError, "alpha must be a finite number"),
    ({"alpha": "0.6"}, TypeError, "alpha must be a number"),
    ({"capacity": 0}, ValueError, "capacity"),
])
def test_bad_construction_is_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        PrioritizedReplayBuffer(**{"capacity": 8, **kwargs})


def test_alpha_zero_samples_uniformly_whatever_the_priorities():
    buffer = PrioritizedReplayBuffer(capacity=8, alpha=0.0, seed=1)
    buffer.add(rows(8))
    buffer.update_priorities(np.arange(8), np.arange(1.0, 9.0) ** 3)
    assert_frequencies_match(frequencies(buffer), np.full(8, 1 / 8))
    assert buffer.sample(10)["weights"].tolist() == [1.0] * 10


def test_restoring_needs_the_same_alpha_and_changes_nothing_otherwise():
    source = PrioritizedReplayBuffer(capacity=4, alpha=0.6)
    source.add(rows(4))
    target = PrioritizedReplayBuffer(capacity=4, alpha=0.7)
    with pytest.raises(ValueError, match="alpha=0.6, this buffer alpha=0.7"):
        target.set_state(source.get_state())
    assert len(target) == 0
    bad = {**source.get_state(), "priority_alpha": np.array([1.0, -1.0, 1.0, 1.0])}
    with pytest.raises(ValueError, match="4 positive values"):
        PrioritizedReplayBuffer(capacity=4, alpha=0.6).set_state(bad)
