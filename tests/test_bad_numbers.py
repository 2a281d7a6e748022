"""Bad numbers are stopped at the door: a NaN or infinite observation fails where it enters the
rollout worker, naming the env index, the worker and the fix (not later as a non-finite loss),
and a learning rate far outside the usual range warns with the typical range."""

from __future__ import annotations

import itertools
import warnings

import gymnasium as gym
import numpy as np
import pytest

import flowrl
from flowrl.config import from_dict
from flowrl.plans.pg import PG_POLICY, PGConfig
from flowrl.plans.ppo import PPOConfig
from flowrl.testing import CorridorEnv


class NaNObservationCorridor(CorridorEnv):
    """A corridor whose observation turns NaN (or inf) at step `bad_at_step`; step 0 means the
    observation of reset()."""

    def __init__(self, env_config: dict | None = None) -> None:
        config = dict(env_config or {})
        self.bad_at_step = config.pop("bad_at_step", 2)
        self.bad_value = config.pop("bad_value", float("nan"))
        super().__init__(config)

    def _obs(self) -> np.ndarray:
        obs = super()._obs()
        if self.steps == self.bad_at_step:
            obs[1] = self.bad_value
        return obs


class DictObservationCorridor(NaNObservationCorridor):
    """The same corridor with a dict observation {"position", "time"}."""

    def __init__(self, env_config: dict | None = None) -> None:
        super().__init__(env_config)
        self.observation_space = gym.spaces.Dict({
            "position": gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32),
            "time": gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32),
        })

    def _obs(self) -> dict:
        obs = super()._obs()
        return {"position": obs[:1], "time": obs[1:]}


def worker_over(env_configs: list[dict], env_class: type = NaNObservationCorridor,
                fragment: int = 5) -> flowrl.workers.RolloutWorker:
    """A rollout worker (index 2) whose env number i is built from ``env_configs[i]``."""
    configs = itertools.cycle(env_configs)

    def creator(_env_config: dict) -> gym.Env:
        return env_class(next(configs))

    probe = env_class(dict(env_configs[0]))
    config = from_dict(PGConfig, {"model": {"fcnet_hiddens": [8]}})
    return flowrl.workers.RolloutWorker(
        env_creator=creator, env_config={}, policy_spec=PG_POLICY, config=config,
        observation_space=probe.observation_space, action_space=probe.action_space,
        num_envs=len(env_configs), rollout_fragment_length=fragment, seed=0, worker_index=2)


GOOD = {"bad_at_step": -1}


def test_a_nan_observation_from_step_names_the_env_index_the_worker_and_the_fix():
    worker = worker_over([GOOD, {"bad_at_step": 3}, GOOD])
    with pytest.raises(ValueError) as info:
        worker.sample()
    message = str(info.value)
    assert "step() returned a non-finite observation" in message
    assert "env index [1] of rollout worker 2" in message
    assert "nan_to_num" in message  # the fix


def test_an_infinite_observation_from_reset_is_rejected_before_the_first_action():
    worker = worker_over([{"bad_at_step": 0, "bad_value": float("inf")}, GOOD])
    with pytest.raises(ValueError, match=r"reset\(\) returned a non-finite observation .*"
                                         r"env index \[0\] of rollout worker 2"):
        worker.sample()


def test_a_nan_final_observation_of_an_episode_is_rejected():
    """The last observation of an episode never becomes the next obs; it must be checked too."""
    worker = worker_over([GOOD, {"bad_at_step": 4, "max_steps": 4}])
    with pytest.raises(ValueError, match=r"env index \[1\] of rollout worker 2"):
        worker.sample()


def test_a_nan_inside_a_dict_observation_is_found():
    worker = worker_over([GOOD, {"bad_at_step": 2}], env_class=DictObservationCorridor)
    with pytest.raises(ValueError, match=r"env index \[1\] of rollout worker 2"):
        worker.sample()


def test_finite_observations_sample_normally():
    batch = worker_over([GOOD, GOOD], fragment=6).sample()
    assert len(batch) == 12
    assert np.isfinite(batch["obs"]).all()


def test_training_on_nan_observations_fails_at_the_worker_as_a_flow_error(executor):
    flowrl.register_env("nan_observation_corridor", NaNObservationCorridor)
    config = {"num_workers": 1, "num_envs_per_worker": 1, "rollout_fragment_length": 10,
              "train_batch_size": 10, "num_cpus_per_worker": 0.5, "seed": 1,
              "env_config": {"bad_at_step": 4}, "model": {"fcnet_hiddens": [8]}}
    trainer = flowrl.Trainer("pg", env="nan_observation_corridor", config=config)
    try:
        with pytest.raises(flowrl.FlowError) as info:
            trainer.train()
        message = str(info.value)
        assert "non-finite observation" in message
        assert "env index [0] of rollout worker 1" in message
        assert "non-finite loss" not in message
    finally:
        trainer.stop()


@pytest.mark.parametrize("lr", [1e6, 5.0, 1e-9])
def test_a_learning_rate_far_outside_the_usual_range_warns_with_the_range(lr):
    with pytest.warns(UserWarning, match=r"lr=.* far outside the usual range .*1e-5 to 1e-2"):
        config = from_dict(PPOConfig, {"lr": lr})
    assert config.lr == lr  # a warning, not a refusal


def test_a_schedule_rate_far_above_the_usual_range_warns():
    with pytest.warns(UserWarning, match="lr_schedule rate at timestep 1000=50"):
        from_dict(PPOConfig, {"lr_schedule": [[0, 1e-3], [1000, 50.0]]})


@pytest.mark.parametrize("lr", [1e-7, 5e-5, 1e-3, 1.0])
def test_usual_learning_rates_do_not_warn(lr):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_dict(PPOConfig, {"lr": lr})
