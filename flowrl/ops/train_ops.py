"""Operators that update the learner and keep rollout workers in sync.

Each has one job: training never broadcasts weights by itself; `BroadcastWeights` (or the
`update=` choice of `ApplyGradients`, written in the plan) does.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from flowrl.data import DEFAULT_POLICY_ID, MultiAgentBatch, SampleBatch
from flowrl.iter import GraphLink, LocalIterator, executor
from flowrl.ops.graph_links import workers_graph_link
from flowrl.ops.metrics import (
    APPLY_GRADS_TIMER,
    BROADCAST_TIMER,
    COMPUTE_GRADS_TIMER,
    LEARN_TIMER,
    NUM_GRADIENT_UPDATES_COUNTER,
    NUM_WEIGHT_BROADCASTS_COUNTER,
    STEPS_SAMPLED_COUNTER,
    STEPS_TRAINED_COUNTER,
)
from flowrl.ops.results import Gradients, MultiAgentGradients, TrainResult
from flowrl.workers import WorkerSet

UpdateMode = Literal["all", "source", "none"]
_UPDATE_MODES = ("all", "source", "none")


def _single_agent(batch: SampleBatch | MultiAgentBatch) -> SampleBatch:
    if isinstance(batch, MultiAgentBatch):
        if set(batch.policy_batches) != {DEFAULT_POLICY_ID}:
            raise ValueError(
                "This operator trains the single learner policy 'default_policy', but the batch "
                f"holds policies {sorted(batch.policy_batches)}; add SelectExperiences first."
            )
        return batch.policy_batches[DEFAULT_POLICY_ID]
    return batch


def _batches_to_train(batch: SampleBatch | MultiAgentBatch, workers: WorkerSet,
                      policy_ids: list[str] | None) -> dict[str, SampleBatch]:
    """Policy id -> its non-empty sub-batch, for the policies a train op updates: `policy_ids`
    if given, else the learner worker's `policies_to_train`. A plain SampleBatch belongs to
    the one policy of `policy_ids` (e.g. rows replayed from that policy's buffer), else to
    "default_policy"."""
    if not isinstance(batch, MultiAgentBatch):
        if policy_ids is not None and len(policy_ids) == 1:
            return {policy_ids[0]: batch}
        return {DEFAULT_POLICY_ID: batch}
    return policy_batches_to_train(batch, workers.local_worker(), policy_ids)


def policy_batches_to_train(batch: SampleBatch | MultiAgentBatch, worker: Any,
                            policy_ids: list[str] | None = None) -> dict[str, SampleBatch]:
    """Policy id -> its non-empty rows of a `MultiAgentBatch`, for the policies `worker` (a
    multi-agent worker, or a single-agent one for a `default_policy`-only batch) trains:
    `policy_ids` if given, else its `policies_to_train`.

    Raises:
        ValueError: several policies' rows for a single-agent worker.
    """
    if set(batch.policy_batches) == {DEFAULT_POLICY_ID}:
        return {DEFAULT_POLICY_ID: _single_agent(batch)}
    if not getattr(worker, "multi_agent", None):
        _single_agent(batch)  # raises: a single-agent learner cannot train other policies
    wanted = policy_ids if policy_ids is not None else worker.policies_to_train
    return {pid: part for pid, part in batch.policy_batches.items()
            if pid in wanted and len(part)}


def compute_gradients(worker: Any, batch: SampleBatch | MultiAgentBatch,
                      policy_ids: list[str] | None = None) -> Gradients | MultiAgentGradients:
    """The gradients of `worker`'s policies on `batch`, without applying them.

    A `SampleBatch` gives the worker's policy's `Gradients`. A `MultiAgentBatch` gives
    `MultiAgentGradients`: each trained policy's gradients on its own rows (shared-policy mode:
    just `default_policy`'s), with the env steps the batch covered.
    """
    if not isinstance(batch, MultiAgentBatch):
        grads, stats = worker.policy.compute_gradients(batch)
        return Gradients(grads=grads, stats=stats, count=len(batch))
    per_policy = {}
    for policy_id, rows in policy_batches_to_train(batch, worker, policy_ids).items():
        policy = (worker.policy if policy_id == DEFAULT_POLICY_ID
                  and not getattr(worker, "multi_agent", None) else worker.get_policy(policy_id))
        grads, stats = policy.compute_gradients(rows)
        per_policy[policy_id] = Gradients(grads=grads, stats=stats, count=len(rows))
    return MultiAgentGradients(per_policy, batch.env_steps)


def learner_weights(worker: Any, policy_ids: list[str] | None = None) -> Any:
    """What `set_weights` of rollout workers like `worker` takes: the policy's weights, or for a
    multi-agent worker {policy id: weights} of `policy_ids` (default: its trained policies)."""
    if getattr(worker, "multi_agent", None):
        return worker.get_weights(list(worker.policies_to_train) if policy_ids is None
                                  else policy_ids)
    return worker.get_weights()


def _global_vars() -> dict[str, int]:
    return {"timestep": int(LocalIterator.get_metrics().counters[STEPS_SAMPLED_COUNTER])}


class TrainOneStep:
    """Trains the learner's policy on each batch: `num_sgd_iter` epochs of minibatch SGD.

    Before learning, the learner's global vars (the sampled timestep, which drives learning
    rate schedules) are brought up to date. It does not send weights anywhere. A
    `MultiAgentBatch` trains each policy in `policy_ids` (default: the workers'
    `policies_to_train`) on its own sub-batch.

    Consumes: SampleBatch or MultiAgentBatch. Yields: TrainResult (stats per policy id).
    Metrics: counter `learner/steps_trained`; timer `timers/learn`.

    Examples:
        >>> TrainOneStep(workers, num_sgd_iter=10, sgd_minibatch_size=128)  # doctest: +SKIP
        TrainOneStep(num_sgd_iter=10, sgd_minibatch_size=128)
    """

    metrics_written = (STEPS_TRAINED_COUNTER, LEARN_TIMER)

    def __init__(self, workers: WorkerSet, *, num_sgd_iter: int = 1,
                 sgd_minibatch_size: int = 0, policy_ids: list[str] | None = None) -> None:
        if num_sgd_iter < 1:
            raise ValueError(f"num_sgd_iter must be at least 1, got {num_sgd_iter=}.")
        if sgd_minibatch_size < 0:
            raise ValueError(f"sgd_minibatch_size must be >= 0 (0 = whole batch), got "
                             f"{sgd_minibatch_size=}.")
        self.workers = workers
        self.num_sgd_iter = num_sgd_iter
        self.sgd_minibatch_size = sgd_minibatch_size
        self.policy_ids = None if policy_ids is None else list(policy_ids)

    def __call__(self, batch: SampleBatch | MultiAgentBatch) -> TrainResult:
        batches = _batches_to_train(batch, self.workers, self.policy_ids)
        metrics = LocalIterator.get_metrics()
        local = self.workers.local_worker()
        global_vars = _global_vars()
        start = time.perf_counter()
        learner_stats, trained = {}, 0
        for policy_id, policy_batch in batches.items():
            policy = local.get_policy(policy_id)
            policy.on_global_var_update(global_vars)
            if self.num_sgd_iter == 1 and self.sgd_minibatch_size == 0:
                learner_stats[policy_id] = policy.learn_on_batch(policy_batch)
            else:
                learner_stats[policy_id] = policy.learn_on_minibatches(
                    policy_batch, num_sgd_iter=self.num_sgd_iter,
                    sgd_minibatch_size=min(self.sgd_minibatch_size, len(policy_batch)))
            trained += len(policy_batch)
        timer = metrics.timers[LEARN_TIMER]
        timer.push(time.perf_counter() - start)
        timer.push_units_processed(trained)
        metrics.counters[STEPS_TRAINED_COUNTER] += trained
        return TrainResult(learner_stats=learner_stats, num_steps_trained=trained)

    def __repr__(self) -> str:
        chosen = "" if self.policy_ids is None else f", policy_ids={self.policy_ids}"
        return (f"TrainOneStep(num_sgd_iter={self.num_sgd_iter}, "
                f"sgd_minibatch_size={self.sgd_minibatch_size}{chosen})")


class ComputeGradients:
    """Computes the learner policy's gradients on each batch, without applying them.

    A `MultiAgentBatch` gives each trained policy's gradients on its own rows (`policy_ids`,
    default: the workers' `policies_to_train`).

    Consumes: SampleBatch or MultiAgentBatch. Yields: Gradients, or MultiAgentGradients for a
    MultiAgentBatch.
    Metrics: timer `timers/compute_grads`.

    Examples:
        >>> ComputeGradients(workers)  # doctest: +SKIP
        ComputeGradients()
    """

    metrics_written = (COMPUTE_GRADS_TIMER,)

    def __init__(self, workers: WorkerSet, *, policy_ids: list[str] | None = None) -> None:
        self.workers = workers
        self.policy_ids = None if policy_ids is None else list(policy_ids)

    def __call__(self, batch: SampleBatch | MultiAgentBatch) -> Gradients | MultiAgentGradients:
        start = time.perf_counter()
        gradients = compute_gradients(self.workers.local_worker(), batch, self.policy_ids)
        LocalIterator.get_metrics().timers[COMPUTE_GRADS_TIMER].push(time.perf_counter() - start)
        return gradients

    def __repr__(self) -> str:
        return ("ComputeGradients()" if self.policy_ids is None
                else f"ComputeGradients(policy_ids={self.policy_ids})")


class AverageGradients:
    """Averages a list of gradients, each weighted by the number of samples it came from.

    Use after `.batch(n)`. The weighted mean of per-microbatch mean-loss gradients is the
    gradient of the mean loss over all their samples, so microbatches of unequal size (a
    microbatch is at least one sampling round) still give the full-batch update (up to
    per-microbatch gradient clipping).

    Consumes: list[Gradients], or list[MultiAgentGradients] (averaged per policy, env steps
    summed). Yields: Gradients (weighted-mean grads and stats, summed count), or
    MultiAgentGradients.
    Metrics: none.

    Examples:
        >>> g = [Gradients([np.array([1.0])], {"loss": 1.0}, 1),
        ...      Gradients([np.array([3.0])], {"loss": 3.0}, 3)]
        >>> out = AverageGradients()(g)
        >>> out.grads[0].tolist(), out.stats["loss"], out.count
        ([2.5], 2.5, 4)
    """

    def __call__(self, items: list[Gradients] | list[MultiAgentGradients]
                 ) -> Gradients | MultiAgentGradients:
        if not items:
            raise ValueError("AverageGradients received an empty list; use it after .batch(n).")
        if all(isinstance(g, MultiAgentGradients) for g in items):
            policy_ids = dict.fromkeys(pid for g in items for pid in g.policy_gradients)
            return MultiAgentGradients(
                {pid: self([g.policy_gradients[pid] for g in items
                            if pid in g.policy_gradients]) for pid in policy_ids},
                sum(g.env_steps for g in items))
        total = sum(g.count for g in items)
        if total <= 0:
            raise ValueError(f"AverageGradients needs samples to weight by, got counts "
                             f"{[g.count for g in items]}.")
        weights = [g.count / total for g in items]
        grads = [sum(w * part for w, part in zip(weights, parts))
                 for parts in zip(*(g.grads for g in items))]
        keys = set().union(*(g.stats for g in items))
        stats = {k: float(sum(w * g.stats[k] for w, g in zip(weights, items) if k in g.stats))
                 for k in keys}
        return Gradients(grads=grads, stats=stats, count=total)

    def __repr__(self) -> str:
        return "AverageGradients()"


class ApplyGradients:
    """Applies gradients to the learner's policy, then updates the workers named by `update`.

    `update="all"` broadcasts the new weights to every worker (synchronous A2C);
    `update="source"` sends them only to the worker that computed the gradients (A3C; items
    must then be `(actor, Gradients)` pairs from `zip_with_source_actor`); `update="none"`
    leaves syncing to a later `BroadcastWeights`.

    Consumes: Gradients, or (actor, Gradients) with update="source". Yields: TrainResult.
    Metrics: counters `learner/steps_trained`, `learner/gradient_updates`,
    `learner/weight_broadcasts`; timer `timers/apply_grads`.

    Examples:
        >>> ApplyGradients(workers, update="source")  # doctest: +SKIP
        ApplyGradients(update='source')
    """

    metrics_written = (STEPS_TRAINED_COUNTER, NUM_GRADIENT_UPDATES_COUNTER,
                       NUM_WEIGHT_BROADCASTS_COUNTER, APPLY_GRADS_TIMER)

    def __init__(self, workers: WorkerSet, *, update: UpdateMode = "all") -> None:
        if update not in _UPDATE_MODES:
            raise ValueError(f"Unknown {update=}; valid values are {list(_UPDATE_MODES)}.")
        self.workers = workers
        self.update = update

    def __call__(self, item: Gradients | MultiAgentGradients
                 | tuple[Any, Gradients | MultiAgentGradients]) -> TrainResult:
        source = None
        if isinstance(item, tuple):
            source, item = item
        elif self.update == "source":
            raise TypeError(
                "ApplyGradients(update='source') needs (actor, Gradients) pairs; add "
                ".zip_with_source_actor() after the async gather."
            )
        metrics = LocalIterator.get_metrics()
        local = self.workers.local_worker()
        if isinstance(item, MultiAgentGradients):
            per_policy = [(pid, local.get_policy(pid), g)
                          for pid, g in item.policy_gradients.items()]
        else:
            per_policy = [(DEFAULT_POLICY_ID, local.policy, item)]
        global_vars = _global_vars()
        start = time.perf_counter()
        for _, policy, gradients in per_policy:
            policy.on_global_var_update(global_vars)
            policy.apply_gradients(gradients.grads)
        metrics.timers[APPLY_GRADS_TIMER].push(time.perf_counter() - start)
        metrics.counters[STEPS_TRAINED_COUNTER] += item.count
        metrics.counters[NUM_GRADIENT_UPDATES_COUNTER] += 1
        # Only the policies just updated travel back, in one put.
        changed = ([pid for pid, _, _ in per_policy]
                   if isinstance(item, MultiAgentGradients) else None)
        if self.update == "all" and per_policy:
            self.workers.sync_weights(global_vars, policy_ids=changed)
            metrics.counters[NUM_WEIGHT_BROADCASTS_COUNTER] += 1
        elif self.update == "source" and per_policy:
            weights_ref = executor.put(learner_weights(local, changed))
            self.workers.set_weights_of(source, weights_ref, global_vars)
            metrics.counters[NUM_WEIGHT_BROADCASTS_COUNTER] += 1
        return TrainResult(learner_stats={pid: dict(g.stats) for pid, _, g in per_policy},
                           num_steps_trained=item.count)

    def graph_links(self) -> list[GraphLink]:
        """A dashed "weights" edge back to the rollout workers when it sends them weights."""
        if self.update == "none" or not self.workers.remote_workers():
            return []
        return [workers_graph_link(self.workers, "to", "weights")]

    def __repr__(self) -> str:
        return f"ApplyGradients(update={self.update!r})"


class BroadcastWeights:
    """Sends the learner's weights to every rollout worker (one object-store put).

    Passes its item through unchanged, so it can sit anywhere after a training step. With
    multi-agent workers, `policy_ids` sends only those policies' weights (default: all).

    Consumes: any item. Yields: the same item.
    Metrics: counter `learner/weight_broadcasts`; timer `timers/broadcast_weights`.

    Examples:
        >>> BroadcastWeights(workers)  # doctest: +SKIP
        BroadcastWeights()
    """

    metrics_written = (NUM_WEIGHT_BROADCASTS_COUNTER, BROADCAST_TIMER)

    def __init__(self, workers: WorkerSet, *, policy_ids: list[str] | None = None) -> None:
        self.workers = workers
        self.policy_ids = None if policy_ids is None else list(policy_ids)

    def __call__(self, item: Any) -> Any:
        if not self.workers.remote_workers():
            return item  # the learner samples itself: nothing to send
        metrics = LocalIterator.get_metrics()
        start = time.perf_counter()
        if self.policy_ids is None:
            self.workers.sync_weights(_global_vars())
        else:
            self.workers.sync_weights(_global_vars(), policy_ids=self.policy_ids)
        metrics.timers[BROADCAST_TIMER].push(time.perf_counter() - start)
        metrics.counters[NUM_WEIGHT_BROADCASTS_COUNTER] += 1
        return item

    def graph_links(self) -> list[GraphLink]:
        """A dashed "weights" edge back to the rollout workers (none without remote ones)."""
        if not self.workers.remote_workers():
            return []
        return [workers_graph_link(self.workers, "to", "weights")]

    def __repr__(self) -> str:
        return ("BroadcastWeights()" if self.policy_ids is None
                else f"BroadcastWeights(policy_ids={self.policy_ids})")
