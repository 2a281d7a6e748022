"""Exploration of the actor models that replay-based control algorithms train: SAC's sampled
actions, DDPG's Ornstein-Uhlenbeck noise and TD3's Gaussian noise.

Each selector first takes uniformly random actions for `random_timesteps` env steps (the
global step count every policy follows), so the replay buffer starts with varied data, then
acts with its actor. Actors work in unit space, [-1, 1] per action dimension; with
`normalize_actions` (the default) unit actions are rescaled to the Box's bounds, otherwise
they are used as env actions (clipped to the bounds with `clip_actions`). The losses map the
stored env actions back to unit space with `to_unit_actions`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import gymnasium as gym
import numpy as np

from flowrl.policy.exploration import ActionSelector, Extras, State
from flowrl.policy.model_contract import DETERMINISTIC_ACTOR_CRITIC, SOFT_ACTOR_CRITIC

if TYPE_CHECKING:
    from flowrl.policy.policy import Policy

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
"""The range a squashed Gaussian's log-std is clamped to (acting and losses alike)."""

NoiseType = Literal["ou", "gaussian"]


def action_bounds(action_space: gym.spaces.Box, *, normalize_actions: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The Box's flat (low, high) bounds; finite ones when actions are normalized.

    Raises:
        ValueError: `normalize_actions` with an unbounded Box (nothing to rescale to).
    """
    low = np.asarray(action_space.low, np.float32).reshape(-1)
    high = np.asarray(action_space.high, np.float32).reshape(-1)
    if normalize_actions and not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError(
            f"normalize_actions=True rescales the actor's [-1, 1] outputs to the action "
            f"space's bounds, but {action_space} is unbounded; give the env finite bounds "
            "(gymnasium's RescaleAction / ClipAction), or set normalize_actions=False to use "
            "the actor's [-1, 1] outputs as the actions.")
    return low, high


def from_unit_actions(unit: np.ndarray, low: np.ndarray, high: np.ndarray, *,
                      normalize_actions: bool, clip_actions: bool) -> np.ndarray:
    """Unit-space actions ([-1, 1]) as env actions: rescaled to [low, high] when normalizing,
    else as they are (clipped to the bounds with `clip_actions`)."""
    if normalize_actions:
        return (low + (unit + 1.0) * 0.5 * (high - low)).astype(np.float32)
    return (np.clip(unit, low, high) if clip_actions else unit).astype(np.float32)


def to_unit_actions(actions: Any, low: np.ndarray, high: np.ndarray, *,
                    normalize_actions: bool) -> Any:
    """Env actions (a framework tensor or numpy, [B, A]) in unit space: the inverse of
    `from_unit_actions` (identity without normalizing)."""
    if not normalize_actions:
        return actions
    return (actions - low) * (2.0 / (high - low)) - 1.0


class _RandomStart(ActionSelector):
    """Uniformly random actions while the global step count is below `random_timesteps`."""

    def __init__(self, random_timesteps: int, seed: int | None) -> None:
        if random_timesteps < 0:
            raise ValueError(f"random_timesteps must be >= 0, got {random_timesteps}.")
        self.random_timesteps = int(random_timesteps)
        self.timestep = 0
        self.rng = np.random.default_rng(seed)

    def on_global_var_update(self, timestep: int) -> None:
        self.timestep = int(timestep)

    def acting_randomly(self, explore: bool) -> bool:
        """Whether this step's actions are uniformly random (exploring, before the actor)."""
        return explore and self.timestep < self.random_timesteps

    def stats(self) -> dict[str, float]:
        return {"random_actions": float(self.timestep < self.random_timesteps)}


class SoftActorSampling(_RandomStart):
    """SAC's actions: a sample of the actor's distribution (tanh-squashed Gaussian for a Box,
    categorical for Discrete); its mode when not exploring (tanh of the mean, the argmax)."""

    def __init__(self, action_space: gym.Space, *, random_timesteps: int = 0,
                 normalize_actions: bool = True, clip_actions: bool = True,
                 seed: int | None = None) -> None:
        super().__init__(random_timesteps, seed)
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if self.discrete:
            self.num_actions = int(action_space.n)
        elif isinstance(action_space, gym.spaces.Box):
            self.low, self.high = action_bounds(action_space, normalize_actions=normalize_actions)
        else:
            raise ValueError(f"SAC acts in Box or Discrete action spaces; got {action_space}.")
        self.normalize_actions, self.clip_actions = normalize_actions, clip_actions

    def compute_actions(self, policy: Policy, obs_rows: np.ndarray, explore: bool,
                        state: State) -> tuple[np.ndarray, State, Extras]:
        policy.check_contract(SOFT_ACTOR_CRITIC, "sample a soft actor's actions")
        (inputs,), state_out = policy.forward(obs_rows, state)
        count = len(obs_rows)
        if self.discrete:
            if self.acting_randomly(explore):
                return self.rng.integers(0, self.num_actions, count), state_out, {}
            if not explore:
                return inputs.argmax(axis=1), state_out, {}
            gumbel = -np.log(-np.log(self.rng.uniform(1e-20, 1.0, inputs.shape)))
            return (inputs + gumbel).argmax(axis=1), state_out, {}
        size = inputs.shape[1] // 2
        if self.acting_randomly(explore):
            unit = self.rng.uniform(-1.0, 1.0, (count, size))
        else:
            mean, log_std = inputs[:, :size], np.clip(inputs[:, size:], LOG_STD_MIN, LOG_STD_MAX)
            if explore:
                mean = mean + np.exp(log_std) * self.rng.standard_normal(mean.shape)
            unit = np.tanh(mean)
        return self._env_actions(unit), state_out, {}

    def _env_actions(self, unit: np.ndarray) -> np.ndarray:
        return from_unit_actions(unit, self.low, self.high,
                                 normalize_actions=self.normalize_actions,
                                 clip_actions=self.clip_actions)

    def __repr__(self) -> str:
        return f"SoftActorSampling(random_timesteps={self.random_timesteps})"


class ActorNoise(_RandomStart):
    """A deterministic actor's action plus exploration noise, in unit space, clipped to
    [-1, 1]: Ornstein-Uhlenbeck (DDPG; `x += theta * -x + sigma * N(0, 1)` per env row, times
    `scale`) or Gaussian (TD3; `scale * N(0, 1)`)."""

    def __init__(self, action_space: gym.Space, *, noise_type: NoiseType = "gaussian",
                 scale: float = 0.1, ou_theta: float = 0.15, ou_sigma: float = 0.2,
                 random_timesteps: int = 0, normalize_actions: bool = True,
                 clip_actions: bool = True, seed: int | None = None) -> None:
        super().__init__(random_timesteps, seed)
        if not isinstance(action_space, gym.spaces.Box):
            raise ValueError(
                f"A deterministic actor (DDPG, TD3) needs a continuous (Box) action space; got "
                f"{action_space}. Use DQN or SAC for Discrete actions.")
        if noise_type not in ("ou", "gaussian"):
            raise ValueError(f"exploration noise type must be 'ou' or 'gaussian', got "
                             f"{noise_type!r}.")
        if scale < 0:
            raise ValueError(f"exploration noise scale must be >= 0, got {scale}.")
        self.low, self.high = action_bounds(action_space, normalize_actions=normalize_actions)
        self.noise_type, self.scale = noise_type, float(scale)
        self.ou_theta, self.ou_sigma = float(ou_theta), float(ou_sigma)
        self.normalize_actions, self.clip_actions = normalize_actions, clip_actions
        self.ou_state: np.ndarray | None = None

    def compute_actions(self, policy: Policy, obs_rows: np.ndarray, explore: bool,
                        state: State) -> tuple[np.ndarray, State, Extras]:
        policy.check_contract(DETERMINISTIC_ACTOR_CRITIC, "compute deterministic actions")
        (unit,), state_out = policy.forward(obs_rows, state)
        unit = unit.reshape(len(obs_rows), -1)
        if self.acting_randomly(explore):
            unit = self.rng.uniform(-1.0, 1.0, unit.shape)
        elif explore and self.scale > 0:
            unit = np.clip(unit + self.scale * self._noise(unit.shape), -1.0, 1.0)
        return from_unit_actions(unit, self.low, self.high,
                                 normalize_actions=self.normalize_actions,
                                 clip_actions=self.clip_actions), state_out, {}

    def _noise(self, shape: tuple[int, ...]) -> np.ndarray:
        if self.noise_type == "gaussian":
            return self.rng.standard_normal(shape)
        if self.ou_state is None or self.ou_state.shape != shape:
            self.ou_state = np.zeros(shape)
        self.ou_state += (-self.ou_theta * self.ou_state
                          + self.ou_sigma * self.rng.standard_normal(shape))
        return self.ou_state

    def __repr__(self) -> str:
        return (f"ActorNoise({self.noise_type}, scale={self.scale}, "
                f"random_timesteps={self.random_timesteps})")
