"""Cutting batches of steps into sequences (`flowrl.policy.sequences`), framework-free."""

from __future__ import annotations

import numpy as np
import pytest

from flowrl.policy.sequences import (
    SequenceLayout,
    add_sequence_columns,
    sequence_layout,
    sequence_minibatches,
    strip_sequence_columns,
)


def test_cuts_at_episode_ends_gaps_and_max_seq_len():
    eps_id = np.array([1, 1, 1, 1, 1, 2, 2, 1, 1, 3])
    t = np.array([0, 1, 2, 3, 4, 0, 1, 9, 10, 5])  # rows 7-8: episode 1 again, after a gap
    layout = sequence_layout(eps_id, t, 3)
    assert layout.lengths.tolist() == [3, 2, 2, 2, 1]
    # Rows are taken episode by episode: episode 1's later rows follow its first ones.
    assert layout.rows().tolist() == [0, 1, 2, 3, 4, 7, 8, 5, 6, 9]
    assert layout.rows(np.array([3, 0])).tolist() == [5, 6, 0, 1, 2]
    assert layout.first_rows().tolist() == [0, 3, 7, 5, 9]


def test_a_multi_agent_batch_gives_each_agent_its_own_sequences():
    """Two agents of one episode, their steps interleaved as a multi-agent worker emits them."""
    eps_id, t = np.zeros(6, np.int64), np.array([0, 0, 1, 1, 2, 2])
    agent = np.array([0, 1, 0, 1, 0, 1])
    layout = sequence_layout(eps_id, t, 5, agent_index=agent)
    assert layout.lengths.tolist() == [3, 3]
    assert layout.rows().tolist() == [0, 2, 4, 1, 3, 5]
    columns = layout.columns()
    assert columns["seq_slots"].tolist() == [0, 5, 1, 6, 2, 7]
    rows = np.arange(6)
    assert rows[columns["seq_rows"]][columns["seq_slots"]].tolist() == rows.tolist()


def test_columns_pad_with_the_last_real_row_and_map_rows_back():
    layout = sequence_layout(np.array([1, 1, 1, 2]), np.array([0, 1, 2, 0]), 2)
    columns = layout.columns()
    assert columns["seq_lens"].tolist() == [2, 1, 1]
    assert columns["seq_rows"].tolist() == [0, 1, 2, 2, 3, 3]  # padded slots repeat a real row
    assert columns["seq_slots"].tolist() == [0, 1, 2, 4]
    padded = np.arange(4)[columns["seq_rows"]]
    assert padded[columns["seq_slots"]].tolist() == [0, 1, 2, 3]  # rows come back in order


def test_start_states_are_each_sequences_first_row():
    state = np.arange(10, dtype=np.float32).reshape(5, 2)
    arrays = {"state_in_0": state, "rewards": np.ones(5, np.float32)}
    layout = sequence_layout(np.zeros(5, np.int64), np.arange(5), 2)
    out = add_sequence_columns(arrays, layout, ["state_in_0"])
    np.testing.assert_array_equal(out["seq_state_in_0"], state[[0, 2, 4]])
    assert sorted(strip_sequence_columns(out)) == ["rewards", "state_in_0"]


def test_minibatches_hold_whole_sequences_and_cover_every_row_once():
    eps_id = np.repeat(np.arange(6), 7)
    t = np.tile(np.arange(7), 6)
    layout = sequence_layout(eps_id, t, 4)
    arrays = {"row": np.arange(len(t)), "state_in_0": np.arange(len(t), dtype=np.float32)[:, None]}
    seen = []
    for minibatch in sequence_minibatches(arrays, layout, ["state_in_0"], 10,
                                          np.random.default_rng(0)):
        rows = minibatch["row"]
        seen.extend(rows.tolist())
        starts = np.cumsum(minibatch["seq_lens"]) - minibatch["seq_lens"]
        for start, length in zip(starts, minibatch["seq_lens"]):
            run = rows[start:start + length]
            assert np.all(np.diff(run) == 1) and eps_id[run[0]] == eps_id[run[-1]]
        np.testing.assert_array_equal(minibatch["seq_state_in_0"][:, 0], rows[starts])
        assert len(minibatch["seq_rows"]) == 4 * len(minibatch["seq_lens"])
    assert sorted(seen) == list(range(len(t)))


def test_layout_of_an_empty_batch_and_a_bad_length():
    assert sequence_layout(np.zeros(0), np.zeros(0), 5).num_sequences == 0
    with pytest.raises(ValueError, match="max_seq_len must be >= 1"):
        sequence_layout(np.zeros(2), np.arange(2), 0)
    assert SequenceLayout(np.zeros(0, np.int64), np.zeros(0, np.int64), 3).rows().size == 0
