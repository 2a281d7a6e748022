"""How a policy chooses actions from its model's outputs: the three action-selection kinds.

An algorithm picks one in its `PolicySpec` (through a factory `(config, action_space, *,
worker_index, num_workers, seed) -> ActionSelector`, so per-worker settings such as Ape-X's
epsilons are computed where the worker's policy is built):

- `SampleActionDistribution`: sample the action distribution the model parameterizes
  (PG, A2C, PPO, IMPALA); greedy = the distribution's mode.
- `EpsilonGreedy`: argmax of Q-values, a uniformly random action with probability epsilon
  (DQN with a linear schedule, Ape-X with a fixed epsilon per worker).
- `GaussianNoise`: a deterministic actor's action plus Gaussian noise, clipped to the action
  bounds (DDPG/TD3-style).

Selectors work on numpy outputs of the policy's framework-neutral `forward` (the model
contract's outputs and the recurrent state), so each is written once for both frameworks.
Sampling a distribution stays inside the framework (its own seeded generator). Every selector
passes the recurrent state through: it gets the state in and returns the model's state out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from flowrl.policy.model_contract import DETERMINISTIC_ACTOR_CRITIC, Q_VALUES

if TYPE_CHECKING:
    from flowrl.policy.policy import Policy

Extras = dict[str, np.ndarray]
State = list[np.ndarray]


class ActionSelector(ABC):
    """Turns preprocessed observation rows into actions (model space) and per-row extras."""

    @abstractmethod
    def compute_actions(self, policy: Policy, obs_rows: np.ndarray, explore: bool,
                        state: State) -> tuple[np.ndarray, State, Extras]:
        """Actions for a batch of preprocessed rows and the model's state (`[]` when
        stateless): returns `(actions, state_out, extras)`, extras stored with the samples."""

    def on_global_var_update(self, timestep: int) -> None:  # noqa: B027 - optional hook
        """Follows the global env-step count (schedules); default: nothing to update."""

    def stats(self) -> dict[str, float]:
        """Scalars worth reporting (e.g. the current epsilon)."""
        return {}


class SampleActionDistribution(ActionSelector):
    """Samples the model's action distribution (its mode when not exploring).

    Extras: `action_logp`, `action_dist_inputs`, `vf_preds`.
    """

    def compute_actions(self, policy: Policy, obs_rows: np.ndarray, explore: bool,
                        state: State) -> tuple[np.ndarray, State, Extras]:
        return policy.sample_actions(obs_rows, explore, state)

    def __repr__(self) -> str:
        return "SampleActionDistribution()"


class EpsilonGreedy(ActionSelector):
    """Greedy on Q-values; with probability epsilon a uniformly random action instead.

    Epsilon falls linearly from `initial_epsilon` to `final_epsilon` over `decay_timesteps`
    global env steps and then stays there; `EpsilonGreedy.fixed(eps)` never changes.

    Examples:
        >>> selector = EpsilonGreedy(initial_epsilon=1.0, final_epsilon=0.1, decay_timesteps=100)
        >>> selector.on_global_var_update(50); round(selector.epsilon, 3)
        0.55
    """

    def __init__(self, *, initial_epsilon: float, final_epsilon: float, decay_timesteps: int,
                 seed: int | None = None) -> None:
        for name, value in (("initial_epsilon", initial_epsilon),
                            ("final_epsilon", final_epsilon)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"EpsilonGreedy {name} must be in [0, 1]; got {name}={value}.")
        if decay_timesteps < 0:
            raise ValueError(f"EpsilonGreedy decay_timesteps must be >= 0; got "
                             f"{decay_timesteps=}.")
        self.initial_epsilon = float(initial_epsilon)
        self.final_epsilon = float(final_epsilon)
        self.decay_timesteps = int(decay_timesteps)
        self.epsilon = self.initial_epsilon
        self.rng = np.random.default_rng(seed)

    @classmethod
    def fixed(cls, epsilon: float, seed: int | None = None) -> EpsilonGreedy:
        """A constant epsilon (e.g. one of Ape-X's per-worker values)."""
        return cls(initial_epsilon=epsilon, final_epsilon=epsilon, decay_timesteps=0, seed=seed)

    def on_global_var_update(self, timestep: int) -> None:
        if self.decay_timesteps == 0:
            self.epsilon = self.final_epsilon
            return
        fraction = min(max(timestep, 0) / self.decay_timesteps, 1.0)
        self.epsilon = self.initial_epsilon + fraction * (self.final_epsilon - self.initial_epsilon)

    def compute_actions(self, policy: Policy, obs_rows: np.ndarray, explore: bool,
                        state: State) -> tuple[np.ndarray, State, Extras]:
        policy.check_contract(Q_VALUES, "compute Q-values")
        (q_values,), state_out = policy.forward(obs_rows, state)
        actions = np.argmax(q_values, axis=1).astype(np.int64)
        if explore and self.epsilon > 0.0:
            random_rows = self.rng.random(len(actions)) < self.epsilon
            count = int(random_rows.sum())
            if count:
                actions[random_rows] = self.rng.integers(0, q_values.shape[1], size=count)
        return actions, state_out, {}

    def stats(self) -> dict[str, float]:
        return {"epsilon": self.epsilon}

    def __repr__(self) -> str:
        return (f"EpsilonGreedy(epsilon={self.epsilon:.4g}, final={self.final_epsilon:.4g}, "
                f"decay_timesteps={self.decay_timesteps})")


class GaussianNoise(ActionSelector):
    """A deterministic actor's action plus N(0, stddev) noise (in [-1, 1] units), in bounds.

    The actor's output lies in [-1, 1] per dimension; it is scaled to the Box's bounds. The
    batch stores the env-space actions the critics are trained on.
    """

    def __init__(self, action_space: gym.spaces.Box, *, stddev: float = 0.1,
                 seed: int | None = None) -> None:
        if not isinstance(action_space, gym.spaces.Box):
            raise ValueError(f"GaussianNoise needs a Box action space; got {action_space}.")
        if stddev < 0:
            raise ValueError(f"GaussianNoise stddev must be >= 0; got {stddev=}.")
        self.low = np.asarray(action_space.low, np.float32).reshape(-1)
        self.high = np.asarray(action_space.high, np.float32).reshape(-1)
        self.stddev = float(stddev)
        self.rng = np.random.default_rng(seed)

    def compute_actions(self, policy: Policy, obs_rows: np.ndarray, explore: bool,
                        state: State) -> tuple[np.ndarray, State, Extras]:
        policy.check_contract(DETERMINISTIC_ACTOR_CRITIC, "compute deterministic actions")
        (unit,), state_out = policy.forward(obs_rows, state)
        unit = unit.reshape(len(obs_rows), -1)
        if explore and self.stddev > 0:
            unit = np.clip(unit + self.rng.normal(0.0, self.stddev, unit.shape), -1.0, 1.0)
        actions = self.low + (unit + 1.0) * 0.5 * (self.high - self.low)
        return actions.astype(np.float32), state_out, {}

    def __repr__(self) -> str:
        return f"GaussianNoise(stddev={self.stddev})"


def sample_action_distribution(config: Any, action_space: gym.Space, *, worker_index: int = 0,
                               num_workers: int = 0,
                               seed: int | None = None) -> SampleActionDistribution:
    """The selector factory of stochastic actor-critic algorithms (the default)."""
    return SampleActionDistribution()
