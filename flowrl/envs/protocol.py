"""The PettingZoo parallel-env protocol: recognising a multi-agent env and checking it as it runs.

Multi-agent rollout workers drive user environments they have never seen. A broken environment
(a reward missing for one agent, an agent that comes back after it finished, an observation
outside its space) otherwise shows up far away, as a shape error in a loss or a policy that never
learns. :class:`ProtocolCheckedParallelEnv` checks every call where it happens and raises a
:class:`ParallelEnvProtocolError` naming the agent, the step and the rule that was broken.

The protocol checked here (PettingZoo's `ParallelEnv`, without RLlib's `__all__` key):

* `reset(seed=None, options=None)` returns `(observations, infos)`, each a dict with a key for
  every agent in `env.agents`; `env.agents` is a subset of `env.possible_agents`.
* `step(actions)` takes exactly one action for each live agent, each inside that agent's action
  space, and returns `(observations, rewards, terminations, truncations, infos)`, each a dict
  with a key for every agent that acted. Rewards are real numbers; terminations and truncations
  are booleans.
* Observations lie in `observation_space(agent)`; `observation_space(agent)` and
  `action_space(agent)` never change (compared by equality) within the life of the env.
* Agents may finish (terminate or truncate) at different times. A finished agent leaves
  `env.agents` in that same step and never returns until the next reset; an agent never leaves
  `env.agents` without finishing. The episode is over when `env.agents` is empty.
"""

from __future__ import annotations

import numbers
from collections.abc import Hashable, Mapping
from typing import Any

import gymnasium
import numpy as np
from pettingzoo.utils.env import ParallelEnv

__all__ = ["ParallelEnvProtocolError", "ProtocolCheckedParallelEnv", "is_multi_agent_env"]


def is_multi_agent_env(env: Any) -> bool:
    """True if `env` looks like a PettingZoo parallel env (duck typing, no isinstance check).

    An env qualifies when it has a `possible_agents` attribute and a callable
    `observation_space` (a method taking the agent). A gymnasium env, whose `observation_space`
    is a Space attribute, does not.
    """
    return hasattr(env, "possible_agents") and callable(getattr(env, "observation_space", None))


class ParallelEnvProtocolError(RuntimeError):
    """A multi-agent env broke the PettingZoo parallel protocol.

    Attributes:
        env_name: The env's name (`metadata["name"]` or its class name).
        step: The step within the episode (0 for `reset`, 1 for the first `step`).
        agent: The agent concerned, or None for a rule about the whole call.
        rule: What the protocol requires, in one sentence.
    """

    def __init__(self, *, env_name: str, step: int, agent: Hashable | None, rule: str) -> None:
        self.env_name = env_name
        self.step = step
        self.agent = agent
        self.rule = rule
        where = "reset()" if step == 0 else f"step {step}"
        who = f", agent {agent!r}" if agent is not None else ""
        super().__init__(
            f"{env_name} broke the PettingZoo parallel-env protocol at {where}{who}: {rule}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only __init__: rebuild through a helper so the error survives pickling to the
        # driver from a Ray actor.
        return (_rebuild_protocol_error, (self.env_name, self.step, self.agent, self.rule))


def _rebuild_protocol_error(
    env_name: str, step: int, agent: Hashable | None, rule: str
) -> ParallelEnvProtocolError:
    return ParallelEnvProtocolError(env_name=env_name, step=step, agent=agent, rule=rule)


_STEP_RESULT_NAMES = ("observations", "rewards", "terminations", "truncations", "infos")


class ProtocolCheckedParallelEnv(ParallelEnv):
    """Wraps a PettingZoo parallel env and checks every `reset` and `step` against the protocol.

    The wrapper passes calls and results through unchanged; it only raises a
    :class:`ParallelEnvProtocolError` (see the module docstring for the rules) when either the
    caller or the env breaks the protocol. Caller-side rules (actions for finished or unknown
    agents, a missing action, an action outside its space, stepping a finished episode) are
    checked before the env sees the call.

    Args:
        env: A PettingZoo parallel env (see :func:`is_multi_agent_env`).

    Raises:
        TypeError: If `env` is not a parallel env.

    Example:
        >>> from flowrl.envs import MultiAgentArena
        >>> env = ProtocolCheckedParallelEnv(MultiAgentArena())
        >>> observations, infos = env.reset(seed=0)
        >>> _ = env.step({"agent1": 1, "agent2": 3})
        >>> try:
        ...     env.step({"agent1": 1, "agent2": 3, "agent3": 0})
        ... except ParallelEnvProtocolError as error:
        ...     print(error.agent, error.step, error.rule)
        agent3 2 an action was given for an agent that is not one of env.possible_agents \
['agent1', 'agent2'].
    """

    def __init__(self, env: ParallelEnv) -> None:
        if not is_multi_agent_env(env):
            raise TypeError(
                f"ProtocolCheckedParallelEnv wraps a PettingZoo parallel env (with "
                f"possible_agents and observation_space(agent)); got {type(env).__name__}. "
                f"A gymnasium single-agent env needs no multi-agent wrapper."
            )
        self.env = env
        self.metadata = getattr(env, "metadata", {})
        self.env_name = str(self.metadata.get("name", type(env).__name__))
        self._step = 0
        self._episode_running = False
        self._live: list[Hashable] = []
        self._finished: dict[Hashable, tuple[int, str]] = {}
        self._observation_spaces: dict[Hashable, gymnasium.Space] = {}
        self._action_spaces: dict[Hashable, gymnasium.Space] = {}
        self._acting_agents: list[Hashable] = []
        """The live agents at the start of the current step(), in a stable order."""

    # --- pass-through -------------------------------------------------------------------------

    @property
    def agents(self) -> list:
        """The wrapped env's live agents."""
        return self.env.agents

    @property
    def possible_agents(self) -> list:
        """The wrapped env's possible agents."""
        return self.env.possible_agents

    @property
    def unwrapped(self) -> ParallelEnv:
        """The innermost env."""
        return self.env.unwrapped

    @property
    def episode_over(self) -> bool:
        """True once no agent is left (or before the first reset): the next call must be reset."""
        return not self._episode_running

    def observation_space(self, agent: Hashable) -> gymnasium.Space:
        """The wrapped env's observation space for `agent`."""
        return self.env.observation_space(agent)

    def action_space(self, agent: Hashable) -> gymnasium.Space:
        """The wrapped env's action space for `agent`."""
        return self.env.action_space(agent)

    def render(self) -> Any:
        """Renders the wrapped env."""
        return self.env.render()

    def close(self) -> None:
        """Closes the wrapped env."""
        self.env.close()

    def state(self) -> np.ndarray:
        """The wrapped env's global state."""
        return self.env.state()

    # --- checked calls ------------------------------------------------------------------------

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Resets the wrapped env and checks what it returns."""
        result = self.env.reset(seed=seed, options=options)
        self._step = 0
        self._finished = {}
        if not isinstance(result, tuple) or len(result) != 2:
            self._fail(None, f"reset() must return (observations, infos); got {_describe(result)}.")
        observations, infos = result
        live = self._checked_agent_list()
        for name, mapping in zip(("observations", "infos"), result, strict=True):
            self._check_keys(name, mapping, live)
        self._live = list(live)
        self._episode_running = bool(live)
        self._check_spaces_and_observations(live, observations)
        return observations, infos

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        """Checks `actions`, steps the wrapped env and checks the five dicts it returns."""
        self._check_actions(actions)
        result = self.env.step(actions)
        self._step += 1
        if not isinstance(result, tuple) or len(result) != 5:
            self._fail(
                None,
                f"step() must return (observations, rewards, terminations, truncations, infos); "
                f"got {_describe(result)}.",
            )
        acted = self._acting_agents
        for name, mapping in zip(_STEP_RESULT_NAMES, result, strict=True):
            self._check_keys(name, mapping, acted)
        observations, rewards, terminations, truncations, _ = result
        now_finished = self._check_rewards_and_flags(acted, rewards, terminations, truncations)
        live_after = self._checked_agent_list()
        self._check_agent_changes(acted, now_finished, live_after)
        self._live = list(live_after)
        self._episode_running = bool(live_after)
        joined = [agent for agent in live_after if agent not in acted]
        self._check_keys("observations", observations, joined)
        self._check_spaces_and_observations(acted + joined, observations)
        return result

    # --- rules --------------------------------------------------------------------------------

    def _check_actions(self, actions: Any) -> None:
        step = self._step + 1
        if not self._episode_running:
            why = (
                "before the first reset()"
                if not self._observation_spaces
                else ("after every agent finished")
            )
            self._fail(None, f"step() was called {why}; call reset() to start an episode.", step)
        if not isinstance(actions, Mapping):
            self._fail(
                None,
                f"step() needs a dict of actions keyed by agent; got {_describe(actions)}.",
                step,
            )
        for agent in actions:
            if agent in self._finished:
                finished_step, how = self._finished[agent]
                self._fail(
                    agent,
                    f"an action was given for an agent that {how} at step {finished_step}; "
                    f"finished agents must not be given actions.",
                    step,
                )
            if agent not in self._live:
                if agent in self.env.possible_agents:
                    rule = (
                        f"an action was given for an agent that is not in env.agents {self._live}."
                    )
                else:
                    rule = (
                        f"an action was given for an agent that is not one of "
                        f"env.possible_agents {list(self.env.possible_agents)}."
                    )
                self._fail(agent, rule, step)
        for agent in self._live:
            if agent not in actions:
                self._fail(agent, "step() needs an action for every agent in env.agents.", step)
            space = self._action_spaces[agent]
            if not space.contains(actions[agent]):
                self._fail(
                    agent,
                    f"the action {actions[agent]!r} is outside the agent's action space {space}.",
                    step,
                )
        self._acting_agents = list(self._live)

    def _check_keys(self, name: str, mapping: Any, agents: list) -> None:
        if not isinstance(mapping, Mapping):
            self._fail(None, f"{name} must be a dict keyed by agent; got {_describe(mapping)}.")
        for agent in agents:
            if agent not in mapping:
                self._fail(
                    agent,
                    f"{name} has no entry for this agent; every live agent needs one "
                    f"(keys given: {list(mapping)}).",
                )

    def _check_rewards_and_flags(
        self, acted: list, rewards: Mapping, terminations: Mapping, truncations: Mapping
    ) -> list:
        now_finished = []
        for agent in acted:
            reward = rewards[agent]
            if isinstance(reward, bool) or not isinstance(reward, numbers.Real):
                self._fail(agent, f"rewards must be real numbers; got {_describe(reward)}.")
            for name, flags in (("terminations", terminations), ("truncations", truncations)):
                if not isinstance(flags[agent], bool | np.bool_):
                    self._fail(agent, f"{name} must be booleans; got {_describe(flags[agent])}.")
            if terminations[agent] or truncations[agent]:
                how = "terminated" if terminations[agent] else "was truncated"
                self._finished[agent] = (self._step, how)
                now_finished.append(agent)
        return now_finished

    def _check_agent_changes(self, acted: list, now_finished: list, live_after: list) -> None:
        for agent in now_finished:
            if agent in live_after:
                self._fail(
                    agent,
                    f"the agent {self._finished[agent][1]} but is still in env.agents; a "
                    f"finished agent must leave env.agents in the same step.",
                )
        for agent in live_after:
            if agent in self._finished and agent not in now_finished:
                finished_step, how = self._finished[agent]
                self._fail(
                    agent,
                    f"the agent {how} at step {finished_step} but is back in env.agents; a "
                    f"finished agent must not return before the next reset().",
                )
        for agent in acted:
            if agent not in live_after and agent not in now_finished:
                self._fail(
                    agent,
                    "the agent left env.agents without being terminated or truncated; set "
                    "terminations[agent] or truncations[agent] to True when it leaves.",
                )

    def _checked_agent_list(self) -> list:
        agents = self.env.agents
        possible = list(self.env.possible_agents)
        for agent in agents:
            if agent not in possible:
                self._fail(
                    agent,
                    f"env.agents holds an agent that is not in env.possible_agents {possible}.",
                )
        return list(agents)

    def _check_spaces_and_observations(self, agents: list, observations: Mapping) -> None:
        for agent in agents:
            for kind, known, space in (
                ("observation", self._observation_spaces, self.env.observation_space(agent)),
                ("action", self._action_spaces, self.env.action_space(agent)),
            ):
                if agent not in known:
                    known[agent] = space
                elif known[agent] is not space and known[agent] != space:
                    self._fail(
                        agent,
                        f"{kind}_space(agent) changed from {known[agent]} to {space}; an agent's "
                        f"spaces must stay the same for the life of the env.",
                    )
            observation = observations[agent]
            space = self._observation_spaces[agent]
            if not space.contains(observation):
                self._fail(
                    agent,
                    f"the observation {_describe(observation)} is outside the agent's "
                    f"observation space {space}.",
                )

    def _fail(self, agent: Hashable | None, rule: str, step: int | None = None) -> None:
        raise ParallelEnvProtocolError(
            env_name=self.env_name,
            step=self._step if step is None else step,
            agent=agent,
            rule=rule,
        )


def _describe(value: Any) -> str:
    """A short description of `value` for an error message: its repr (cut) and type."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"
