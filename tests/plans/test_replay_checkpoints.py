"""`store_buffer_in_checkpoints`: a Trainer checkpoint holds the replay memory when asked."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import flowrl
from flowrl.ops import StoreToReplay


def _replay_states(trainer: flowrl.Trainer) -> list[list[dict]]:
    return [store.replay_state() for store in trainer.plan.operators(StoreToReplay)]


def _assert_same_buffers(saved: list[list[dict]], restored: list[list[dict]]) -> None:
    assert len(saved) == len(restored)
    for saved_shards, restored_shards in zip(saved, restored):
        assert len(saved_shards) == len(restored_shards)
        for before, after in zip(saved_shards, restored_shards):
            assert before["size"] == after["size"] > 0
            assert before.keys() == after.keys()
            for key, value in before.items():
                if isinstance(value, np.ndarray):
                    np.testing.assert_array_equal(value, after[key])


@pytest.mark.parametrize("prioritized", [False, True])
def test_a_dqn_checkpoint_holds_the_buffer_when_asked(prioritized, tiny_config, local_executor,
                                                      tmp_path):
    config = tiny_config("dqn", store_buffer_in_checkpoints=True,
                         prioritized_replay=prioritized, min_steps_per_iteration=60)
    trainer = flowrl.Trainer("dqn", env="corridor", config=config)
    try:
        trainer.train()
        trainer.train()
        saved = _replay_states(trainer)
        path = trainer.save(str(tmp_path))
    finally:
        trainer.stop()
    restored = flowrl.Trainer.from_checkpoint(path)
    try:
        _assert_same_buffers(saved, _replay_states(restored))
        result = restored.train()  # trains at once: the buffer is past learning_starts
        assert result["info"]["counters"]["learner/steps_trained"] > 0
    finally:
        restored.stop()


def test_by_default_a_checkpoint_holds_no_buffer(tiny_config, local_executor, tmp_path):
    trainer = flowrl.Trainer("dqn", env="corridor", config=tiny_config("dqn"))
    try:
        trainer.train()
        path = trainer.save(str(tmp_path))
    finally:
        trainer.stop()
    with open(os.path.join(path, "checkpoint.json")) as f:
        assert "replay_buffers" not in json.load(f)
    restored = flowrl.Trainer.from_checkpoint(path)
    try:
        [[state]] = _replay_states(restored)
        assert state["size"] == 0  # starts empty, as a fresh run does
    finally:
        restored.stop()


def test_an_apex_checkpoint_holds_every_replay_shard(tiny_config, executor, tmp_path):
    config = tiny_config("apex", store_buffer_in_checkpoints=True, min_time_s_per_iteration=0.3)
    trainer = flowrl.Trainer("apex", env="corridor", config=config)
    try:
        for _ in range(3):
            trainer.train()
        saved = _replay_states(trainer)
        path = trainer.save(str(tmp_path))
        assert len(saved) == 1 and len(saved[0]) == 2  # one store, two shards
    finally:
        trainer.stop()
    restored = flowrl.Trainer.from_checkpoint(path, local_mode=None)
    try:
        _assert_same_buffers(saved, _replay_states(restored))
    finally:
        restored.stop()


def test_restoring_into_other_shards_says_what_to_change(tiny_config, local_executor, tmp_path):
    config = tiny_config("apex", store_buffer_in_checkpoints=True, min_time_s_per_iteration=0.3)
    trainer = flowrl.Trainer("apex", env="corridor", config=config)
    try:
        trainer.train()
        path = trainer.save(str(tmp_path))
    finally:
        trainer.stop()
    with pytest.raises(ValueError, match=r"2 replay buffer shard\(s\).*stores into 3.*"
                                         r"num_replay_buffer_shards=2"):
        flowrl.Trainer.from_checkpoint(path, config={"num_replay_buffer_shards": 3})
