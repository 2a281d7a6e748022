"""TwoStepGame: the cooperative two-step matrix game of the QMIX paper, on the PettingZoo
parallel API.

Rashid et al. 2018 (QMIX, section 6.1) use it to show what a value decomposition can
represent: both agents share one team reward, the best joint plan pays 8, and VDN's additive
decomposition settles on the safe 7 while QMIX's monotonic mixing finds 8.
"""

from __future__ import annotations

import difflib

import gymnasium
import numpy as np
from pettingzoo.utils.env import ParallelEnv

__all__ = ["TwoStepGame"]

AGENT_0 = "agent_0"
"""Its first action picks the second-step matrix; in that matrix it picks the row."""
AGENT_1 = "agent_1"
"""Its first action does nothing; in the second-step matrix it picks the column."""

START, STATE_2A, STATE_2B = 0, 1, 2
"""The three states, as indices of the one-hot observation."""
NUM_STATES = 3

PAYOFF_2A = np.array([[7.0, 7.0], [7.0, 7.0]])
"""The team reward in state 2A, indexed [agent_0's action, agent_1's action]."""
PAYOFF_2B = np.array([[0.0, 1.0], [1.0, 8.0]])
"""The team reward in state 2B, indexed [agent_0's action, agent_1's action]."""

_CONFIG_KEYS = ("agent_ids",)


class TwoStepGame(ParallelEnv):
    """Two agents, one team reward, two steps; the best team return is 8.

    Rules, precisely:

    * Both agents act every step with `Discrete(2)`.
    * Step 1, from the start state: agent_0's action picks the next state, 0 -> 2A, 1 -> 2B;
      agent_1's action does not matter. Reward 0.
    * Step 2: in 2A every joint action pays 7; in 2B the payoff is [[0, 1], [1, 8]], with
      agent_0's action as the row and agent_1's as the column. Both agents are then
      *terminated*, `agents` becomes empty and the episode is over.
    * Every step both agents get the same reward, the team reward (so a run's
      `episode_reward_mean`, the sum over agents, is twice the team return).
    * Each agent observes the one-hot of the current state (start, 2A, 2B), a `Box(0, 1, (3,))`;
      with `agent_ids` the agent's one-hot id (agent_0 = [1, 0]) is appended, shape (5,). The
      observations returned with the termination show the state the second step was played in.
    * `state()` is the global state, the same one-hot of shape (3,) in `state_space` (what
      QMIX's mixing network is conditioned on).

    The game is deterministic; `reset(seed=...)` is accepted for the API and changes nothing.
    `infos[agent]` is always `{}`.

    Args:
        config: May hold `agent_ids` (default False). This is the `env_config` dict when the
            env is created by name (``"TwoStepGame-v0"``).

    Example:
        >>> env = TwoStepGame()
        >>> observations, infos = env.reset()
        >>> _ = env.step({"agent_0": 1, "agent_1": 0})  # to state 2B
        >>> _, rewards, terminations, _, _ = env.step({"agent_0": 1, "agent_1": 1})
        >>> rewards, env.agents
        ({'agent_0': 8.0, 'agent_1': 8.0}, [])
    """

    metadata = {"name": "TwoStepGame-v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, config: dict | None = None) -> None:
        self.agent_ids: bool = _validated_agent_ids(config)
        self.render_mode = None
        self.possible_agents: list[str] = [AGENT_0, AGENT_1]
        self.agents: list[str] = []
        size = NUM_STATES + (len(self.possible_agents) if self.agent_ids else 0)
        # One space object per agent, returned by identity every time (PettingZoo requires it).
        self._observation_spaces = {
            agent: gymnasium.spaces.Box(0.0, 1.0, shape=(size,), dtype=np.float32)
            for agent in self.possible_agents
        }
        self._action_spaces = {
            agent: gymnasium.spaces.Discrete(2) for agent in self.possible_agents
        }
        self.state_space = gymnasium.spaces.Box(0.0, 1.0, shape=(NUM_STATES,), dtype=np.float32)
        self._state = START
        self._timestep = 0

    # --- spaces -------------------------------------------------------------------------------

    def observation_space(self, agent: str) -> gymnasium.spaces.Box:
        """The observation space of `agent`: the state's one-hot (and its id's, with agent_ids)."""
        return self._observation_spaces[self._known_agent(agent)]

    def action_space(self, agent: str) -> gymnasium.spaces.Discrete:
        """The action space of `agent`: `Discrete(2)`."""
        return self._action_spaces[self._known_agent(agent)]

    # --- episode ------------------------------------------------------------------------------

    def reset(
        self, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        """Starts an episode in the start state."""
        self.agents = list(self.possible_agents)
        self._state = START
        self._timestep = 0
        return self._observations(), {agent: {} for agent in self.agents}

    def step(
        self, actions: dict[str, int]
    ) -> tuple[
        dict[str, np.ndarray],
        dict[str, float],
        dict[str, bool],
        dict[str, bool],
        dict[str, dict],
    ]:
        """Plays one step of the game and returns the five per-agent dicts."""
        moves = self._validated_actions(actions)
        self._timestep += 1
        if self._state == START:
            self._state = STATE_2A if moves[AGENT_0] == 0 else STATE_2B
            reward = 0.0
            terminated = False
        else:
            payoff = PAYOFF_2A if self._state == STATE_2A else PAYOFF_2B
            reward = float(payoff[moves[AGENT_0], moves[AGENT_1]])
            terminated = True
        observations = self._observations()
        rewards = {agent: reward for agent in self.agents}
        terminations = {agent: terminated for agent in self.agents}
        truncations = {agent: False for agent in self.agents}
        infos: dict[str, dict] = {agent: {} for agent in self.agents}
        if terminated:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        """The global state: the one-hot of the current state (start, 2A, 2B), shape (3,)."""
        one_hot = np.zeros(NUM_STATES, dtype=np.float32)
        one_hot[self._state] = 1.0
        return one_hot

    # --- helpers ------------------------------------------------------------------------------

    def _observations(self) -> dict[str, np.ndarray]:
        state = self.state()
        if not self.agent_ids:
            return {agent: state.copy() for agent in self.possible_agents}
        ids = np.eye(len(self.possible_agents), dtype=np.float32)
        return {agent: np.concatenate([state, ids[index]])
                for index, agent in enumerate(self.possible_agents)}

    def _validated_actions(self, actions: dict[str, int]) -> dict[str, int]:
        if not self.agents:
            raise RuntimeError(
                "TwoStepGame.step() was called with no episode running (before reset() or "
                "after the second step); call reset() first.")
        if not isinstance(actions, dict):
            raise TypeError(
                f"TwoStepGame.step() needs a dict of actions keyed by agent; got "
                f"{type(actions).__name__}. Example: {{'agent_0': 1, 'agent_1': 1}}.")
        missing = [agent for agent in self.agents if agent not in actions]
        unknown = [agent for agent in actions if agent not in self.agents]
        if missing or unknown:
            raise ValueError(
                f"TwoStepGame.step() needs exactly one action for each of {self.agents}; "
                f"missing: {missing}, unknown agents: {unknown}.")
        moves = {}
        for agent in self.agents:
            action = actions[agent]
            if not self._action_spaces[agent].contains(action):
                raise ValueError(
                    f"TwoStepGame: the action {action!r} for {agent!r} is outside its action "
                    f"space Discrete(2); use 0 or 1.")
            moves[agent] = int(action)
        return moves

    def _known_agent(self, agent: str) -> str:
        if agent not in self._action_spaces:
            raise ValueError(
                f"TwoStepGame has no agent {agent!r}; its agents are {self.possible_agents}.")
        return agent


def _validated_agent_ids(config: dict | None) -> bool:
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise TypeError(
            f"TwoStepGame needs a config dict (or None); got {type(config).__name__}. "
            f"Example: TwoStepGame({{'agent_ids': True}}).")
    for key in config:
        if key not in _CONFIG_KEYS:
            close = difflib.get_close_matches(str(key), list(_CONFIG_KEYS), n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"TwoStepGame got an unknown config key {key!r}.{hint} Valid keys: "
                f"{list(_CONFIG_KEYS)}.")
    agent_ids = config.get("agent_ids", False)
    if not isinstance(agent_ids, bool | np.bool_):
        raise ValueError(
            f"TwoStepGame config 'agent_ids' must be True or False; got {agent_ids!r}.")
    return bool(agent_ids)
