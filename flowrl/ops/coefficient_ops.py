"""Operators that adapt a learner policy's loss coefficients from what training measured."""

from __future__ import annotations

from flowrl.data import DEFAULT_POLICY_ID
from flowrl.iter import LocalIterator
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
                if kl > 2.0 * self.kl_target:
                    coeff *= 1.5
                elif kl < 0.5 * self.kl_target:
                    coeff *= 0.5
                policy.set_coefficient("kl_coeff", coeff)
            stats["kl_coeff"] = coeff
            LocalIterator.get_metrics().info[KL_COEFF_INFO] = coeff
        return result

    def __repr__(self) -> str:
        return f"UpdateKL(kl_target={self.kl_target})"
