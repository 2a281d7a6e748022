"""SequenceBuilder: R2D2's replay sequences cut from rollout steps (episode ends, padding,
stored start states, n-step targets, episodes spanning batches, overlap)."""

from __future__ import annotations

import numpy as np
import pytest

from flowrl.data import SampleBatch
from flowrl.replay import SequenceBuilder
from flowrl.replay.sequences import (
    BOOTSTRAP_DISCOUNT,
    BOOTSTRAP_INDEX,
    BURN_IN_STEPS,
    LOSS_MASK,
    N_STEP_RETURNS,
)


def episode_steps(times, eps_id=0, terminated=False, truncated=False, reward=1.0):
    """Rows of one episode at `times`; obs = [t, eps_id], state_in_0 = [t, t]; its last row
    ends the episode as asked."""
    times = np.asarray(times)
    count = len(times)
    last = np.arange(count) == count - 1
    return SampleBatch(
        obs=np.stack([times, np.full(count, eps_id)], 1).astype(np.float32),
        new_obs=np.stack([times + 1, np.full(count, eps_id)], 1).astype(np.float32),
        actions=times % 2, rewards=np.full(count, reward, np.float32),
        terminateds=last & terminated, truncateds=last & truncated,
        eps_id=np.full(count, eps_id, np.int64), t=times.astype(np.int64),
        state_in_0=np.stack([times, times], 1).astype(np.float32))


def test_sequences_cut_an_episode_pad_its_ends_and_carry_each_start_state():
    builder = SequenceBuilder(burn_in=2, train_length=3, n_step=2, gamma=0.5)
    out = builder(episode_steps(range(7), terminated=True))
    assert builder.sequence_length == 7 and len(out) == 3  # trained parts [0, 3) [3, 6) [6, 7)
    obs_t = out["obs"][:, :, 0]
    # Sequence k covers episode times 3k - 2 ... 3k + 4; t = 7 is the final observation.
    np.testing.assert_array_equal(obs_t[0], [0, 0, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(obs_t[1], [1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(obs_t[2], [4, 5, 6, 7, 0, 0, 0])
    assert out[BURN_IN_STEPS].tolist() == [0, 2, 2]
    assert out["seq_lens"].tolist() == [5, 7, 4]
    # The stored state is the actor's at the first real position: t = 0, 1, 4.
    assert out["state_in_0"][:, 0].tolist() == [0.0, 1.0, 4.0]
    assert out[LOSS_MASK].astype(int).tolist() == [[0, 0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0, 0],
                                                   [0, 0, 1, 0, 0, 0, 0]]
    np.testing.assert_array_equal(out["rewards"][2], [1, 1, 1, 0, 0, 0, 0])
    assert builder.num_pending_episodes == 0


def test_n_step_targets_stop_at_termination_and_bootstrap_after_truncation():
    builder = SequenceBuilder(burn_in=0, train_length=4, n_step=2, gamma=0.5)
    terminated = builder(episode_steps(range(4), terminated=True))
    # t = 0, 1 sum two rewards; t = 2 too, reaching the end; t = 3 one.
    assert terminated[N_STEP_RETURNS][0, :4].tolist() == [1.5, 1.5, 1.5, 1.0]
    assert terminated[BOOTSTRAP_INDEX][0, :4].tolist() == [2, 3, 4, 4]
    assert terminated[BOOTSTRAP_DISCOUNT][0, :4].tolist() == [0.25, 0.25, 0.0, 0.0]
    truncated = builder(episode_steps(range(4), eps_id=1, truncated=True))
    assert truncated[BOOTSTRAP_DISCOUNT][0, :4].tolist() == [0.25, 0.25, 0.25, 0.5]
    assert truncated["obs"][0, 4, 0] == 4.0  # the final observation, bootstrapped from


def test_an_episode_spanning_batches_is_cut_as_one():
    whole = SequenceBuilder(burn_in=2, train_length=3, n_step=1, gamma=0.9)(
        episode_steps(range(10), truncated=True))
    builder = SequenceBuilder(burn_in=2, train_length=3, n_step=1, gamma=0.9)
    parts = [builder(episode_steps(range(start, min(start + 4, 10)), truncated=start == 8))
             for start in (0, 4, 8)]
    assert [len(part) for part in parts] == [1, 1, 2]  # each stored once its steps exist
    assert builder.num_pending_episodes == 0
    for name in whole.columns:
        np.testing.assert_array_equal(np.concatenate([p[name] for p in parts]), whole[name],
                                      err_msg=name)


def test_overlapping_sequences_share_trained_steps_and_episodes_interleave():
    builder = SequenceBuilder(burn_in=0, train_length=4, n_step=1, gamma=0.9, overlap=2)
    first = episode_steps(range(6), eps_id=5, terminated=True)
    second = episode_steps(range(3), eps_id=9)
    batch = SampleBatch({name: np.concatenate([first[name], second[name]])
                         for name in first.columns})
    out = builder(batch)
    # Episode 5 starts trained parts at t = 0, 2, 4; episode 9 (3 steps so far) waits.
    assert out["obs"][:, 0, 0].tolist() == [0.0, 2.0, 4.0]
    assert out["obs"][:, 0, 1].tolist() == [5.0, 5.0, 5.0]
    assert builder.num_pending_episodes == 1


def test_a_stateless_batch_is_refused_naming_the_fix():
    steps = episode_steps(range(3))
    del steps["state_in_0"]
    with pytest.raises(ValueError, match="model.use_lstm=True"):
        SequenceBuilder(burn_in=1, train_length=2, n_step=1, gamma=0.9)(steps)


def test_arguments_out_of_range_are_refused():
    with pytest.raises(ValueError, match="0 <= overlap < train_length"):
        SequenceBuilder(burn_in=0, train_length=4, n_step=1, gamma=0.9, overlap=4)


def test_a_batch_completing_no_sequence_gives_zero_rows_a_buffer_accepts():
    from flowrl.replay import PrioritizedReplayBuffer

    builder = SequenceBuilder(burn_in=1, train_length=3, n_step=1, gamma=0.9)
    empty = builder(episode_steps(range(2)))
    full = builder(episode_steps(range(2, 5), terminated=True))
    assert len(empty) == 0 and len(full) == 2
    assert sorted(empty.columns) == sorted(full.columns)
    for name in full.columns:
        assert empty[name].shape[1:] == full[name].shape[1:], name
        assert empty[name].dtype == full[name].dtype, name
    buffer = PrioritizedReplayBuffer(10, seed=0)
    buffer.add(empty)
    buffer.add(full)
    assert len(buffer) == 2 and buffer.sample(2)["obs"].shape == (2, 5, 2)
