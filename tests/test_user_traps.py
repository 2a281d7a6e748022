"""Traps a new user fell into with 0.2, each now a clear message or the right behaviour: an env
whose observations do not match its space, and the progress line of a multi-agent run."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import flowrl
from flowrl.preflight import check_observations_fit
from flowrl.reporting import format_progress


class WrongShapeEnv(gym.Env):
    """Declares 4-dimensional observations; returns 3-dimensional ones (from `step` only when
    `only_in_step`)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, only_in_step: bool = False) -> None:
        self.only_in_step = only_in_step

    def reset(self, *, seed=None, options=None):
        return np.zeros(4 if self.only_in_step else 3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 0.0, False, False, {}


class OutOfBoundsEnv(WrongShapeEnv):
    """Right shape, values beyond the declared bounds: trains as before (nothing needs them)."""

    def reset(self, *, seed=None, options=None):
        return np.full(4, 5.0, np.float32), {}

    def step(self, action):
        return np.full(4, 5.0, np.float32), 1.0, True, False, {}


@pytest.mark.parametrize(("only_in_step", "call"), [(False, "reset()"), (True, "step()")])
def test_observations_of_the_wrong_shape_name_the_env_the_space_and_the_shape(only_in_step,
                                                                            call):
    with pytest.raises(ValueError) as info:
        check_observations_fit(WrongShapeEnv(only_in_step), "my-env")
    message = str(info.value)
    assert f"'my-env' returned an observation from {call}" in message
    assert "Box(-1.0, 1.0, (4,), float32)" in message and "shape (3,), dtype float32" in message


def test_the_trainer_refuses_such_an_env_before_any_worker_starts(local_executor):
    flowrl.register_env("wrong-shape-env", lambda env_config: WrongShapeEnv())
    with pytest.raises(ValueError, match="'wrong-shape-env' returned an observation"):
        flowrl.Trainer("ppo", env="wrong-shape-env", config={"num_workers": 0})
    check_observations_fit(OutOfBoundsEnv(), "bounds-env")  # no error


def test_the_progress_line_of_a_multi_agent_run_shows_each_policys_return():
    result = {"training_iteration": 3, "timesteps_total": 1200, "episode_reward_mean": 0.0,
              "episode_reward_min": -5.0, "episode_reward_max": 5.0,
              "policy_reward_mean": {"chaser": 4.25, "runner": -4.25},
              "env_steps_per_s": 100.0, "time_total_s": 2.0, "info": {}}
    line = format_progress(result)
    assert "reward chaser 4.2, runner -4.2 |" in line
    single = format_progress({**result, "policy_reward_mean": {}})
    assert "reward     0.0 (min -5, max 5)" in single


class NoSpacesEnv(gym.Env):
    """Forgets to declare its spaces."""

    def __init__(self, env_config=None):
        del env_config

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}


def test_an_env_without_spaces_says_which_are_missing(local_executor):
    flowrl.register_env("no-spaces-env", NoSpacesEnv)
    with pytest.raises(ValueError) as info:
        flowrl.Trainer("ppo", env="no-spaces-env", config={"num_workers": 0})
    message = str(info.value)
    assert "'no-spaces-env' (NoSpacesEnv) has no gymnasium" in message
    assert "observation_space or action_space" in message and "__init__" in message
