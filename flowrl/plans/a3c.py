"""A3C: asynchronous advantage actor-critic (Mnih et al., 2016).

Paper: https://arxiv.org/abs/1602.01783

Implementation details:
1. Each rollout worker samples with its own copy of the weights and computes gradients next
   to its samples; only gradients travel to the learner.
2. The learner applies each worker's gradients as they arrive, then sends the new weights
   back to that worker only (`update="source"`), so workers run at their own pace.
3. Same actor-critic loss as A2C (GAE, value loss, entropy bonus).

Metrics reported: `info/learner/default_policy/{policy_loss, vf_loss, entropy, total_loss}`,
plus the shared `sampler/env_steps`, `learner/steps_trained`, `learner/gradient_updates`,
`learner/weight_broadcasts`, `timers/apply_grads`.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowrl.iter import LocalIterator
from flowrl.ops import ApplyGradients, AsyncGradients, TrainResult
from flowrl.plans.a2c import ActorCriticConfig
from flowrl.workers import WorkerSet


@dataclass(frozen=True, kw_only=True)
class A3CConfig(ActorCriticConfig):
    """A3C's hyperparameters: A2C's actor-critic settings, applied asynchronously."""

    num_workers: int = 2
    """Asynchronous workers; A3C needs at least one."""

    def _validate(self) -> None:
        super()._validate()
        if self.num_workers < 1:
            raise ValueError(
                f"A3C computes gradients on remote workers, so num_workers must be >= 1, got "
                f"num_workers={self.num_workers}."
            )


def a3c_plan(workers: WorkerSet, config: A3CConfig) -> LocalIterator[TrainResult]:
    """A3C as a dataflow: gradients arrive asynchronously; only their source gets new weights."""
    # Workers compute gradients on their own samples, at their own pace.
    gradients = AsyncGradients(workers)
    # Apply each as it arrives and update only the worker that sent it.
    return gradients.for_each(ApplyGradients(workers, update="source"))
