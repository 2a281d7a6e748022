"""ReplayBuffer: ring storage, uniform sampling, copies, bad input, and saved state."""

from __future__ import annotations

import numpy as np
import pytest

from flowrl.data.sample_batch import SampleBatch
from flowrl.replay import PrioritizedReplayBuffer, ReplayBuffer


def transitions(start: int, stop: int) -> SampleBatch:
    """Rows numbered start..stop-1; every column encodes the row number."""
    ids = np.arange(start, stop)
    return SampleBatch({
        "obs": np.stack([ids, -ids], axis=1).astype(np.float32),
        "actions": ids.astype(np.int64),
        "rewards": (ids * 0.5).astype(np.float32),
        "terminateds": ids % 3 == 0,
    })


def stored_rows(buffer: ReplayBuffer) -> list[int]:
    """The row numbers in the ring, slot by slot."""
    return buffer.get_state()["column/actions"].tolist()


def test_ring_wraps_around_and_overwrites_the_oldest_rows_first():
    buffer = ReplayBuffer(capacity=5, seed=0)
    buffer.add(transitions(0, 3))
    assert len(buffer) == 3 and stored_rows(buffer) == [0, 1, 2]
    buffer.add(transitions(3, 7))  # slots 3, 4, then wraps to 0, 1
    assert len(buffer) == 5 and stored_rows(buffer) == [5, 6, 2, 3, 4]
    buffer.add(transitions(7, 8))
    assert stored_rows(buffer) == [5, 6, 7, 3, 4]
    assert set(buffer.sample(500)["actions"].tolist()) == {3, 4, 5, 6, 7}


def test_a_batch_larger_than_the_capacity_keeps_its_last_rows():
    buffer = ReplayBuffer(capacity=4, seed=0)
    buffer.add(transitions(0, 2))
    buffer.add(transitions(100, 110))
    # Slots as if all 12 rows had been written one by one: the k-th row added is in slot k % 4.
    assert stored_rows(buffer) == [106, 107, 108, 109]  # rows k = 8..11
    assert buffer.stats()["added_count"] == 12
    buffer.add(transitions(200, 201))
    assert stored_rows(buffer) == [200, 107, 108, 109]  # k = 12


def test_sample_has_the_stored_columns_shapes_dtypes_and_consistent_rows():
    buffer = ReplayBuffer(capacity=10, seed=1)
    buffer.add(transitions(0, 10))
    batch = buffer.sample(32)
    assert isinstance(batch, SampleBatch) and len(batch) == 32
    assert batch.columns == ["obs", "actions", "rewards", "terminateds"]
    assert batch["obs"].shape == (32, 2) and batch["obs"].dtype == np.float32
    assert batch["actions"].dtype == np.int64 and batch["terminateds"].dtype == bool
    ids = batch["actions"]
    np.testing.assert_array_equal(batch["obs"][:, 1], -ids)  # columns stay aligned by row
    np.testing.assert_array_equal(batch["rewards"], ids * 0.5)
    np.testing.assert_array_equal(batch["terminateds"], ids % 3 == 0)


def test_later_batches_are_cast_to_the_stored_dtypes():
    buffer = ReplayBuffer(capacity=10)
    buffer.add(transitions(0, 2))
    wider = transitions(2, 4)
    wider["rewards"] = wider["rewards"].astype(np.float64)
    wider["actions"] = wider["actions"].astype(np.int32)
    buffer.add(wider)
    batch = buffer.sample(8)
    assert batch["rewards"].dtype == np.float32 and batch["actions"].dtype == np.int64


def test_uniform_sampling_draws_every_row_equally_often():
    buffer = ReplayBuffer(capacity=8, seed=3)
    buffer.add(transitions(0, 8))
    draws = np.concatenate([buffer.sample(1000)["actions"] for _ in range(100)])
    counts = np.bincount(draws, minlength=8)
    expected = len(draws) / 8
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert chi_square < 24.32, counts  # the 0.999 quantile of chi-square with 7 dof
    # Rows come out in random order, not sorted by slot.
    assert not np.all(np.diff(buffer.sample(64)["actions"]) >= 0)


@pytest.mark.parametrize("buffer_class", [ReplayBuffer, PrioritizedReplayBuffer])
def test_equal_seeds_give_equal_samples(buffer_class):
    def draws(seed):
        buffer = buffer_class(capacity=50, seed=seed)
        buffer.add(transitions(0, 50))
        return [buffer.sample(16)["actions"].tolist() for _ in range(3)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


@pytest.mark.parametrize("buffer_class", [ReplayBuffer, PrioritizedReplayBuffer])
def test_buffer_copies_rows_in_and_out(buffer_class):
    source = transitions(0, 6)
    buffer = buffer_class(capacity=6, seed=0)
    buffer.add(source)
    for array in source.values():
        assert not any(np.shares_memory(array, column) for column in buffer._ring.columns.values())
        array[...] = 0 if array.dtype != bool else False  # mutate the caller's arrays
    batch = buffer.sample(50)
    assert set(batch["actions"].tolist()) == set(range(6))
    np.testing.assert_array_equal(batch["obs"][:, 0], batch["actions"])
    assert not any(np.shares_memory(batch[name], column)
                   for name in batch for column in buffer._ring.columns.values())


def test_stats_count_rows_added_and_sampled():
    buffer = ReplayBuffer(capacity=4)
    buffer.add(transitions(0, 3))
    buffer.sample(5)
    buffer.sample(2)
    stats = buffer.stats()
    assert {key: stats[key] for key in ("size", "capacity", "added_count", "sampled_count")} == {
        "size": 3, "capacity": 4, "added_count": 3, "sampled_count": 7}
    assert stats["nbytes"] == buffer.nbytes == 4 * (8 + 8 + 4 + 1)


def bad_batches() -> list[tuple[str, object, type, str]]:
    missing = transitions(0, 2)
    del missing["rewards"]
    extra = transitions(0, 2)
    extra["infos"] = np.zeros(2)
    wrong_shape = transitions(0, 2)
    wrong_shape["obs"] = np.zeros((2, 3), np.float32)
    float_into_int = transitions(0, 2)
    float_into_int["actions"] = np.array([0.5, 1.5])
    int_into_bool = transitions(0, 2)
    int_into_bool["terminateds"] = np.array([0, 1])
    unequal = transitions(0, 2)
    dict.__setitem__(unequal, "rewards", np.zeros(3, np.float32))  # bypasses SampleBatch checks
    scalar = transitions(0, 2)
    dict.__setitem__(scalar, "rewards", np.float32(1.0))
    objects = transitions(0, 2)
    objects["actions"] = np.array([{}, {}], dtype=object)
    return [
        ("missing column", missing, ValueError, r"missing=\['rewards'\]"),
        ("extra column", extra, ValueError, r"extra=\['infos'\]"),
        ("row shape", wrong_shape, ValueError, r"rows of shape \(3,\).*\(2,\)"),
        ("float into int", float_into_int, TypeError, "cannot be cast safely"),
        ("int into bool", int_into_bool, TypeError, "cannot be cast safely"),
        ("unequal lengths", unequal, ValueError, "same number of rows"),
        ("scalar column", scalar, ValueError, "leading row dimension"),
        ("object column", objects, TypeError, "object arrays would need pickle"),
        ("no columns", SampleBatch(), ValueError, "at least one column"),
        ("not a mapping", [1, 2, 3], TypeError, "got list"),
    ]


@pytest.mark.parametrize("buffer_class", [ReplayBuffer, PrioritizedReplayBuffer])
@pytest.mark.parametrize(("case", "batch", "error", "message"), bad_batches(),
                         ids=[case[0] for case in bad_batches()])
def test_a_bad_batch_is_refused_and_changes_nothing(buffer_class, case, batch, error, message):
    buffer = buffer_class(capacity=5, seed=0)
    buffer.add(transitions(0, 4))
    before = buffer.get_state()
    with pytest.raises(error, match=message):
        buffer.add(batch)
    assert len(buffer) == 4
    assert_states_equal(buffer.get_state(), before)


def test_prioritized_buffer_reserves_its_sample_columns():
    buffer = PrioritizedReplayBuffer(capacity=5)
    batch = transitions(0, 2)
    batch["weights"] = np.ones(2)
    with pytest.raises(ValueError, match=r"\['weights'\] are reserved"):
        buffer.add(batch)
    assert len(buffer) == 0


@pytest.mark.parametrize(("capacity", "error"), [(0, ValueError), (-3, ValueError),
                                                 (2.0, TypeError), (True, TypeError)])
def test_capacity_must_be_a_positive_int(capacity, error):
    with pytest.raises(error, match="capacity"):
        ReplayBuffer(capacity)


@pytest.mark.parametrize("buffer_class", [ReplayBuffer, PrioritizedReplayBuffer])
def test_sampling_needs_rows_and_a_positive_count(buffer_class):
    buffer = buffer_class(capacity=5)
    with pytest.raises(ValueError, match="empty replay buffer"):
        buffer.sample(1)
    buffer.add(transitions(0, 2))
    for bad, error in ((0, ValueError), (-1, ValueError), (2.0, TypeError)):
        with pytest.raises(error, match="number of items"):
            buffer.sample(bad)
    assert buffer.stats()["sampled_count"] == 0


def assert_states_equal(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    for key in left:
        if isinstance(left[key], np.ndarray):
            np.testing.assert_array_equal(left[key], right[key], err_msg=key)
            assert left[key].dtype == right[key].dtype, key
        else:
            assert left[key] == right[key], key


@pytest.mark.parametrize("buffer_class", [ReplayBuffer, PrioritizedReplayBuffer])
def test_state_round_trips_through_npz_without_pickle(buffer_class, tmp_path):
    original = buffer_class(capacity=6, seed=4)
    original.add(transitions(0, 9))  # wrapped
    original.sample(3)
    if isinstance(original, PrioritizedReplayBuffer):
        original.update_priorities(np.array([0, 2, 5]), np.array([3.0, 0.1, 7.5]))
        original.beta = 0.9
    state = original.get_state()
    for value in state.values():
        assert isinstance(value, (np.ndarray, int, float, str)), type(value)
        assert not (isinstance(value, np.ndarray) and value.dtype.hasobject)

    np.savez(tmp_path / "replay.npz", **state)
    with np.load(tmp_path / "replay.npz", allow_pickle=False) as loaded:
        restored_state = dict(loaded)
    restored = buffer_class(capacity=6, seed=999)
    restored.set_state(restored_state)

    assert len(restored) == 6 and restored.stats() == original.stats()
    assert_states_equal(restored.get_state(), state)
    for _ in range(3):  # the generator state came along: the same draws follow
        left, right = original.sample(10), restored.sample(10)
        assert left.columns == right.columns
        for name in left:
            np.testing.assert_array_equal(left[name], right[name])
    original.add(transitions(20, 22))
    restored.add(transitions(20, 22))
    assert stored_rows(original) == stored_rows(restored)


def test_state_of_an_empty_buffer_round_trips():
    restored = ReplayBuffer(capacity=3)
    restored.set_state(ReplayBuffer(capacity=3).get_state())
    assert len(restored) == 0
    restored.add(transitions(0, 1))
    assert len(restored) == 1


@pytest.mark.parametrize(("change", "message"), [
    ({"capacity": 7}, "capacity 7"),
    ({"kind": "PrioritizedReplayBuffer"}, "restore it into a PrioritizedReplayBuffer"),
    ({"format": "other/9"}, "format"),
    ({"size": 9}, "within the capacity"),
    ({"column/actions": np.arange(2)}, "needs 6 rows"),
    ({"rng_state": "{}"}, "rng_state"),
    ({"added_count": "many"}, "must be of type int"),
])
def test_a_bad_state_is_refused_and_changes_nothing(change, message):
    source = ReplayBuffer(capacity=6, seed=0)
    source.add(transitions(0, 6))
    target = ReplayBuffer(capacity=6, seed=1)
    target.add(transitions(50, 53))
    before = target.get_state()
    with pytest.raises(ValueError, match=message):
        target.set_state({**source.get_state(), **change})
    assert_states_equal(target.get_state(), before)
