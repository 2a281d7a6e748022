"""Fixtures for plan tests: tiny configs per algorithm on the corridor env."""

from __future__ import annotations

import pytest

import flowrl
from flowrl.testing import ContinuousCorridorEnv, CorridorEnv

CONTINUOUS_ONLY = {"ddpg", "td3", "apex_ddpg"}
"""Algorithms whose actors need a Box action space: their tests run on the continuous corridor."""


def env_for(algo: str) -> str:
    """The registered corridor env an algorithm's tests run on."""
    return "continuous_corridor" if algo in CONTINUOUS_ONLY else "corridor"

TINY = {
    "pg": {"train_batch_size": 40},
    "a2c": {"train_batch_size": 40},
    "a3c": {"num_workers": 1},
    "ppo": {"train_batch_size": 40, "sgd_minibatch_size": 20, "num_sgd_iter": 2},
    "impala": {"train_batch_size": 40},
    "appo": {"train_batch_size": 40},
    "dqn": {"train_batch_size": 16, "learning_starts": 40, "buffer_size": 1000},
    "apex": {"num_workers": 2, "train_batch_size": 16, "learning_starts": 40,
             "buffer_size": 1000, "max_weight_sync_delay": 20},
    "r2d2": {"train_batch_size": 4, "learning_starts": 4, "buffer_size": 100, "burn_in": 2,
             "model": {"fcnet_hiddens": [16], "use_lstm": True, "lstm_cell_size": 8,
                       "max_seq_len": 5}},
    "sac": {"train_batch_size": 16, "learning_starts": 40, "buffer_size": 1000,
            "random_timesteps": 20, "training_intensity": 16},
    "ddpg": {"train_batch_size": 16, "learning_starts": 40, "buffer_size": 1000,
             "random_timesteps": 20, "training_intensity": 16},
    "td3": {"train_batch_size": 16, "learning_starts": 40, "buffer_size": 1000,
            "random_timesteps": 20, "training_intensity": 16},
    "apex_ddpg": {"num_workers": 2, "train_batch_size": 16, "learning_starts": 40,
                  "buffer_size": 1000, "max_weight_sync_delay": 20, "random_timesteps": 20,
                  "target_network_update_freq": 16},
    "es": {"episodes_per_batch": 4, "train_batch_size": 10, "pairs_per_request": 1,
           "noise_size": 100_000, "eval_prob": 0.5},
    "ars": {"ars_num_directions": 2, "ars_top_directions": 1, "noise_size": 100_000,
            "eval_prob": 0.5},
}


def tiny_config(algo: str, **overrides) -> dict:
    """A config small enough that one iteration takes milliseconds."""
    base = {"num_workers": 0, "num_envs_per_worker": 2, "rollout_fragment_length": 10,
            "num_cpus_per_worker": 0, "seed": 7, "model": {"fcnet_hiddens": [16]},
            "min_time_s_per_iteration": 0}
    return {**base, **TINY[algo], **overrides}


@pytest.fixture(scope="session", autouse=True)
def corridor_registered():
    flowrl.register_env("corridor", CorridorEnv)
    flowrl.register_env("continuous_corridor", ContinuousCorridorEnv)
    yield


@pytest.fixture(name="tiny_config")
def tiny_config_fixture():
    return tiny_config


@pytest.fixture(name="corridor_for")
def corridor_for_fixture():
    return env_for
