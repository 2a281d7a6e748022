"""`MultiAgentReplayBuffer`: one buffer per policy id behind one buffer's interface."""

from __future__ import annotations

import numpy as np
import pytest

from flowrl.policy import MultiAgentBatch, SampleBatch
from flowrl.replay import (
    BATCH_INDEXES,
    WEIGHTS,
    MultiAgentReplayBuffer,
    PrioritizedReplayBuffer,
    ReplayBuffer,
    add_with_priorities,
)


def _rows(start: int, count: int) -> SampleBatch:
    values = np.arange(start, start + count, dtype=np.float32)
    return SampleBatch(obs=values[:, None], rewards=values)


def _batch(**rows_per_policy: tuple[int, int]) -> MultiAgentBatch:
    return MultiAgentBatch({pid: _rows(*span) for pid, span in rows_per_policy.items()},
                           env_steps=max(count for _, count in rows_per_policy.values()))


def _buffer() -> MultiAgentReplayBuffer:
    return MultiAgentReplayBuffer({
        "p1": PrioritizedReplayBuffer(8, alpha=1.0, beta=1.0, eps=0.0, seed=0),
        "p2": ReplayBuffer(4, seed=0)})


def test_add_stores_each_policys_rows_in_its_own_buffer():
    buffer = _buffer()
    stored = buffer.add(_batch(p1=(0, 3), p2=(100, 6), other=(0, 5)))
    assert stored == 3 + 6  # "other" has no buffer (a policy that does not train)
    assert buffer.sizes() == {"p1": 3, "p2": 4}  # p2 keeps its last 4 rows (capacity 4)
    assert len(buffer) == 7 and buffer.capacity == 12 and buffer.prioritized
    assert sorted(buffer.buffers["p2"].sample(50)["rewards"].tolist())[0] >= 102
    assert buffer.add(MultiAgentBatch({"p1": SampleBatch()}, env_steps=0)) == 0


def test_sample_draws_from_each_policys_buffer():
    buffer = _buffer()
    with pytest.raises(ValueError, match="empty replay buffer"):
        buffer.sample(2)
    buffer.add(_batch(p1=(0, 3)))
    only_p1 = buffer.sample(5)  # p2 is still empty: left out
    assert set(only_p1.policy_batches) == {"p1"} and len(only_p1) == 5
    buffer.add(_batch(p2=(100, 2)))
    sample = buffer.sample({"p1": 2, "p2": 3})
    assert {pid: len(rows) for pid, rows in sample.policy_batches.items()} == {"p1": 2, "p2": 3}
    assert sample.env_steps == 5
    assert {WEIGHTS, BATCH_INDEXES} <= set(sample.policy_batches["p1"].columns)
    assert set(sample.policy_batches["p2"].columns) == {"obs", "rewards"}  # uniform
    assert set(sample.policy_batches["p2"]["rewards"].tolist()) <= {100.0, 101.0}
    with pytest.raises(ValueError, match=r"policies \['p3'\] without a buffer"):
        buffer.sample({"p3": 1})


def test_priorities_are_per_policy():
    buffer = _buffer()
    buffer.add(_batch(p1=(0, 4), p2=(0, 2)))
    buffer.update_priorities({"p1": np.array([3])}, {"p1": np.array([1000.0])})
    drawn = buffer.sample({"p1": 64}).policy_batches["p1"]["rewards"]
    assert (drawn == 3.0).mean() > 0.9
    with pytest.raises(ValueError, match="only prioritized buffers have priorities"):
        buffer.update_priorities({"p2": np.array([0])}, {"p2": np.array([1.0])})
    with pytest.raises(TypeError, match="same policy ids"):
        buffer.update_priorities({"p1": np.array([0])}, {})


def test_initial_priorities_per_policy_and_bad_input_changes_nothing():
    buffer = _buffer()
    add_with_priorities(buffer, _batch(p1=(0, 2), p2=(0, 2)), {"p1": np.array([1.0, 9.0])})
    assert buffer.buffers["p1"].max_priority == pytest.approx(9.0)
    before = buffer.sizes()
    with pytest.raises(ValueError, match="one initial priority per row"):
        buffer.add(_batch(p1=(0, 3), p2=(0, 1)), {"p1": np.array([1.0])})
    with pytest.raises(ValueError, match="whose buffer is uniform"):
        buffer.add(_batch(p1=(0, 1), p2=(0, 1)), {"p2": np.array([1.0])})
    with pytest.raises(ValueError, match="columns must match"):
        buffer.add(MultiAgentBatch({"p1": _rows(0, 1),
                                    "p2": SampleBatch(obs=np.zeros((1, 1)))}, env_steps=1))
    assert buffer.sizes() == before  # p1's rows were not stored either


def test_a_sample_batch_needs_a_single_policy_buffer():
    single = MultiAgentReplayBuffer({"shared": ReplayBuffer(4)})
    assert single.add(_rows(0, 2)) == 2 and single.sizes() == {"shared": 2}
    with pytest.raises(TypeError, match="needs a MultiAgentBatch"):
        _buffer().add(_rows(0, 2))
    with pytest.raises(TypeError, match="str policy ids mapped to ReplayBuffer"):
        MultiAgentReplayBuffer({"p1": single})
    with pytest.raises(ValueError, match="at least one entry"):
        MultiAgentReplayBuffer({})


def test_state_round_trips_through_npz(tmp_path):
    buffer = _buffer()
    buffer.add(_batch(p1=(0, 5), p2=(10, 3)))
    buffer.update_priorities({"p1": np.array([1])}, {"p1": np.array([4.0])})
    np.savez(tmp_path / "replay.npz", **buffer.get_state())
    restored = _buffer()
    restored.set_state(dict(np.load(tmp_path / "replay.npz", allow_pickle=False)))
    assert restored.sizes() == buffer.sizes()
    assert restored.buffers["p1"].max_priority == pytest.approx(4.0)
    for pid in ("p1", "p2"):
        np.testing.assert_array_equal(restored.buffers[pid].sample(6)["rewards"],
                                      buffer.buffers[pid].sample(6)["rewards"])
    stats = restored.stats()
    assert stats["size"] == 8 and stats["policies"]["p1"]["max_priority"] == pytest.approx(4.0)


def test_a_state_of_other_policies_is_rejected_and_changes_nothing():
    buffer = _buffer()
    buffer.add(_batch(p1=(0, 2), p2=(0, 2)))
    other = MultiAgentReplayBuffer({"p1": PrioritizedReplayBuffer(8, alpha=1.0), "p3":
                                    ReplayBuffer(4)})
    with pytest.raises(ValueError, match=r"holds policies \['p1', 'p3'\]"):
        buffer.set_state(other.get_state())
    smaller = MultiAgentReplayBuffer({"p1": PrioritizedReplayBuffer(8, alpha=1.0),
                                      "p2": ReplayBuffer(2)})
    smaller.add(_batch(p1=(0, 1), p2=(0, 1)))
    with pytest.raises(ValueError, match="policy 'p2': replay state has capacity 2"):
        buffer.set_state(smaller.get_state())
    assert buffer.sizes() == {"p1": 2, "p2": 2}  # p1 was not restored alone
    with pytest.raises(ValueError, match="is not 'flowrl.replay.multi_agent/1'"):
        buffer.set_state(ReplayBuffer(4).get_state())
