"""A run users can trust: mistakes found before anything starts, a stopped trainer says so,
run directories and checkpoints that are never shared, lost or half-written."""

from __future__ import annotations

import pytest

import flowrl
from flowrl.plans.apex import ApexConfig
from flowrl.plans.dqn import DQNConfig
from flowrl.testing import CorridorEnv

TINY_PG = {"num_workers": 0, "train_batch_size": 20, "rollout_fragment_length": 10,
           "num_envs_per_worker": 2, "seed": 0, "model": {"fcnet_hiddens": [8]}}


@pytest.fixture(scope="module", autouse=True)
def corridor_registered():
    flowrl.register_env("guards_corridor", CorridorEnv)


# --- defect 2: a replay buffer too small to ever start training ----------------------------


@pytest.mark.parametrize("config_class", [DQNConfig, ApexConfig])
def test_buffer_smaller_than_learning_starts_names_both_numbers(config_class):
    with pytest.raises(ValueError, match=r"learning_starts=\d+.*buffer_size=500\b"):
        flowrl.config.from_dict(config_class, {"buffer_size": 500})


def test_apex_shards_that_could_never_reach_learning_starts_are_rejected():
    with pytest.raises(ValueError, match=r"buffer_size=2002, learning_starts=2001"):
        flowrl.config.from_dict(ApexConfig, {"buffer_size": 2002, "learning_starts": 2001,
                                             "num_replay_buffer_shards": 4})


def test_apex_without_remote_workers_is_a_config_error():
    with pytest.raises(ValueError, match=r"num_workers >= 1; got num_workers=0"):
        flowrl.config.from_dict(ApexConfig, {"num_workers": 0})


# --- defect 5: calls after stop() -----------------------------------------------------------


def test_a_stopped_trainer_says_it_is_stopped(local_executor, tmp_path):
    trainer = flowrl.Trainer("pg", env="guards_corridor", config=TINY_PG)
    trainer.train()
    trainer.stop()
    trainer.stop()  # idempotent
    for call in (trainer.train, trainer.evaluate, lambda: trainer.save(str(tmp_path)),
                 lambda: trainer.restore(str(tmp_path)), lambda: trainer.compute_single_action(0),
                 trainer.serve_viewer):
        with pytest.raises(RuntimeError, match=r"trainer was stopped.*new Trainer"):
            call()
