"""Operators that produce and shape experience: rollouts, async gradients, batching."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np

from flowrl.data import DEFAULT_POLICY_ID, MultiAgentBatch, SampleBatch, concat_samples
from flowrl.iter import LocalIterator, from_actors
from flowrl.ops.graph_links import workers_graph_link
from flowrl.ops.metrics import SAMPLE_TIMER, STEPS_SAMPLED_COUNTER
from flowrl.ops.results import Gradients, MultiAgentGradients
from flowrl.workers import WorkerSet, get_current_worker

RolloutMode = Literal["bulk_sync", "async", "raw"]
_ROLLOUT_MODES = ("bulk_sync", "async", "raw")


def ParallelRollouts(  # noqa: N802 - a source, named like the operators users know (STYLE G3)
    workers: WorkerSet, *, mode: RolloutMode = "bulk_sync", num_async: int = 1
) -> Any:
    """Experience from all rollout workers, as a stream of `SampleBatch`es.

    With no remote workers the local worker samples in the driver. Otherwise:

    - `"bulk_sync"`: a barrier round; each item concatenates one batch from every worker,
      all sampled with the same weights (what on-policy algorithms need).
    - `"async"`: batches in the order workers finish, with `num_async` requests in flight per
      worker (what IMPALA-style learners need).
    - `"raw"`: the `ParallelIterator` over the workers, for shard-side operators.

    Dead remote workers are replaced in place (`WorkerSet.recreate_worker`).

    Consumes: nothing (a source).
    Yields: SampleBatch (a ParallelIterator of them for mode="raw").
    Metrics: counter `sampler/env_steps`; timer `timers/sample` (local sampling only).

    Examples:
        >>> rollouts = ParallelRollouts(workers, mode="bulk_sync")  # doctest: +SKIP
        >>> batch = next(iter(rollouts))  # doctest: +SKIP
    """
    if mode not in _ROLLOUT_MODES:
        raise ValueError(f"Unknown rollout mode {mode=}; valid modes are {list(_ROLLOUT_MODES)}.")
    if num_async < 1:
        raise ValueError(f"num_async must be at least 1, got {num_async=}.")
    remote = workers.remote_workers()
    if not remote:
        if mode == "raw":
            raise ValueError(
                "ParallelRollouts(mode='raw') needs remote workers, but num_workers=0; use "
                "mode='bulk_sync' or set num_workers >= 1."
            )
        source = LocalIterator(_LocalSampler(workers.local_worker()),
                               name="ParallelRollouts(local)")
        return source.for_each(RecordSampledSteps()).as_operator(_rollouts_label(mode, 1))
    shards = from_actors(remote, name="RolloutWorkers", on_actor_failure=workers.recreate_worker,
                         graph_links=[workers_graph_link(workers, "is")],
                         reply_timeout_s=getattr(workers.config, "sample_timeout_s", None))
    if mode == "raw":
        return shards
    if mode == "bulk_sync":
        gathered = shards.batch_across_shards().for_each(concat_samples, label="concat_samples")
    else:
        gathered = shards.gather_async(num_async=num_async)
    # The plan reads as the call written here; graph(internals=True) shows the steps.
    return gathered.for_each(RecordSampledSteps()).as_operator(_rollouts_label(mode, num_async))


def _rollouts_label(mode: str, num_async: int) -> str:
    """How a `ParallelRollouts` call reads in the plan, e.g. "ParallelRollouts(mode='async')"."""
    extra = f", num_async={num_async}" if mode == "async" and num_async != 1 else ""
    return f"ParallelRollouts(mode={mode!r}{extra})"


class _LocalSampler:
    """The driver-side rollout source: the local worker's endless `sample()` stream."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker

    def __call__(self) -> Iterator[SampleBatch]:
        while True:
            start = time.perf_counter()
            batch = self.worker.sample()
            LocalIterator.get_metrics().timers[SAMPLE_TIMER].push(time.perf_counter() - start)
            yield batch


class RecordSampledSteps:
    """Adds each item's env steps to the shared `sampler/env_steps` counter.

    Consumes: SampleBatch, MultiAgentBatch or Gradients. Yields: the same item.
    Metrics: counter `sampler/env_steps`.

    Examples:
        >>> RecordSampledSteps()
        RecordSampledSteps()
    """

    metrics_written = (STEPS_SAMPLED_COUNTER,)

    def __call__(self, item: Any) -> Any:
        LocalIterator.get_metrics().counters[STEPS_SAMPLED_COUNTER] += _env_steps(item)
        return item

    def __repr__(self) -> str:
        return "RecordSampledSteps()"


def _env_steps(item: Any) -> int:
    if isinstance(item, tuple) and len(item) == 2:  # (source actor, item)
        item = item[1]
    if isinstance(item, Gradients):
        return item.count
    if isinstance(item, (MultiAgentBatch, MultiAgentGradients)):
        return item.env_steps
    return len(item)


class ComputeGradientsOnShard:
    """Samples-to-gradients step that runs on each rollout worker (A3C's worker side).

    A multi-agent worker's `MultiAgentBatch` gives each of its trained policies' gradients on
    that policy's own rows (shared-policy mode: `default_policy`'s).

    Consumes: SampleBatch or MultiAgentBatch (on the shard). Yields: Gradients, or
    MultiAgentGradients for a MultiAgentBatch.
    Metrics: none on the shard; the driver records env steps from `Gradients.count` (or
    `MultiAgentGradients.env_steps`).

    Examples:
        >>> ComputeGradientsOnShard()
        ComputeGradientsOnShard()
    """

    def __call__(self, batch: SampleBatch | MultiAgentBatch
                 ) -> Gradients | MultiAgentGradients:
        from flowrl.ops.train_ops import compute_gradients

        return compute_gradients(get_current_worker(), batch)

    def __repr__(self) -> str:
        return "ComputeGradientsOnShard()"


def AsyncGradients(workers: WorkerSet, *, num_async: int = 1) -> LocalIterator:  # noqa: N802
    """Gradients computed on the rollout workers, as each finishes, with their source actor.

    Each worker samples with its own (possibly stale) weights and computes gradients next to
    its samples; only gradients cross the network.

    Consumes: nothing (a source).
    Yields: (source actor, Gradients) pairs, in completion order.
    Metrics: counter `sampler/env_steps`.

    Examples:
        >>> grads = AsyncGradients(workers)  # doctest: +SKIP
    """
    if not workers.remote_workers():
        raise ValueError(
            "AsyncGradients needs remote workers to compute gradients on, but num_workers=0. "
            "Set num_workers >= 1 (A3C is asynchronous by definition)."
        )
    on_shards = ParallelRollouts(workers, mode="raw").for_each(ComputeGradientsOnShard())
    gathered = on_shards.gather_async(num_async=num_async).zip_with_source_actor()
    extra = "" if num_async == 1 else f"num_async={num_async}"
    return gathered.for_each(RecordSampledSteps()).as_operator(f"AsyncGradients({extra})")


class ConcatBatches:
    """Concatenates incoming batches until at least `min_batch_size` env steps are collected.

    Use with `.combine()`: each call returns `[]` until enough samples have arrived, then a
    one-element list with the concatenated batch.

    Consumes: SampleBatch. Yields: SampleBatch of at least `min_batch_size` steps.
    Metrics: none.

    Examples:
        >>> op = ConcatBatches(min_batch_size=4)
        >>> op(SampleBatch({"x": np.arange(3)}))
        []
        >>> [len(b) for b in op(SampleBatch({"x": np.arange(3)}))]
        [6]
    """

    def __init__(self, min_batch_size: int) -> None:
        if min_batch_size < 1:
            raise ValueError(f"min_batch_size must be at least 1, got {min_batch_size=}.")
        self.min_batch_size = min_batch_size
        self._buffer: list[SampleBatch] = []
        self._count = 0

    def __call__(self, batch: SampleBatch) -> list[SampleBatch]:
        self._buffer.append(batch)
        self._count += len(batch)
        if self._count < self.min_batch_size:
            return []
        out = concat_samples(self._buffer)
        self._buffer, self._count = [], 0
        return [out]

    def __repr__(self) -> str:
        return f"ConcatBatches(min_batch_size={self.min_batch_size})"


class SelectExperiences:
    """Keeps only the experiences of the given policies.

    A single-agent `SampleBatch` belongs to `"default_policy"`. A `(source, batch)` pair (a
    fragment and the worker that sampled it) keeps its source.

    Consumes: MultiAgentBatch or SampleBatch, or (source, batch) pairs of them.
    Yields: MultiAgentBatch restricted to `policy_ids` (or the SampleBatch if selected), paired
    with its source when it came paired.
    Metrics: none.

    Examples:
        >>> SelectExperiences(["default_policy"])
        SelectExperiences(policy_ids=['default_policy'])
    """

    def __init__(self, policy_ids: list[str]) -> None:
        if not policy_ids:
            raise ValueError(f"SelectExperiences needs at least one policy id, got {policy_ids=}.")
        self.policy_ids = list(policy_ids)

    def __call__(self, batch: SampleBatch | MultiAgentBatch | tuple[Any, Any]) -> Any:
        if isinstance(batch, tuple):
            source, batch = batch
            return source, self(batch)
        if isinstance(batch, MultiAgentBatch):
            kept = {pid: b for pid, b in batch.policy_batches.items() if pid in self.policy_ids}
            return MultiAgentBatch(kept, batch.env_steps)
        if DEFAULT_POLICY_ID in self.policy_ids:
            return batch
        return MultiAgentBatch({}, len(batch))

    def __repr__(self) -> str:
        return f"SelectExperiences(policy_ids={self.policy_ids})"


class DropSource:
    """Drops the source of `(source, batch)` pairs, for a flow that reads batches only.

    Consumes: (source, batch). Yields: batch.
    Metrics: none.

    Examples:
        >>> DropSource()(("worker-1", "batch"))
        'batch'
    """

    def __call__(self, item: tuple[Any, Any]) -> Any:
        return item[1]

    def __repr__(self) -> str:
        return "DropSource()"


class PolicyRows:
    """Takes one policy's rows out of each multi-agent batch (for single-agent operators such
    as `StoreToReplay`).

    Consumes: MultiAgentBatch. Yields: that policy's SampleBatch (empty when it had no rows).
    Metrics: none.

    Examples:
        >>> PolicyRows("p2")
        PolicyRows(policy_id='p2')
    """

    def __init__(self, policy_id: str) -> None:
        self.policy_id = policy_id

    def __call__(self, batch: SampleBatch | MultiAgentBatch) -> SampleBatch:
        if not isinstance(batch, MultiAgentBatch):  # a single-agent batch: the default policy's
            return batch if self.policy_id == DEFAULT_POLICY_ID else SampleBatch()
        return batch.policy_batches.get(self.policy_id, SampleBatch())

    def __repr__(self) -> str:
        return f"PolicyRows(policy_id={self.policy_id!r})"


class StandardizeFields:
    """Standardizes the given columns of each batch to zero mean and unit variance.

    Consumes: SampleBatch (or MultiAgentBatch: per policy). Yields: a batch whose `fields` are
    standardized (a new array per field; the input batch is not modified).
    Metrics: none.

    Examples:
        >>> batch = SampleBatch({"advantages": np.array([1.0, 3.0])})
        >>> out = StandardizeFields(["advantages"])(batch)
        >>> out["advantages"].tolist()
        [-1.0, 1.0]
    """

    def __init__(self, fields: list[str]) -> None:
        self.fields = list(fields)

    def __call__(self, batch: SampleBatch | MultiAgentBatch) -> Any:
        if isinstance(batch, MultiAgentBatch):  # each policy's batch on its own
            return MultiAgentBatch({pid: self(part) for pid, part in batch.policy_batches.items()},
                                   batch.env_steps)
        columns = dict(batch)
        for name in self.fields:
            if name not in columns:
                raise KeyError(
                    f"StandardizeFields: column {name!r} is not in the batch; it has "
                    f"{sorted(columns)}. Advantages exist only after postprocessing (GAE)."
                )
            values = np.asarray(columns[name], dtype=np.float32)
            columns[name] = (values - values.mean()) / max(float(values.std()), 1e-8)
        return SampleBatch(columns)

    def __repr__(self) -> str:
        return f"StandardizeFields(fields={self.fields})"


__all__ = [
    "AsyncGradients",
    "ComputeGradientsOnShard",
    "ConcatBatches",
    "ParallelRollouts",
    "RecordSampledSteps",
    "SelectExperiences",
    "StandardizeFields",
]
