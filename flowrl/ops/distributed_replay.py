"""Operators of distributed-replay plans (Ape-X): priorities computed where samples are made,
weights sent to each worker after it sampled enough, and a learner step that returns the TD
errors of what it trained on."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from flowrl.data import MultiAgentBatch, SampleBatch
from flowrl.iter import GraphLink, LocalIterator, executor
from flowrl.ops.graph_links import workers_graph_link
from flowrl.ops.learner_thread import LearnerOutput, LockedLearnStep, stats_by_policy
from flowrl.ops.metrics import (
    NUM_WEIGHT_BROADCASTS_COUNTER,
    STEPS_SAMPLED_COUNTER,
    STEPS_TRAINED_COUNTER,
)
from flowrl.ops.replay_ops import PRIORITIES, TD_ERRORS
from flowrl.ops.results import TrainResult
from flowrl.replay import BATCH_INDEXES
from flowrl.workers import WorkerSet, get_current_worker

TDErrorFn = Callable[[Any, SampleBatch], np.ndarray]
"""`(policy, batch) -> per-row TD errors`: how an algorithm scores its rows for replay."""


class WorkerSidePriorities:
    """Adds initial priorities (|TD error| under the worker's own network) to each batch, on
    the rollout worker that sampled it.

    A `MultiAgentBatch` gets them per policy, each policy's rows scored with its own network
    (policies whose config turns `worker_side_prioritization` off are left as they are).

    Consumes: SampleBatch or MultiAgentBatch (on a rollout worker). Yields: the batch with a
    `priorities` column (per policy).
    Metrics: none.

    Args:
        compute_td_errors: `(policy, batch) -> per-row TD errors` under the worker's network
            (the algorithm's, e.g. DQN's `compute_online_td_errors`).

    Examples:
        >>> WorkerSidePriorities(compute_td_errors=None)
        WorkerSidePriorities()
    """

    def __init__(self, *, compute_td_errors: TDErrorFn) -> None:
        self.compute_td_errors = compute_td_errors

    def __call__(self, batch: SampleBatch | MultiAgentBatch) -> SampleBatch | MultiAgentBatch:
        worker = get_current_worker()
        if isinstance(batch, MultiAgentBatch):
            return MultiAgentBatch(
                {pid: self._with_priorities(worker.get_policy(pid), rows, check_config=True)
                 for pid, rows in batch.policy_batches.items()}, batch.env_steps)
        return self._with_priorities(worker.policy, batch)

    def _with_priorities(self, policy: Any, batch: SampleBatch, *,
                         check_config: bool = False) -> SampleBatch:
        if not len(batch) or check_config and not getattr(
                policy.config, "worker_side_prioritization", False):
            return batch
        td_errors = self.compute_td_errors(policy, batch)
        return SampleBatch({**batch, PRIORITIES: np.abs(td_errors)})

    def __repr__(self) -> str:
        return "WorkerSidePriorities()"


class UpdateWorkerWeights:
    """Sends the learner's weights to a rollout worker once it has sampled
    `max_weight_sync_delay` env steps since its last update.

    The weights are read under the learner's lock (never half an update) and `put` once per
    learner version; the same reference goes to every worker that is due. A multi-agent
    learner sends {policy id: weights} of all its trained policies.

    Consumes: (rollout worker, SampleBatch). Yields: the same pair.
    Metrics: counter `learner/weight_broadcasts`.

    Examples:
        >>> UpdateWorkerWeights(None, max_weight_sync_delay=400)
        UpdateWorkerWeights(max_weight_sync_delay=400)
    """

    metrics_written = (NUM_WEIGHT_BROADCASTS_COUNTER,)

    def __init__(self, learn_step: LockedLearnStep | None, *,
                 max_weight_sync_delay: int) -> None:
        if max_weight_sync_delay < 1:
            raise ValueError(f"max_weight_sync_delay must be at least 1 env step, got "
                             f"{max_weight_sync_delay=}")
        self.learn_step = learn_step
        self.max_weight_sync_delay = max_weight_sync_delay
        self.steps_since_update: dict[Any, int] = defaultdict(int)
        self._weights_ref: Any = None
        self._weights_version = -1

    def __call__(self, item: tuple[Any, SampleBatch]) -> tuple[Any, SampleBatch]:
        actor, batch = item
        self.steps_since_update[actor] += len(batch)
        if self.steps_since_update[actor] >= self.max_weight_sync_delay:
            learn_step = self.learn_step
            if learn_step.version != self._weights_version:
                with learn_step.lock:
                    weights = learn_step.get_weights()
                    version = learn_step.version
                self._weights_ref = executor.put(weights)
                self._weights_version = version
            metrics = LocalIterator.get_metrics()
            global_vars = {"timestep": int(metrics.counters[STEPS_SAMPLED_COUNTER])}
            learn_step.workers.set_weights_of(actor, self._weights_ref, global_vars)
            self.steps_since_update[actor] = 0
            metrics.counters[NUM_WEIGHT_BROADCASTS_COUNTER] += 1
        return item

    def graph_links(self) -> list[GraphLink]:
        """A dashed "weights" edge back to the rollout workers' source."""
        if self.learn_step is None or not self.learn_step.workers.remote_workers():
            return []
        return [workers_graph_link(self.learn_step.workers, "to", "weights")]

    def __repr__(self) -> str:
        return f"UpdateWorkerWeights(max_weight_sync_delay={self.max_weight_sync_delay})"


class LearnWithTDErrors:
    """One Ape-X update (run by `LockedLearnStep`, under its lock): TD errors of the batch
    (for its priorities), then one gradient step; the per-row errors and buffer slots ride
    along in the stats. A `MultiAgentBatch` (the trained policies' rows) trains each policy on
    its rows and returns {policy id: stats}, each with that policy's TD errors.

    Args:
        workers: the WorkerSet whose local worker holds the learner policies.
        compute_td_errors: `(policy, batch) -> per-row TD errors` (the algorithm's).
        with_td_errors: compute them (prioritized replay) or not.
    """

    def __init__(self, workers: WorkerSet, *, compute_td_errors: TDErrorFn,
                 with_td_errors: bool) -> None:
        self.workers = workers
        self.compute_td_errors = compute_td_errors
        self.with_td_errors = with_td_errors

    def __call__(self, batch: SampleBatch | MultiAgentBatch) -> dict[str, Any]:
        local = self.workers.local_worker()
        if isinstance(batch, MultiAgentBatch):
            return {policy_id: self._learn(local.get_policy(policy_id), rows)
                    for policy_id, rows in batch.policy_batches.items()}
        return self._learn(local.policy, batch)

    def _learn(self, policy: Any, batch: SampleBatch) -> dict[str, Any]:
        with_td_errors = self.with_td_errors and BATCH_INDEXES in batch  # prioritized rows
        td_errors = self.compute_td_errors(policy, batch) if with_td_errors else None
        stats: dict[str, Any] = dict(policy.learn_on_batch(batch))
        if td_errors is not None:
            stats[TD_ERRORS] = td_errors
            stats[BATCH_INDEXES] = np.asarray(batch[BATCH_INDEXES])
        return stats


class LearnerOutputToResult:
    """Turns the learner thread's outputs into `TrainResult`s and counts the samples trained.

    Consumes: LearnerOutput (stats, or {policy id: stats}). Yields: TrainResult (scalar stats
    per policy id).
    Metrics: counter `learner/steps_trained`.

    Examples:
        >>> LearnerOutputToResult()
        LearnerOutputToResult()
    """

    metrics_written = (STEPS_TRAINED_COUNTER,)

    def __call__(self, output: LearnerOutput) -> TrainResult:
        LocalIterator.get_metrics().counters[STEPS_TRAINED_COUNTER] += output.batch_count
        learner_stats = {
            policy_id: {name: value for name, value in stats.items() if np.ndim(value) == 0}
            for policy_id, stats in stats_by_policy(output.stats).items()}
        return TrainResult(learner_stats=learner_stats, num_steps_trained=output.batch_count)

    def __repr__(self) -> str:
        return "LearnerOutputToResult()"
