"""TwoStepGame: every joint action's payoff, termination after two steps, the observations and
global state, PettingZoo's API test, and one shared-policy PPO iteration through the Trainer."""

from __future__ import annotations

import itertools
import pickle
import warnings

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

import flowrl
from flowrl.env import make_env
from flowrl.envs import TwoStepGame

AGENTS = ["agent_0", "agent_1"]
START, STATE_2A, STATE_2B = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]


def joint(action_0: int, action_1: int) -> dict[str, int]:
    return {"agent_0": action_0, "agent_1": action_1}


def team_return(first: tuple[int, int], second: tuple[int, int]) -> float:
    env = TwoStepGame()
    env.reset(seed=0)
    _, first_rewards, *_ = env.step(joint(*first))
    _, second_rewards, *_ = env.step(joint(*second))
    assert first_rewards["agent_0"] == first_rewards["agent_1"] == 0.0
    assert second_rewards["agent_0"] == second_rewards["agent_1"]  # one team reward
    return second_rewards["agent_0"]


@pytest.mark.parametrize("agent_1_first", [0, 1])
def test_payoffs_of_every_joint_action(agent_1_first):
    # agent_1's first action does not matter; agent_0's picks 2A (0) or 2B (1).
    for second in itertools.product([0, 1], repeat=2):
        assert team_return((0, agent_1_first), second) == 7.0
    payoff_2b = [[0.0, 1.0], [1.0, 8.0]]
    for row, column in itertools.product([0, 1], repeat=2):
        assert team_return((1, agent_1_first), (row, column)) == payoff_2b[row][column]


def test_optimal_team_return_is_8_and_the_safe_one_7():
    best = max(team_return(first, second)
               for first in itertools.product([0, 1], repeat=2)
               for second in itertools.product([0, 1], repeat=2))
    assert best == team_return((1, 0), (1, 1)) == team_return((1, 1), (1, 1)) == 8.0
    assert team_return((0, 1), (0, 0)) == 7.0


def test_both_agents_terminate_after_the_second_step():
    env = TwoStepGame()
    observations, infos = env.reset(seed=0)
    assert env.agents == AGENTS == env.possible_agents
    assert infos == {"agent_0": {}, "agent_1": {}}
    observations, rewards, terminations, truncations, infos = env.step(joint(1, 0))
    assert terminations == truncations == {"agent_0": False, "agent_1": False}
    assert env.agents == AGENTS
    observations, rewards, terminations, truncations, infos = env.step(joint(1, 1))
    assert terminations == {"agent_0": True, "agent_1": True}
    assert truncations == {"agent_0": False, "agent_1": False}
    assert set(observations) == set(rewards) == set(infos) == set(AGENTS)
    assert env.agents == []
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(joint(0, 0))
    env.reset()
    assert env.agents == AGENTS


@pytest.mark.parametrize(("agent_0_first", "second_state"), [(0, STATE_2A), (1, STATE_2B)])
def test_observations_and_global_state_are_the_state_one_hot(agent_0_first, second_state):
    env = TwoStepGame()
    observations, _ = env.reset()
    assert env.state_space.shape == (3,)
    for agent in AGENTS:
        assert env.observation_space(agent).shape == (3,)
        assert observations[agent].tolist() == START
    assert env.state().tolist() == START
    observations, *_ = env.step(joint(agent_0_first, 1))
    for agent in AGENTS:
        assert observations[agent].tolist() == second_state
        assert env.observation_space(agent).contains(observations[agent])
    assert env.state().tolist() == second_state
    assert env.state_space.contains(env.state())
    observations, *_ = env.step(joint(0, 0))
    assert observations["agent_0"].tolist() == second_state  # the state that was played


def test_agent_ids_append_each_agents_one_hot_id():
    env = make_env("TwoStepGame-v0", {"agent_ids": True})
    assert isinstance(env, TwoStepGame)
    observations, _ = env.reset()
    assert env.observation_space("agent_1").shape == (5,)
    assert observations["agent_0"].tolist() == START + [1.0, 0.0]
    assert observations["agent_1"].tolist() == START + [0.0, 1.0]
    observations, *_ = env.step(joint(1, 0))
    assert observations["agent_1"].tolist() == STATE_2B + [0.0, 1.0]
    assert env.state().tolist() == STATE_2B  # the global state has no id
    assert env.state_space.shape == (3,)


def test_bad_config_actions_and_agents_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="unknown config key 'agent_id'. Did you mean"):
        TwoStepGame({"agent_id": True})
    with pytest.raises(ValueError, match="'agent_ids' must be True or False"):
        TwoStepGame({"agent_ids": 1})
    env = TwoStepGame()
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(joint(0, 0))
    env.reset()
    with pytest.raises(ValueError, match=r"missing: \['agent_1'\]"):
        env.step({"agent_0": 1})
    with pytest.raises(ValueError, match="action 2 for 'agent_0' is outside"):
        env.step(joint(2, 0))
    with pytest.raises(ValueError, match="no agent 'agent_2'"):
        env.action_space("agent_2")


@pytest.mark.parametrize("config", [{}, {"agent_ids": True}])
def test_passes_pettingzoo_parallel_api_test_and_pickles(config):
    env = pickle.loads(pickle.dumps(TwoStepGame(config)))
    assert env.observation_space("agent_0") is env.observation_space("agent_0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the API test reports most problems as warnings
        parallel_api_test(env, num_cycles=20)


def test_ppo_trains_one_iteration_with_one_shared_policy():
    config = {"num_workers": 0, "num_envs_per_worker": 1, "rollout_fragment_length": 20,
              "train_batch_size": 20, "sgd_minibatch_size": 10, "num_sgd_iter": 1, "seed": 0,
              "model": {"fcnet_hiddens": [8]}, "env_config": {"agent_ids": True}}
    trainer = flowrl.Trainer("ppo", env="TwoStepGame-v0", local_mode=True, config=config)
    try:
        result = trainer.train()
    finally:
        trainer.stop()
    assert set(result["info"]["learner"]) == {"default_policy"}
    assert result["episodes_this_iter"] == 10  # 20 env steps, two per episode
    # Both agents get the team reward: an episode's summed reward is twice the team return.
    assert 0.0 <= result["episode_reward_mean"] <= 16.0
    assert np.isfinite(result["policy_reward_mean"]["default_policy"])
