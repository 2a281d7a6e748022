"""Operators that adapt a learner policy's loss coefficients from what training measured."""

from __future__ import annotations

from typing import Any

from flowrl.data import DEFAULT_POLICY_ID
from flowrl.iter import LocalIterator
from flowrl.ops.learner_thread import LearnerOutput, LockedLearnStep, stats_by_policy
from flowrl.ops.metrics import KL_COEFF_INFO
from flowrl.ops.results import TrainResult
from flowrl.workers import WorkerSet


class UpdateKL:
    """Adapts the learner's KL coefficient toward `kl_target` after each training round.

    Consumes: TrainResult. Yields: the same TrainResult, with `kl_coeff` in its stats.
    Metrics: info `learner/kl_coeff`.

    Examples:
        >>> UpdateKL(workers, kl_target=0.01)  # doctest: +SKIP
        UpdateKL(kl_target=0.01)
    """

    metrics_written = (KL_COEFF_INFO,)

    def __init__(self, workers: WorkerSet, *, kl_target: float) -> None:
        self.workers = workers
        self.kl_target = kl_target

    def __call__(self, result: TrainResult) -> TrainResult:
        for policy_id, stats in result.learner_stats.items():  # one entry per trained policy
            worker = self.workers.local_worker()
            policy = (worker.policy if policy_id == DEFAULT_POLICY_ID
                      else worker.get_policy(policy_id))
            coeff = float(policy.get_coefficient("kl_coeff"))
            kl = stats.get("kl")
            if kl is not None and coeff > 0:
                _adapt(policy, float(kl), self.kl_target)
                coeff = float(policy.get_coefficient("kl_coeff"))
            stats["kl_coeff"] = coeff
            LocalIterator.get_metrics().info[KL_COEFF_INFO] = coeff
        return result

    def __repr__(self) -> str:
        return f"UpdateKL(kl_target={self.kl_target})"


class AdaptKLCoefficient:
    """Adapts each trained policy's KL coefficient toward `kl_target` every `every_updates`
    learner updates, from the mean KL of those updates (APPO, next to its target updates).

    Takes the learner's lock, so a coefficient never changes during an update. With
    `adapt=False` the coefficient stays as it is and is only reported.

    Consumes: LearnerOutput. Yields: the same LearnerOutput, `kl_coeff` added to each trained
    policy's stats.
    Metrics: info `learner/kl_coeff`.

    Examples:
        >>> AdaptKLCoefficient(None, kl_target=0.01, every_updates=2)
        AdaptKLCoefficient(kl_target=0.01, every_updates=2)
    """

    metrics_written = (KL_COEFF_INFO,)

    def __init__(self, learn_step: LockedLearnStep | None, *, kl_target: float,
                 every_updates: int, adapt: bool = True) -> None:
        if every_updates < 1:
            raise ValueError(f"every_updates must be at least 1, got {every_updates=}.")
        self.learn_step = learn_step
        self.kl_target = kl_target
        self.every_updates = every_updates
        self.adapt = adapt
        self.last_adapted_version = 0
        self._kls: dict[str, list[float]] = {}

    def __call__(self, output: LearnerOutput) -> LearnerOutput:
        per_policy = stats_by_policy(output.stats)
        for policy_id, stats in per_policy.items():
            if "kl" in stats:
                self._kls.setdefault(policy_id, []).append(float(stats["kl"]))
        policies = self.learn_step.trained_policies()
        if output.learner_version - self.last_adapted_version >= self.every_updates:
            with self.learn_step.lock:
                for policy_id, policy in policies.items():
                    kls = self._kls.get(policy_id)
                    if self.adapt and kls:
                        _adapt(policy, sum(kls) / len(kls), self.kl_target)
                self.last_adapted_version = self.learn_step.version
            self._kls = {}
        for policy_id, policy in policies.items():
            coeff = float(policy.get_coefficient("kl_coeff"))
            LocalIterator.get_metrics().info[KL_COEFF_INFO] = coeff
            if policy_id in per_policy:
                per_policy[policy_id]["kl_coeff"] = coeff
        return output

    def __repr__(self) -> str:
        fixed = "" if self.adapt else ", adapt=False"
        return (f"AdaptKLCoefficient(kl_target={self.kl_target}, "
                f"every_updates={self.every_updates}{fixed})")


def _adapt(policy: Any, mean_kl: float, kl_target: float) -> None:
    """x1.5 above twice the target, x0.5 below half of it."""
    coeff = float(policy.get_coefficient("kl_coeff"))
    if mean_kl > 2.0 * kl_target:
        policy.set_coefficient("kl_coeff", coeff * 1.5)
    elif mean_kl < 0.5 * kl_target:
        policy.set_coefficient("kl_coeff", coeff * 0.5)

