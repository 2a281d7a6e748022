"""Tiny gymnasium environments whose dynamics a test can reason about exactly."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class CorridorEnv(gym.Env):
    """Walk right along a corridor of `length` cells; reward 1 for reaching the end.

    Action 1 moves right, action 0 stays. Reaching the end *terminates* the episode; running
    out of `max_steps` *truncates* it. The observation is `[position / length, steps / max]`,
    so a truncated episode's last observation differs from the next episode's first.

    Args:
        env_config: may hold `length` (default 5) and `max_steps` (default 20).
    """

    def __init__(self, env_config: dict | None = None) -> None:
        config = dict(env_config or {})
        self.length = int(config.get("length", 5))
        self.max_steps = int(config.get("max_steps", 20))
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.position = 0
        self.steps = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.position / self.length, self.steps / self.max_steps],
                        dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.position, self.steps = 0, 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self.position += int(action == 1)
        self.steps += 1
        terminated = self.position >= self.length
        truncated = not terminated and self.steps >= self.max_steps
        return self._obs(), float(terminated), terminated, truncated, {}


class NaNRewardEnv(CorridorEnv):
    """A corridor whose rewards are NaN: training on it must fail with a clear error."""

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, _, terminated, truncated, info = super().step(action)
        return obs, float("nan"), terminated, truncated, info


class ContinuousCorridorEnv(CorridorEnv):
    """The corridor with a continuous action in [-2, 2]: a positive action moves right.

    For the continuous-control algorithms (DDPG, TD3, SAC on a Box): the same exact dynamics
    and rewards as `CorridorEnv`, with bounds other than [-1, 1] so action rescaling shows.
    """

    def __init__(self, env_config: dict | None = None) -> None:
        super().__init__(env_config)
        self.action_space = gym.spaces.Box(-2.0, 2.0, shape=(1,), dtype=np.float32)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        value = float(np.asarray(action).reshape(-1)[0])
        if not -2.0 <= value <= 2.0:
            raise ValueError(f"action {value} lies outside the action space [-2, 2]")
        return super().step(int(value > 0))
