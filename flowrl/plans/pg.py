"""PG: vanilla policy gradient (REINFORCE with batched synchronous sampling).

Paper: Williams, 1992, "Simple statistical gradient-following algorithms for connectionist
reinforcement learning"; Sutton et al., 2000.

Implementation details:
1. Synchronous sampling from all workers into train batches of `train_batch_size` steps.
2. Advantages are discounted returns (no critic, no GAE). Batches hold complete episodes by
   default, because without a value function a cut episode could only bootstrap with 0.
3. One gradient step per train batch on -mean(logp(a) * return).

Metrics reported: `info/learner/default_policy/{policy_loss, total_loss, ...}`, plus the shared
`sampler/env_steps`, `learner/steps_trained`, `learner/weight_broadcasts`, `timers/learn`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from flowrl.config import AlgorithmConfig
from flowrl.iter import LocalIterator
from flowrl.ops import BroadcastWeights, ConcatBatches, ParallelRollouts, TrainOneStep, TrainResult
from flowrl.policy import PolicySpec, pg_loss_tf, pg_loss_torch
from flowrl.workers import WorkerSet


@dataclass(frozen=True, kw_only=True)
class PolicyGradientConfig(AlgorithmConfig):
    """Settings of the policy-gradient loss family (PG, A2C, A3C, PPO): critic, GAE, weights."""

    use_critic: bool = True
    """Learn a value function (needed for GAE and for actor-critic advantages)."""
    use_gae: bool = True
    """Use generalized advantage estimation; otherwise advantages are returns (minus values)."""
    gae_lambda: float = 1.0
    """GAE lambda; 1.0 is Monte Carlo, 0.9-0.99 typical."""
    vf_loss_coeff: float = 0.5
    """Weight of the value loss; typical 0.25-1."""
    entropy_coeff: float = 0.0
    """Weight of the entropy bonus; typical 0-0.01."""

    def _validate(self) -> None:
        super()._validate()
        self._check_in_range("gae_lambda", 0.0, 1.0)
        self._check_at_least("vf_loss_coeff", 0.0)
        self._check_at_least("entropy_coeff", 0.0)
        if self.use_gae and not self.use_critic:
            raise ValueError(
                f"GAE needs a value function: use_gae={self.use_gae} with "
                f"use_critic={self.use_critic}; set use_critic=True or use_gae=False."
            )


@dataclass(frozen=True, kw_only=True)
class PGConfig(PolicyGradientConfig):
    """Vanilla policy gradient's hyperparameters."""

    lr: float = 2e-3
    """Adam learning rate; typical 1e-4 to 3e-3."""
    train_batch_size: int = 1000
    """Env steps per gradient step (whole episodes, so a little more)."""
    num_envs_per_worker: int = 4
    """Envs stepped together per worker."""
    rollout_fragment_length: int = 50
    """Steps per env per sample (extended to whole episodes)."""
    batch_mode: Literal["truncate_episodes", "complete_episodes"] = "complete_episodes"
    """Whole episodes: without a critic, a cut episode's return could only bootstrap with 0."""
    use_gae: bool = False
    """PG uses plain discounted returns as advantages."""
    use_critic: bool = False
    """PG learns no value function."""


PG_POLICY = PolicySpec(name="pg", torch_loss=pg_loss_torch, tf_loss=pg_loss_tf,
                       coefficients=("entropy_coeff",), config_class=PGConfig,
                       recurrent_loss=True)
"""The policy-gradient policy PG, A2C and A3C train: sampled actions, GAE, the PG loss."""


def pg_flow(experiences: LocalIterator[Any], workers: WorkerSet, config: PGConfig,
            policy_id: str | None = None) -> LocalIterator[TrainResult]:
    """PG's training flow for one policy: its experiences in, training results out.

    Args:
        experiences: the policy's experiences, sampled in lock-step.
        workers: the rollout workers (the learner's policy is the local worker's).
        config: the policy's typed config.
        policy_id: the policy this flow trains; None trains the workers' own trained policies
            (the default policy of a single-agent run).
    """
    policy_ids = None if policy_id is None else [policy_id]
    batches = experiences.combine(ConcatBatches(min_batch_size=config.train_batch_size))
    trained = batches.for_each(TrainOneStep(workers, policy_ids=policy_ids))
    # Weight sync is its own stage, not a side effect of training.
    return trained.for_each(BroadcastWeights(workers, policy_ids=policy_ids))


def steps_per_update(workers: WorkerSet, config: PolicyGradientConfig) -> float:
    """Env steps a policy-gradient flow (PG, A2C, PPO) consumes per update: `train_batch_size`
    rounded up to whole sampling rounds (A2C with microbatches: all microbatches of one
    update). Balances flows composed side by side."""
    steps_per_round = workers.config.steps_per_sample_round
    microbatch_size = getattr(config, "microbatch_size", None)
    if microbatch_size:
        rounds = math.ceil(microbatch_size / steps_per_round) * config.num_microbatches
    else:
        rounds = math.ceil(config.train_batch_size / steps_per_round)
    return float(rounds * steps_per_round)


def pg_plan(workers: WorkerSet, config: PGConfig) -> LocalIterator[TrainResult]:
    """PG as a dataflow: sample in lock-step, one gradient step per train batch, sync."""
    # Synchronous sampling: every batch comes from the current weights.
    return pg_flow(ParallelRollouts(workers, mode="bulk_sync"), workers, config)
