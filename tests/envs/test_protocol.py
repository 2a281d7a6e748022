"""ProtocolCheckedParallelEnv: every protocol violation gives an error naming agent, step, rule."""

from __future__ import annotations

import pickle
import warnings

import gymnasium
import numpy as np
import pytest
from pettingzoo.test import parallel_api_test
from pettingzoo.utils.env import ParallelEnv

from flowrl.envs import (
    MultiAgentArena,
    ParallelEnvProtocolError,
    ProtocolCheckedParallelEnv,
    is_multi_agent_env,
)


class StaggeredEnv(ParallelEnv):
    """Agent "a" terminates at step 1, "b" is truncated at step 3; `fault` breaks one rule.

    The fault hits `fault_agent` at step `fault_step` (0 is reset).
    """

    metadata = {"name": "StaggeredEnv"}

    def __init__(self, fault: str | None = None, fault_agent: str = "b", fault_step: int = 1):
        self.fault, self.fault_agent, self.fault_step = fault, fault_agent, fault_step
        self.possible_agents = ["a", "b"]
        self.agents: list[str] = []
        self.steps = 0
        self._observation_space = gymnasium.spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self._changed_observation_space = gymnasium.spaces.Box(0.0, 2.0, (2,), np.float32)
        self._action_space = gymnasium.spaces.Discrete(2)

    def observation_space(self, agent: str) -> gymnasium.Space:
        if self._fault_now("observation_space_changes") and agent == self.fault_agent:
            return self._changed_observation_space
        return self._observation_space

    def action_space(self, agent: str) -> gymnasium.Space:
        return self._action_space

    def _fault_now(self, fault: str) -> bool:
        return self.fault == fault and self.steps == self.fault_step

    def _observation(self) -> np.ndarray:
        return np.full(2, 0.5, dtype=np.float32)

    def reset(self, seed=None, options=None):
        self.steps = 0
        self.agents = list(self.possible_agents)
        observations = {agent: self._observation() for agent in self.agents}
        if self._fault_now("missing_observation"):
            del observations[self.fault_agent]
        return observations, {agent: {} for agent in self.agents}

    def step(self, actions):
        self.steps += 1
        acting = list(self.agents)
        observations = {agent: self._observation() for agent in acting}
        rewards = {agent: 1.0 for agent in acting}
        terminations = {agent: agent == "a" and self.steps >= 1 for agent in acting}
        truncations = {agent: agent == "b" and self.steps >= 3 for agent in acting}
        infos = {agent: {} for agent in acting}
        self.agents = [a for a in acting if not (terminations[a] or truncations[a])]
        agent = self.fault_agent
        for name, mapping in [
            ("missing_observation", observations),
            ("missing_reward", rewards),
            ("missing_termination", terminations),
            ("missing_truncation", truncations),
            ("missing_info", infos),
        ]:
            if self._fault_now(name):
                del mapping[agent]
        if self._fault_now("observation_outside_space"):
            observations[agent] = np.full(2, 5.0, dtype=np.float32)
        if self._fault_now("reward_not_a_number"):
            rewards[agent] = "1.0"
        if self._fault_now("termination_not_a_bool"):
            terminations[agent] = "no"
        if self._fault_now("finished_agent_stays") or self._fault_now("agent_revived"):
            self.agents.insert(0, agent)
        if self._fault_now("agent_leaves_unfinished"):
            self.agents.remove(agent)
        if self._fault_now("unknown_agent_in_agents"):
            self.agents.append("z")
        if self._fault_now("four_results"):
            return observations, rewards, terminations, infos
        return observations, rewards, terminations, truncations, infos


def play(env: ProtocolCheckedParallelEnv) -> int:
    """Steps every live agent with action 0 until the episode is over; returns the steps."""
    env.reset(seed=0)
    steps = 0
    while env.agents:
        env.step({agent: 0 for agent in env.agents})
        steps += 1
    return steps


def test_agents_finishing_at_different_times_pass_and_the_episode_ends_when_none_is_left():
    env = ProtocolCheckedParallelEnv(StaggeredEnv())
    assert env.episode_over
    assert play(env) == 3
    assert env.episode_over
    assert play(env) == 3  # a second episode after reset


@pytest.mark.parametrize(
    ("fault", "agent", "fault_step", "rule"),
    [
        ("missing_observation", "b", 0, "observations has no entry for this agent"),
        ("missing_observation", "b", 2, "observations has no entry for this agent"),
        ("missing_reward", "a", 1, "rewards has no entry for this agent"),
        ("missing_termination", "b", 1, "terminations has no entry"),
        ("missing_truncation", "b", 3, "truncations has no entry"),
        ("missing_info", "b", 1, "infos has no entry"),
        ("observation_outside_space", "b", 2, "outside the agent's observation space"),
        ("observation_space_changes", "b", 2, "observation_space(agent) changed from"),
        ("reward_not_a_number", "b", 1, "rewards must be real numbers; got '1.0'"),
        ("termination_not_a_bool", "b", 2, "terminations must be booleans; got 'no'"),
        ("finished_agent_stays", "a", 1, "terminated but is still in env.agents"),
        ("agent_revived", "a", 2, "terminated at step 1 but is back in env.agents"),
        ("agent_leaves_unfinished", "b", 1, "left env.agents without being terminated"),
        ("unknown_agent_in_agents", "z", 1, "not in env.possible_agents"),
    ],
)
def test_env_side_violation_names_agent_step_and_rule(fault, agent, fault_step, rule):
    env = ProtocolCheckedParallelEnv(StaggeredEnv(fault, fault_agent=agent, fault_step=fault_step))
    with pytest.raises(ParallelEnvProtocolError) as caught:
        play(env)
    error = caught.value
    assert (error.agent, error.step, error.env_name) == (agent, fault_step, "StaggeredEnv")
    assert rule in error.rule
    where = "reset()" if fault_step == 0 else f"step {fault_step}"
    assert f"StaggeredEnv broke the PettingZoo parallel-env protocol at {where}" in str(error)
    assert f"agent {agent!r}" in str(error)


def test_wrong_number_of_step_results_is_reported():
    env = ProtocolCheckedParallelEnv(StaggeredEnv("four_results", fault_step=2))
    with pytest.raises(ParallelEnvProtocolError, match=r"at step 2: step\(\) must return"):
        play(env)


def test_action_for_a_finished_agent_is_refused_before_the_env_sees_it():
    inner = StaggeredEnv()
    env = ProtocolCheckedParallelEnv(inner)
    env.reset(seed=0)
    env.step({"a": 0, "b": 0})  # "a" terminates
    with pytest.raises(ParallelEnvProtocolError) as caught:
        env.step({"a": 0, "b": 0})
    assert (caught.value.agent, caught.value.step) == ("a", 2)
    assert "agent that terminated at step 1; finished agents must not" in caught.value.rule
    assert inner.steps == 1


@pytest.mark.parametrize(
    ("actions", "agent", "rule"),
    [
        ({"a": 0, "b": 0, "c": 1}, "c", "not one of env.possible_agents ['a', 'b']"),
        ({"a": 0}, "b", "needs an action for every agent in env.agents"),
        ({"a": 0, "b": 2}, "b", "the action 2 is outside the agent's action space Discrete(2)"),
    ],
)
def test_bad_actions_name_agent_step_and_rule(actions, agent, rule):
    env = ProtocolCheckedParallelEnv(StaggeredEnv())
    env.reset(seed=0)
    with pytest.raises(ParallelEnvProtocolError) as caught:
        env.step(actions)
    assert (caught.value.agent, caught.value.step) == (agent, 1)
    assert rule in caught.value.rule


def test_action_for_a_possible_agent_that_is_not_live_is_refused():
    class LateJoinerEnv(StaggeredEnv):
        """Only "a" is live at first (a legal env; "b" never joins here)."""

        def reset(self, seed=None, options=None):
            observations, infos = super().reset(seed=seed)
            self.agents = ["a"]
            return observations, infos

    env = ProtocolCheckedParallelEnv(LateJoinerEnv())
    env.reset()
    with pytest.raises(ParallelEnvProtocolError, match=r"not in env.agents \['a'\]") as caught:
        env.step({"a": 0, "b": 0})
    assert caught.value.agent == "b"


def test_stepping_outside_an_episode_is_refused():
    env = ProtocolCheckedParallelEnv(StaggeredEnv())
    with pytest.raises(ParallelEnvProtocolError, match="before the first reset"):
        env.step({"a": 0, "b": 0})
    play(env)
    with pytest.raises(ParallelEnvProtocolError, match="after every agent finished; call reset"):
        env.step({})
    with pytest.raises(ParallelEnvProtocolError, match="needs a dict of actions"):
        env.reset()
        env.step([0, 0])


def test_wrapped_arena_passes_pettingzoo_api_test_and_passes_results_through():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parallel_api_test(ProtocolCheckedParallelEnv(MultiAgentArena()), num_cycles=60)
    plain, checked = MultiAgentArena(), ProtocolCheckedParallelEnv(MultiAgentArena())
    plain_observations, _ = plain.reset(seed=5)
    checked_observations, _ = checked.reset(seed=5)
    assert checked.unwrapped is checked.env
    for _ in range(10):
        actions = {"agent1": 1, "agent2": 0}
        expected, got = plain.step(actions), checked.step(actions)
        assert got[1:] == expected[1:]
        assert all(np.array_equal(got[0][a], expected[0][a]) for a in expected[0])
    assert checked.render() == plain.render()


def test_error_survives_pickling_for_ray():
    error = ParallelEnvProtocolError(env_name="E", step=3, agent="b", rule="a rule.")
    restored = pickle.loads(pickle.dumps(error))
    assert (restored.env_name, restored.step, restored.agent, restored.rule) == (
        "E",
        3,
        "b",
        "a rule.",
    )
    assert str(restored) == str(error)


def test_is_multi_agent_env_and_wrapping_a_single_agent_env():
    cartpole = gymnasium.make("CartPole-v1")
    assert is_multi_agent_env(MultiAgentArena())
    assert is_multi_agent_env(ProtocolCheckedParallelEnv(StaggeredEnv()))
    assert not is_multi_agent_env(cartpole)
    assert not is_multi_agent_env(object())
    with pytest.raises(TypeError, match="needs no multi-agent wrapper"):
        ProtocolCheckedParallelEnv(cartpole)


@pytest.mark.parametrize("module_name", ["flowrl.envs.protocol", "flowrl.envs.multi_agent_arena"])
def test_docstring_examples(module_name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module_name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
