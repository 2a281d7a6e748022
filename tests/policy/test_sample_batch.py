"""SampleBatch / MultiAgentBatch / concat_samples."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from flowrl.policy import MultiAgentBatch, SampleBatch, concat_samples


def make_batch(n: int = 6, offset: int = 0) -> SampleBatch:
    return SampleBatch(
        {
            "obs": np.arange(offset, offset + n * 2, dtype=np.float32).reshape(n, 2),
            "rewards": np.arange(offset, offset + n, dtype=np.float32),
            "eps_id": np.array([0, 0, 0, 1, 1, 2][:n]) + offset,
            "terminateds": np.zeros(n, dtype=bool),
        }
    )


def test_len_columns_and_slicing_share_memory():
    batch = make_batch()
    assert len(batch) == 6 and batch.count == 6
    assert batch.columns == ["obs", "rewards", "eps_id", "terminateds"]
    piece = batch[2:4]
    assert isinstance(piece, SampleBatch) and len(piece) == 2
    assert np.shares_memory(piece["obs"], batch["obs"])
    assert batch[1]["rewards"] == 1.0
    picked = batch[np.array([5, 0])]
    assert picked["rewards"].tolist() == [5.0, 0.0]


def test_mismatched_column_lengths_raise():
    with pytest.raises(ValueError, match="same number of rows"):
        SampleBatch(obs=np.zeros((3, 2)), rewards=np.zeros(2))
    batch = make_batch()
    with pytest.raises(ValueError, match="has 2 rows but the batch has 6"):
        batch["advantages"] = np.zeros(2)
    batch["advantages"] = np.ones(6)
    assert "advantages" in batch.columns


def test_concat_samples_and_mismatch():
    merged = concat_samples([make_batch(3), SampleBatch(), make_batch(3, offset=10)])
    assert len(merged) == 6
    assert merged["rewards"].tolist() == [0, 1, 2, 10, 11, 12]
    assert len(concat_samples([])) == 0
    with pytest.raises(ValueError, match=r"missing=\['eps_id'"):
        concat_samples([make_batch(2), SampleBatch(obs=np.zeros((1, 2)), rewards=[0.0],
                                                   terminateds=[False])])


def test_shuffle_is_seeded_permutation():
    batch = make_batch()
    a, b = batch.shuffle(seed=3), batch.shuffle(seed=3)
    assert a["rewards"].tolist() == b["rewards"].tolist()
    assert sorted(a["rewards"].tolist()) == batch["rewards"].tolist()
    # Rows stay aligned across columns.
    assert np.array_equal(a["obs"][:, 0] / 2, a["rewards"])


def test_minibatches_cover_every_row():
    batch = make_batch()
    sizes = [len(mb) for mb in batch.minibatches(4, seed=0)]
    assert sizes == [4, 2]
    rows = np.concatenate([mb["rewards"] for mb in batch.minibatches(4, seed=0)])
    assert sorted(rows.tolist()) == batch["rewards"].tolist()
    assert [len(mb) for mb in batch.minibatches(4, shuffle=False, drop_last=True)] == [4]
    with pytest.raises(ValueError, match="positive"):
        list(batch.minibatches(0))


def test_split_by_episode_uses_eps_id_and_dones():
    batch = make_batch()
    assert [len(p) for p in batch.split_by_episode()] == [3, 2, 1]
    batch = SampleBatch(rewards=np.arange(5.0), terminateds=[0, 1, 0, 0, 0],
                        truncateds=[0, 0, 0, 1, 0])
    assert [p["rewards"].tolist() for p in batch.split_by_episode()] == [[0, 1], [2, 3], [4]]


def test_repr_summarises_columns():
    text = repr(make_batch())
    assert "SampleBatch(6 rows, 4 columns)" in text
    assert "rewards" in text and "dtype=float32" in text and "min=0" in text
    assert "max=5" in text and "mean=2.5" in text and "shape=(6, 2)" in text


def test_pickle_protocol5_is_zero_copy():
    batch = make_batch()
    buffers = []
    data = pickle.dumps(batch, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) >= 2  # column arrays travel out-of-band
    restored = pickle.loads(data, buffers=buffers)
    assert isinstance(restored, SampleBatch) and len(restored) == 6
    assert any(np.shares_memory(restored["obs"], np.frombuffer(b.raw(), dtype=np.uint8))
               for b in buffers)


def test_multi_agent_batch():
    ma = MultiAgentBatch({"p0": make_batch(3), "p1": make_batch(2)}, env_steps=3)
    both = concat_samples([ma, ma])
    assert isinstance(both, MultiAgentBatch)
    assert both.env_steps == 6 and len(both) == 6 and both.agent_steps() == 10
    assert "env_steps=6" in repr(both)
    with pytest.raises(ValueError, match="all SampleBatch or all MultiAgentBatch"):
        concat_samples([ma, make_batch(2)])
