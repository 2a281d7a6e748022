"""MultiAgentArena: a two-agent grid game on the PettingZoo parallel API.

It is the small competitive game from RLlib's 2021 multi-agent tutorial, kept here as flowrl's
built-in multi-agent environment: cheap to step, easy to reason about by hand, and with rewards
that pull the two agents in opposite directions (one explores, the other chases).
"""

from __future__ import annotations

import difflib
from typing import Any

import gymnasium
import numpy as np
from pettingzoo.utils.env import ParallelEnv

__all__ = ["MultiAgentArena"]

AGENT1 = "agent1"
"""The explorer: rewarded for covering new cells, punished for collisions."""
AGENT2 = "agent2"
"""The chaser: rewarded for collisions, with a small cost for every other step."""

UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3
"""Action numbers of `Discrete(4)`."""

_ROW_COLUMN_DELTAS: dict[int, tuple[int, int]] = {
    UP: (-1, 0),
    RIGHT: (0, 1),
    DOWN: (1, 0),
    LEFT: (0, -1),
}

NEW_CELL_REWARD = 1.0
"""agent1's reward for a step in which it entered a cell it had not visited yet."""
OLD_CELL_REWARD = -0.5
"""agent1's reward for a collision-free step that did not reach a new cell."""
AGENT1_COLLISION_REWARD = -1.0
"""agent1's reward for a step with a collision."""
AGENT2_COLLISION_REWARD = 1.0
"""agent2's reward for a step with a collision."""
AGENT2_STEP_REWARD = -0.1
"""agent2's reward for a collision-free step."""

_DEFAULT_CONFIG: dict[str, Any] = {"width": 8, "height": 8, "timestep_limit": 50}


class MultiAgentArena(ParallelEnv):
    """Two agents on a grid: `agent1` explores, `agent2` tries to bump into it.

    Rules, precisely:

    * The grid is `height` rows by `width` columns (8 x 8 by default). A cell's index is
      `row * width + column`. `agent1` starts in the top-left cell (index 0), `agent2` in the
      bottom-right cell (index `width * height - 1`).
    * Both agents act every step with `Discrete(4)`: 0 up, 1 right, 2 down, 3 left. A move off
      the grid is clamped by the wall: the agent stays where it is (no collision, no penalty
      beyond the step's usual reward).
    * Each agent observes `MultiDiscrete([width * height, width * height])`: its own cell index
      first, then the other agent's.
    * Within a step the two agents move one after the other, in an order drawn uniformly at
      random from the generator seeded by `reset(seed=...)`. The second mover sees where the
      first one ended up.
    * A move onto the cell the other agent occupies at that moment is blocked: the mover stays
      where it is. This is a *collision*, whichever agent was the mover.
    * Rewards, per step: if a collision happened in the step (either agent blocked), `agent1`
      gets -1 and `agent2` gets +1. Otherwise `agent1` gets +1 if it entered a cell it had never
      visited in this episode (its start cell counts as visited) and -0.5 if not, and `agent2`
      gets -0.1. A collision overrides agent1's new-cell reward, but a new cell entered in a
      step with a collision still counts as visited.
    * There is no terminal state. After `timestep_limit` steps (50 by default) both agents are
      *truncated* (never terminated), `agents` becomes empty and the episode is over.

    `infos[agent]` is `{"collision": bool}` for the step just taken (`{}` after a reset).

    Args:
        config: May hold `width` (default 8), `height` (default 8) and `timestep_limit`
            (default 50). This is the `env_config` dict when the env is created by name
            (`"MultiAgentArena-v0"`).

    Raises:
        ValueError: For an unknown config key (naming the closest valid one), a size below one
            cell per side or a grid of a single cell, or a `timestep_limit` below 1.

    Example:
        >>> env = MultiAgentArena({"width": 4, "height": 3})
        >>> observations, infos = env.reset(seed=0)
        >>> observations["agent1"].tolist(), observations["agent2"].tolist()
        ([0, 11], [11, 0])
    """

    metadata = {"name": "MultiAgentArena-v0", "render_modes": ["ansi"], "is_parallelizable": True}

    def __init__(self, config: dict | None = None) -> None:
        settings = _validated_config(config)
        self.width: int = settings["width"]
        self.height: int = settings["height"]
        self.timestep_limit: int = settings["timestep_limit"]
        self.render_mode = "ansi"
        self.possible_agents: list[str] = [AGENT1, AGENT2]
        self.agents: list[str] = []
        num_cells = self.width * self.height
        # One space object per agent, returned by identity every time (PettingZoo requires it).
        self._observation_spaces = {
            agent: gymnasium.spaces.MultiDiscrete([num_cells, num_cells])
            for agent in self.possible_agents
        }
        self._action_spaces = {
            agent: gymnasium.spaces.Discrete(4) for agent in self.possible_agents
        }
        self._rng: np.random.Generator | None = None
        self._positions: dict[str, tuple[int, int]] = {}
        self._agent1_visited: set[tuple[int, int]] = set()
        self._timestep = 0
        self._last_collision = False

    # --- spaces -------------------------------------------------------------------------------

    def observation_space(self, agent: str) -> gymnasium.spaces.MultiDiscrete:
        """The observation space of `agent`: its own cell index, then the other agent's."""
        return self._observation_spaces[self._known_agent(agent)]

    def action_space(self, agent: str) -> gymnasium.spaces.Discrete:
        """The action space of `agent`: `Discrete(4)`, 0 up, 1 right, 2 down, 3 left."""
        return self._action_spaces[self._known_agent(agent)]

    # --- episode ------------------------------------------------------------------------------

    def reset(
        self, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        """Starts an episode; `seed` reseeds the generator that draws each step's move order."""
        if seed is not None or self._rng is None:
            self._rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self._positions = {AGENT1: (0, 0), AGENT2: (self.height - 1, self.width - 1)}
        self._agent1_visited = {self._positions[AGENT1]}
        self._timestep = 0
        self._last_collision = False
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
        """Moves both agents in a random order and returns the five per-agent dicts."""
        moves = self._validated_actions(actions)
        assert self._rng is not None  # reset() ran, or _validated_actions raised
        self._timestep += 1
        collision = False
        entered_new_cell = False
        move_order = (
            self.possible_agents if self._rng.random() < 0.5 else self.possible_agents[::-1]
        )
        for agent in move_order:
            blocked, new_cell = self._move(agent, moves[agent])
            collision |= blocked
            entered_new_cell |= new_cell
        self._last_collision = collision

        if collision:
            rewards = {AGENT1: AGENT1_COLLISION_REWARD, AGENT2: AGENT2_COLLISION_REWARD}
        else:
            agent1_reward = NEW_CELL_REWARD if entered_new_cell else OLD_CELL_REWARD
            rewards = {AGENT1: agent1_reward, AGENT2: AGENT2_STEP_REWARD}
        truncated = self._timestep >= self.timestep_limit
        observations = self._observations()
        terminations = {agent: False for agent in self.agents}
        truncations = {agent: truncated for agent in self.agents}
        infos = {agent: {"collision": collision} for agent in self.agents}
        if truncated:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def render(self) -> str:
        """The grid as text: `1` and `2` for the agents, `.` for cells agent1 has visited."""
        if not self._positions:
            raise RuntimeError("MultiAgentArena.render() needs an episode; call reset() first.")
        rows = []
        for row in range(self.height):
            cells = []
            for column in range(self.width):
                cell = (row, column)
                if cell == self._positions[AGENT1]:
                    cells.append("1")
                elif cell == self._positions[AGENT2]:
                    cells.append("2")
                else:
                    cells.append("." if cell in self._agent1_visited else " ")
            rows.append("|" + "".join(cells) + "|")
        border = "+" + "-" * self.width + "+"
        status = f"step {self._timestep}/{self.timestep_limit}"
        if self._last_collision:
            status += ", collision"
        return "\n".join([border, *rows, border, status])

    # --- helpers ------------------------------------------------------------------------------

    def cell_index(self, row: int, column: int) -> int:
        """The index of the cell at (`row`, `column`) as agents observe it."""
        return row * self.width + column

    def _observations(self) -> dict[str, np.ndarray]:
        agent1_cell = self.cell_index(*self._positions[AGENT1])
        agent2_cell = self.cell_index(*self._positions[AGENT2])
        return {
            AGENT1: np.array([agent1_cell, agent2_cell], dtype=np.int64),
            AGENT2: np.array([agent2_cell, agent1_cell], dtype=np.int64),
        }

    def _move(self, agent: str, action: int) -> tuple[bool, bool]:
        """Moves `agent`; returns (blocked by the other agent, agent1 entered a new cell)."""
        row, column = self._positions[agent]
        row_delta, column_delta = _ROW_COLUMN_DELTAS[action]
        target = (
            min(max(row + row_delta, 0), self.height - 1),
            min(max(column + column_delta, 0), self.width - 1),
        )
        other = AGENT2 if agent == AGENT1 else AGENT1
        if target == self._positions[other]:
            return True, False
        self._positions[agent] = target
        if agent == AGENT1 and target not in self._agent1_visited:
            self._agent1_visited.add(target)
            return False, True
        return False, False

    def _validated_actions(self, actions: dict[str, int]) -> dict[str, int]:
        if not self.agents:
            raise RuntimeError(
                "MultiAgentArena.step() was called with no episode running (before reset() or "
                "after the agents were truncated); call reset() first."
            )
        if not isinstance(actions, dict):
            raise TypeError(
                f"MultiAgentArena.step() needs a dict of actions keyed by agent; got "
                f"{type(actions).__name__}. Example: {{'agent1': 1, 'agent2': 3}}."
            )
        missing = [agent for agent in self.agents if agent not in actions]
        unknown = [agent for agent in actions if agent not in self.agents]
        if missing or unknown:
            raise ValueError(
                f"MultiAgentArena.step() needs exactly one action for each of {self.agents}; "
                f"missing: {missing}, unknown agents: {unknown}."
            )
        moves = {}
        for agent in self.agents:
            action = actions[agent]
            if not self._action_spaces[agent].contains(action):
                raise ValueError(
                    f"MultiAgentArena: the action {action!r} for {agent!r} is outside its action "
                    f"space Discrete(4); use 0 (up), 1 (right), 2 (down) or 3 (left)."
                )
            moves[agent] = int(action)
        return moves

    def _known_agent(self, agent: str) -> str:
        if agent not in self._action_spaces:
            raise ValueError(
                f"MultiAgentArena has no agent {agent!r}; its agents are {self.possible_agents}."
            )
        return agent


def _validated_config(config: dict | None) -> dict[str, int]:
    """Merges `config` over the defaults, with a clear error for a bad key or value."""
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise TypeError(
            f"MultiAgentArena needs a config dict (or None); got {type(config).__name__}. "
            f"Example: MultiAgentArena({{'width': 8, 'height': 8, 'timestep_limit': 50}})."
        )
    for key in config:
        if key not in _DEFAULT_CONFIG:
            close = difflib.get_close_matches(str(key), list(_DEFAULT_CONFIG), n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"MultiAgentArena got an unknown config key {key!r}.{hint} Valid keys: "
                f"{sorted(_DEFAULT_CONFIG)}."
            )
    settings = {**_DEFAULT_CONFIG, **config}
    for key, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(
                f"MultiAgentArena config {key!r} must be a positive integer; got {value!r}."
            )
        settings[key] = int(value)
    if settings["width"] * settings["height"] < 2:
        raise ValueError(
            f"MultiAgentArena needs at least two cells for its two agents; got "
            f"width={settings['width']}, height={settings['height']}."
        )
    return settings
