"""A2C: synchronous advantage actor-critic (the synchronous variant of Mnih et al., 2016).

Paper: https://arxiv.org/abs/1602.01783

Implementation details:
1. Synchronous sampling from all workers; GAE advantages with a learned value function.
2. Loss = -mean(logp(a) * advantage) + vf_loss_coeff * value error - entropy_coeff * entropy.
3. Default: one gradient step per train batch. With `microbatch_size`, gradients are computed
   on microbatches, averaged over `num_microbatches` of them weighted by their sizes, and
   applied once: the full-batch update with less peak memory (gradient clipping then applies
   per microbatch). A microbatch is at least one sampling round of all workers.

Metrics reported: `info/learner/default_policy/{policy_loss, vf_loss, entropy, total_loss}`,
plus the shared `sampler/env_steps`, `learner/steps_trained`, `learner/weight_broadcasts`,
`timers/learn` (or `timers/compute_grads` and `timers/apply_grads` with microbatches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from flowrl.iter import LocalIterator
from flowrl.ops import (
    ApplyGradients,
    AverageGradients,
    BroadcastWeights,
    ComputeGradients,
    ConcatBatches,
    ParallelRollouts,
    TrainOneStep,
    TrainResult,
)
from flowrl.plans.pg import PolicyGradientConfig
from flowrl.workers import WorkerSet


@dataclass(frozen=True, kw_only=True)
class ActorCriticConfig(PolicyGradientConfig):
    """Advantage actor-critic settings shared by A2C and its asynchronous variant A3C."""

    rollout_fragment_length: int = 5
    """Steps per env per sample; actor-critic learns from many short n-step fragments."""
    num_envs_per_worker: int = 4
    """Envs stepped together per worker."""
    lr: float = 7e-4
    """Adam learning rate; typical 1e-4 to 1e-3."""
    gamma: float = 0.98
    """Discount factor."""
    gae_lambda: float = 0.9
    """GAE lambda; 1.0 gives n-step returns minus values."""
    grad_clip: float | None = 0.5
    """Global-norm gradient clipping; None disables it."""
    min_time_s_per_iteration: float = 1.0
    """Updates are small; one reported iteration gathers 1 s of them."""


@dataclass(frozen=True, kw_only=True)
class A2CConfig(ActorCriticConfig):
    """A2C's hyperparameters."""

    train_batch_size: int = 40
    """Env steps per gradient update (one round: 2 workers x 4 envs x 5 steps)."""
    microbatch_size: int | None = None
    """If set, compute gradients on microbatches of this size and average them per update."""

    @property
    def num_microbatches(self) -> int:
        """Microbatches averaged per update (train_batch_size / microbatch_size, rounded up)."""
        if not self.microbatch_size:
            return 1
        return math.ceil(self.train_batch_size / self.microbatch_size)

    def _validate(self) -> None:
        super()._validate()
        if self.microbatch_size is not None and not (
            0 < self.microbatch_size <= self.train_batch_size
        ):
            raise ValueError(
                "microbatch_size must be in (0, train_batch_size], got "
                f"microbatch_size={self.microbatch_size} with "
                f"train_batch_size={self.train_batch_size}."
            )


def a2c_flow(experiences: LocalIterator[Any], workers: WorkerSet, config: A2CConfig,
             policy_id: str | None = None) -> LocalIterator[TrainResult]:
    """A2C's training flow for one policy: one (possibly microbatched) update per batch, sync.

    Takes the arguments of `flowrl.plans.pg.pg_flow`.
    """
    policy_ids = None if policy_id is None else [policy_id]
    if not config.microbatch_size:
        batches = experiences.combine(ConcatBatches(min_batch_size=config.train_batch_size))
        trained = batches.for_each(TrainOneStep(workers, policy_ids=policy_ids))
        # Weight sync is its own stage, not a side effect of training.
        return trained.for_each(BroadcastWeights(workers, policy_ids=policy_ids))
    # Microbatches bound peak memory; averaging their gradients gives one update.
    microbatches = experiences.combine(ConcatBatches(min_batch_size=config.microbatch_size))
    averaged = microbatches.for_each(ComputeGradients(workers, policy_ids=policy_ids)).batch(
        config.num_microbatches).for_each(AverageGradients())
    return averaged.for_each(ApplyGradients(workers, update="all"))


def a2c_plan(workers: WorkerSet, config: A2CConfig) -> LocalIterator[TrainResult]:
    """A2C as a dataflow: lock-step sampling, one (possibly microbatched) update, sync."""
    # Synchronous sampling: all workers act with the same weights.
    return a2c_flow(ParallelRollouts(workers, mode="bulk_sync"), workers, config)
