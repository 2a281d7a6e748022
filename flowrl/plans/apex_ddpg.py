"""Ape-X DDPG: Ape-X's distributed prioritized replay (Horgan et al., 2018) with DDPG's (or
TD3's) learner.

Paper: https://arxiv.org/abs/1803.00933

Implementation details:
1. Ape-X's plan (`flowrl.plans.apex.distributed_replay_plan`): asynchronous rollouts on
   remote workers, with initial priorities computed on the workers, fan into
   `num_replay_buffer_shards` replay actors; replayed batches feed a learner thread that
   trains DDPG's losses and returns the batch's |TD errors| as new priorities.
   `training_intensity` holds trained rows per sampled env step in both directions.
2. The learner is DDPG's (`flowrl.plans.ddpg`): a deterministic actor and critic(s), the
   actor and critic optimizer groups, L2 on kernels; `twin_q`, `policy_delay` and
   `smooth_target_policy` turn it into TD3's.
3. Per-worker exploration: worker i of N adds Ornstein-Uhlenbeck noise scaled by
   `exploration_noise_scale * 0.4^(7 i / (N - 1))` (the first worker explores the most, the
   last almost not at all), after `random_timesteps` uniform actions.
4. n-step returns (3) on the workers; worker-side priorities bootstrap from the worker's
   online networks (its target networks are never synced), the learner's from its targets.
5. The target networks move by `tau` every `target_network_update_freq` samples trained.

Metrics are DDPG's learner statistics plus Ape-X's counters (see docs/plans/apex.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym

from flowrl.iter import LocalIterator
from flowrl.ops import TrainResult
from flowrl.plans.apex import check_distributed_replay_settings, distributed_replay_plan
from flowrl.plans.ddpg import (
    ACTOR_CRITIC_GROUPS,
    DDPGConfig,
    check_box_actions,
    compute_online_td_errors,
    compute_td_errors,
    ddpg_loss_tf,
    ddpg_loss_torch,
)
from flowrl.policy import PolicySpec, deterministic_actor_critic_model
from flowrl.policy.actor_exploration import ActorNoise
from flowrl.policy.postprocessing import n_step_postprocess
from flowrl.workers import WorkerSet


@dataclass(frozen=True, kw_only=True)
class ApexDDPGConfig(DDPGConfig):
    """Ape-X DDPG's hyperparameters: DDPG's learner, replay actors, asynchronous workers."""

    num_workers: int = 2
    """Remote rollout workers, each with its own exploration noise scale."""
    num_cpus_per_worker: float = 0.5
    """CPUs reserved per rollout worker."""
    rollout_fragment_length: int = 50
    """Env steps per env per sample request."""
    n_step: int = 3
    """Rewards summed into each transition's return before bootstrapping."""
    buffer_size: int = 100_000
    """Replay capacity in transitions, split equally over the shards."""
    learning_starts: int = 2000
    """Transitions stored (over all shards) before the learner's first step."""
    prioritized_replay: bool = True
    """Sample transitions in proportion to |TD error|^alpha (else uniformly)."""
    target_network_update_freq: int = 256
    """Samples trained on between target moves (each by tau): 256 = after every update."""
    tau: float = 0.005
    """Each target update moves the target networks this far toward the online ones."""
    training_intensity: float | None = 64.0
    """Rows trained per env step sampled, held both ways by the plan; None: learner runs free."""
    exploration_noise_scale: float = 0.4
    """The first worker's noise scale; worker i of N uses it times 0.4^(7 i / (N - 1))."""
    num_replay_buffer_shards: int = 2
    """Replay actors the buffer is split over (each runs with num_cpus=0)."""
    max_weight_sync_delay: int = 400
    """Env steps a worker samples between weight updates from the learner."""
    worker_side_prioritization: bool = True
    """Rollout workers compute the initial priorities of their transitions."""

    def _validate(self) -> None:
        super()._validate()
        check_distributed_replay_settings(self)


def per_worker_noise(config: ApexDDPGConfig, action_space: gym.Space, *, worker_index: int = 0,
                     num_workers: int = 0, seed: int | None = None) -> ActorNoise:
    """Ape-X DDPG's exploration: OU (or Gaussian) noise whose scale falls from the first
    worker to the last; the learner (worker 0) uses the base scale but never samples.

    Examples:
        >>> import numpy as np
        >>> box = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        >>> [round(per_worker_noise(ApexDDPGConfig(), box, worker_index=i,
        ...                         num_workers=3).scale, 4) for i in (1, 2, 3)]
        [0.4, 0.0162, 0.0007]
    """
    check_box_actions(action_space, "Ape-X DDPG")
    position = 0.0
    if worker_index >= 1 and num_workers > 1:
        position = (worker_index - 1) / (num_workers - 1)
    return ActorNoise(action_space, noise_type=config.exploration_noise_type,
                      scale=config.exploration_noise_scale * 0.4 ** (7 * position),
                      ou_theta=config.ou_theta, ou_sigma=config.ou_sigma,
                      random_timesteps=config.random_timesteps,
                      normalize_actions=config.normalize_actions,
                      clip_actions=config.clip_actions, seed=seed)


APEX_DDPG_POLICY = PolicySpec(
    name="apex_ddpg", torch_loss=ddpg_loss_torch, tf_loss=ddpg_loss_tf,
    model=deterministic_actor_critic_model, action_selection=per_worker_noise,
    postprocess=n_step_postprocess, target_network=True, config_class=ApexDDPGConfig,
    optimizer_groups=ACTOR_CRITIC_GROUPS)
"""Ape-X DDPG's policy: DDPG's networks and losses, a noise scale per worker."""


def apex_ddpg_plan(workers: WorkerSet, config: ApexDDPGConfig) -> LocalIterator[TrainResult]:
    """Ape-X DDPG as a dataflow: rollouts fan into replay actors, replay feeds a DDPG
    learner thread (see `flowrl.plans.apex.distributed_replay_plan`)."""
    return distributed_replay_plan(workers, config, compute_td_errors=compute_td_errors,
                                   compute_online_td_errors=compute_online_td_errors)


__all__ = ["APEX_DDPG_POLICY", "ApexDDPGConfig", "apex_ddpg_plan", "per_worker_noise"]
