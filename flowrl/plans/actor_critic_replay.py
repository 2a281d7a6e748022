"""The settings and helpers SAC, DDPG and TD3 share: off-policy actor-critic learning from a
replay buffer, with actions in unit space ([-1, 1]) inside the policy.

Each of the three is `flowrl.plans.off_policy.replay_train_flow` with its own losses: the
critics regress on a bootstrapped target (through truncation, never through termination;
n-step returns optional), the actor climbs the critics, and the target networks follow the
online ones by Polyak averaging (`tau`) every `target_network_update_freq` optimizer updates.
The actor, the critics (and SAC's temperature) are separate optimizer groups, each with its
own Adam, learning rate and gradient clipping.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym

from flowrl.config import ModelConfig
from flowrl.plans.off_policy import ReplayConfig
from flowrl.policy.actor_exploration import action_bounds, to_unit_actions


@dataclass(frozen=True, kw_only=True)
class ActorCriticReplayConfig(ReplayConfig):
    """Settings shared by SAC, DDPG and TD3 (on top of the replay settings)."""

    rollout_fragment_length: int = 1
    """Env steps per env per sampling round: 1 interleaves one env step with its updates."""
    train_batch_size: int = 256
    """Rows per replayed batch (one update of every optimizer group)."""
    buffer_size: int = 1_000_000
    """Replay capacity in transitions."""
    learning_starts: int = 1000
    """Transitions stored before the first update."""
    target_network_update_freq: int = 1
    """Optimizer updates between target-network moves (each by `tau`)."""
    tau: float = 0.005
    """Each target update moves the target networks this far toward the online ones."""
    n_step: int = 1
    """Rewards summed into each transition's return before bootstrapping."""
    prioritized_replay: bool = False
    """Sample transitions in proportion to |TD error|^alpha (else uniformly)."""
    training_intensity: float | None = 256.0
    """Rows trained per env step sampled (256: one update of 256 rows per env step)."""
    model: ModelConfig = dataclasses.field(
        default_factory=lambda: ModelConfig(fcnet_hiddens=(256, 256), fcnet_activation="relu"))
    """Hidden layers of the actor and of each critic (each network has its own)."""
    lr: float = 3e-4
    """Not used for training: the actor and critics follow `actor_lr` and `critic_lr`."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics."""
    twin_q: bool = True
    """Two critics; targets take the smaller value (clipped double Q)."""
    random_timesteps: int = 1000
    """Env steps of uniformly random actions before the actor acts."""
    normalize_actions: bool = True
    """Rescale the actor's [-1, 1] actions to the Box's bounds (False: use them as they are)."""
    clip_actions: bool = True
    """Clip env actions to the Box's bounds when normalize_actions is False."""

    target_update_by: ClassVar[str] = "updates"

    def _warn_if_learning_rate_unusual(self) -> None:
        """`lr` is unused here; `actor_lr` and `critic_lr` are checked instead."""
        for name in ("actor_lr", "critic_lr"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {name}={value}.")
            if value > 0.1:
                self._warn(f"{name}={value} is unusually high for Adam (typical 1e-4 to 3e-3).")

    def _validate(self) -> None:
        super()._validate()
        if self.random_timesteps < 0:
            raise ValueError(f"random_timesteps must be >= 0, got {self.random_timesteps}.")


def to_unit(policy: Any, actions: Any) -> Any:
    """A batch's stored env actions in the actor's unit space (a tensor of either framework)."""
    normalize = policy.config.normalize_actions
    if not normalize:
        return actions
    low, high = action_bounds(policy.action_space, normalize_actions=normalize)
    return to_unit_actions(actions, policy._to_framework(low), policy._to_framework(high),
                           normalize_actions=normalize)


def check_box_actions(action_space: gym.Space, algorithm: str) -> None:
    """Raises a clear error unless `action_space` is a Box (DDPG's and TD3's actors)."""
    if not isinstance(action_space, gym.spaces.Box):
        raise ValueError(
            f"{algorithm} trains a deterministic actor for continuous (Box) actions; got "
            f"action_space={action_space}. For Discrete actions use SAC (discrete SAC) or DQN.")


def mean_of(values: list[Any]) -> Any:
    """The mean of a list of same-shaped tensors (either framework), e.g. of twin TD errors."""
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total / float(len(values))


def kernel_l2(policy: Any, prefixes: tuple[str, ...]) -> list[Any]:
    """The kernels (not biases) of the built-in model's layers under `prefixes`, for L2."""
    params = policy.model_weights.params
    return [params[name] for name in policy.model_weights.names
            if name.startswith(prefixes) and name.endswith("/kernel")]


ACTION_NOISE = "action_noise"
"""Optional batch column of standard-normal noise [B, A] for the actor's sampled actions: a
loss uses it instead of drawing its own, which makes it a pure function of the batch (the
Torch/TF parity tests rely on it)."""
NEXT_ACTION_NOISE = "next_action_noise"
"""As `ACTION_NOISE`, for the actions sampled at `new_obs` (SAC's target, TD3's smoothing)."""


def standard_normal(policy: Any, batch: Any, name: str, like: Any) -> Any:
    """Standard-normal noise shaped like the tensor `like`: the batch's column `name` when it
    carries one (`ACTION_NOISE`, `NEXT_ACTION_NOISE`), else a draw from the policy's seeded
    generator (either framework)."""
    if name in batch:
        return batch[name]
    if policy.framework == "torch":
        import torch

        return torch.randn(like.shape, generator=policy.generator, device=like.device)
    import tensorflow as tf

    return policy.generator.normal(tf.shape(like))


__all__ = ["ACTION_NOISE", "NEXT_ACTION_NOISE", "ActorCriticReplayConfig", "check_box_actions",
           "kernel_l2", "mean_of", "standard_normal", "to_unit"]
