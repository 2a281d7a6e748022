"""Operators of learner-thread plans (IMPALA, APPO): where each fragment came from and with
which weights, fragments into train batches, and fresh weights back to the workers whose
samples were trained on."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowrl.data import MultiAgentBatch, SampleBatch, concat_samples
from flowrl.iter import GraphLink, LocalIterator, NonBlockingStep, executor
from flowrl.ops.graph_links import workers_graph_link
from flowrl.ops.learner_thread import (
    LearnerOutput,
    LearnerThread,
    LockedLearnStep,
    stats_by_policy,
)
from flowrl.ops.metrics import (
    NUM_WEIGHT_BROADCASTS_COUNTER,
    STEPS_SAMPLED_COUNTER,
    STEPS_TRAINED_COUNTER,
)
from flowrl.ops.results import TrainResult
from flowrl.ops.rollout_ops import SelectExperiences
from flowrl.workers import WorkerSet

LEARNER_THREAD_INFO = "learner_thread"
"""Key of the learner thread's statistics in the metrics context's `info` (and result dict)."""

_LAG_WINDOW = 100  # policy lags averaged over the last this many fragments


# ---- where samples came from, and which weights sampled them ----------------------------------


@dataclass
class FragmentSource:
    """The rollout worker that sampled a fragment, and the learner version it last received."""

    worker: Any
    weights_version: int


@dataclass(eq=False)
class TrainBatchSource:
    """The fragments one train batch was built from; travels through the learner thread."""

    fragments: tuple[FragmentSource, ...]
    counted: bool = field(default=False)
    """Set once the plan has counted this batch's steps and lag (it comes back per SGD pass)."""

    def workers(self) -> list[Any]:
        """The distinct workers (None for the driver) whose fragments are in the batch."""
        distinct: list[Any] = []
        for fragment in self.fragments:
            if not any(fragment.worker is known for known in distinct):
                distinct.append(fragment.worker)
        return distinct


class WorkerWeightVersions:
    """Which learner version of the weights each rollout worker was last sent (0 at start)."""

    def __init__(self) -> None:
        self._versions: dict[int, tuple[Any, int]] = {}

    def get(self, worker: Any) -> int:
        """The version last sent to `worker` (0: the weights synced at start)."""
        entry = self._versions.get(id(worker))
        return entry[1] if entry is not None and entry[0] is worker else 0

    def set(self, worker: Any, version: int) -> None:
        """Records that `worker` was sent the weights of learner `version`."""
        self._versions[id(worker)] = (worker, version)

    def __getstate__(self) -> dict[str, Any]:
        return {"_versions": {}}  # handles do not outlive a run

    def __repr__(self) -> str:
        return "WorkerWeightVersions()"


class TagWeightsVersion:
    """Pairs each sampled fragment with its worker and the weights version it sampled with.

    Consumes: (worker, SampleBatch), worker None for the driver. Yields: (FragmentSource,
    SampleBatch).
    Metrics: none.
    """

    def __init__(self, versions: WorkerWeightVersions, learn_step: LockedLearnStep) -> None:
        self.versions = versions
        self.learn_step = learn_step

    def __call__(self, item: tuple[Any, SampleBatch]) -> tuple[FragmentSource, SampleBatch]:
        worker, batch = item
        version = self.learn_step.version if worker is None else self.versions.get(worker)
        return FragmentSource(worker, version), batch

    def __repr__(self) -> str:
        return "TagWeightsVersion()"


class PairWithDriver:
    """Pairs batches the driver sampled itself (num_workers=0) with the source None."""

    def __call__(self, batch: SampleBatch) -> tuple[None, SampleBatch]:
        return None, batch

    def __repr__(self) -> str:
        return "PairWithDriver()"


class MixInReplay:
    """Follows each new fragment with `replay_proportion` replayed ones (on average).

    Keeps the last `num_slots` fragments in a ring. With proportion p, each new fragment is
    followed by floor(p) replayed fragments and one more with probability p - floor(p), drawn
    uniformly from the ring. Use with `.combine()`.

    Consumes: (FragmentSource, SampleBatch). Yields: the same item, then replayed items.
    Metrics: none.

    Examples:
        >>> mix = MixInReplay(num_slots=2, replay_proportion=1.0, seed=0)
        >>> mix("a")
        ['a', 'a']
        >>> len(mix("b")), mix("c")[0]
        (2, 'c')
    """

    def __init__(self, *, num_slots: int, replay_proportion: float, seed: int | None = None
                 ) -> None:
        if num_slots < 1:
            raise ValueError(f"MixInReplay needs num_slots >= 1, got {num_slots=}.")
        if replay_proportion < 0:
            raise ValueError(f"MixInReplay needs replay_proportion >= 0, got "
                             f"{replay_proportion=}.")
        self.num_slots = num_slots
        self.replay_proportion = replay_proportion
        self.rng = np.random.default_rng(seed)
        self.slots: list[Any] = []
        self.next_slot = 0

    def __call__(self, item: Any) -> list[Any]:
        output = [item]
        if len(self.slots) < self.num_slots:
            self.slots.append(item)
        else:
            self.slots[self.next_slot] = item
            self.next_slot = (self.next_slot + 1) % self.num_slots
        whole, fraction = divmod(self.replay_proportion, 1.0)
        count = int(whole) + int(self.rng.random() < fraction)
        output.extend(self.slots[int(i)] for i in self.rng.integers(len(self.slots), size=count))
        return output

    def __repr__(self) -> str:
        return (f"MixInReplay(num_slots={self.num_slots}, "
                f"replay_proportion={self.replay_proportion})")


class ConcatFragments:
    """Concatenates (source, fragment) pairs until `min_batch_size` steps; use with `.combine()`.

    Consumes: (FragmentSource, SampleBatch or MultiAgentBatch). Yields: (TrainBatchSource,
    batch) of at least `min_batch_size` env steps, its rows the fragments' rows in order
    (env-major fragments stay whole, so the loss can reshape them time-major). Multi-agent
    fragments are concatenated per policy (env steps summed), keeping only `policy_ids`'
    rows when given (the policies the learner trains).
    Metrics: none.

    Examples:
        >>> op = ConcatFragments(min_batch_size=4)
        >>> op((FragmentSource(None, 0), SampleBatch({"x": np.arange(3)})))
        []
        >>> [len(b) for _, b in op((FragmentSource(None, 0), SampleBatch({"x": np.arange(3)})))]
        [6]
    """

    def __init__(self, min_batch_size: int, *, policy_ids: list[str] | None = None) -> None:
        if min_batch_size < 1:
            raise ValueError(f"min_batch_size must be at least 1, got {min_batch_size=}.")
        self.min_batch_size = min_batch_size
        self.policy_ids = None if policy_ids is None else list(policy_ids)
        self._sources: list[FragmentSource] = []
        self._batches: list[SampleBatch] = []
        self._count = 0

    def __call__(self, item: tuple[FragmentSource, SampleBatch]
                 ) -> list[tuple[TrainBatchSource, SampleBatch]]:
        source, batch = item
        self._sources.append(source)
        self._batches.append(batch)
        self._count += len(batch)
        if self._count < self.min_batch_size:
            return []
        batch = concat_samples(self._batches)
        if self.policy_ids is not None and isinstance(batch, MultiAgentBatch):
            batch = SelectExperiences(self.policy_ids)(batch)
        out = (TrainBatchSource(tuple(self._sources)), batch)
        self._sources, self._batches, self._count = [], [], 0
        return [out]

    def __repr__(self) -> str:
        chosen = "" if self.policy_ids is None else f", policy_ids={self.policy_ids}"
        return f"ConcatFragments(min_batch_size={self.min_batch_size}{chosen})"


# ---- after each learner update ------------------------------------------------------------------


class RecordLearnerOutput(NonBlockingStep):
    """Counts what the learner trained on and reports the learner thread's health.

    Steps trained and the policy lag (learner versions between the weights that sampled a
    fragment and the weights it was trained on) count once per train batch, however often it
    is replayed. It also passes the sampled-steps counter to the learner (lr schedules). A
    `NonBlockingStep` that is always ready, so its `extra_stats` (queue fill, updates/s, lag)
    annotate this node of the plan graph.

    Consumes: LearnerOutput. Yields: the same LearnerOutput.
    Metrics: counter `learner/steps_trained`; info `learner_thread/...`.
    """

    metrics_written = (STEPS_TRAINED_COUNTER, LEARNER_THREAD_INFO)

    def __init__(self, learner: LearnerThread, learn_step: LockedLearnStep) -> None:
        self.learner = learner
        self.learn_step = learn_step
        self.lags: collections.deque[int] = collections.deque(maxlen=_LAG_WINDOW)

    def try_apply(self, output: LearnerOutput) -> tuple[bool, LearnerOutput]:
        metrics = LocalIterator.get_metrics()
        source = output.source
        if isinstance(source, TrainBatchSource) and not source.counted:
            source.counted = True
            metrics.counters[STEPS_TRAINED_COUNTER] += output.batch_count
            trained_version = output.learner_version - 1
            self.lags.extend(max(trained_version - fragment.weights_version, 0)
                             for fragment in source.fragments)
        elif not isinstance(source, TrainBatchSource):
            metrics.counters[STEPS_TRAINED_COUNTER] += output.batch_count
        self.learn_step.timestep = int(metrics.counters[STEPS_SAMPLED_COUNTER])
        metrics.info[LEARNER_THREAD_INFO] = self.extra_stats()
        return True, output

    def extra_stats(self) -> dict[str, Any]:
        stats = self.learner.stats()
        lags = list(self.lags)
        return {
            "queue_fill": stats["inqueue_size"] / max(stats["inqueue_maxsize"], 1),
            "inqueue_size": stats["inqueue_size"],
            "outqueue_size": stats["outqueue_size"],
            "updates_per_s": float(stats["updates_per_s"]),
            "num_updates": stats["num_updates"],
            "weights_version": stats["weights_version"],
            "learn_time_ms": float(stats["learn_time_ms"]),
            "policy_lag_mean": float(np.mean(lags)) if lags else 0.0,
            "policy_lag_max": int(max(lags)) if lags else 0,
        }

    def __repr__(self) -> str:
        return "RecordLearnerOutput()"


class BroadcastToSourceWorkers:
    """Sends the learner's newest weights to the worker(s) whose samples were just trained on.

    The weights are read (under the learner's lock) and `put` once per learner version, and
    refreshed at most once every `broadcast_interval` learner updates; a worker that already
    has the current weights is not sent them again.

    Consumes: LearnerOutput whose source is a TrainBatchSource. Yields: TrainResult.
    Metrics: counter `learner/weight_broadcasts` (one per worker sent weights).

    Examples:
        >>> BroadcastToSourceWorkers(workers, learn_step, versions, broadcast_interval=1)
        ... # doctest: +SKIP
        BroadcastToSourceWorkers(broadcast_interval=1)
    """

    metrics_written = (NUM_WEIGHT_BROADCASTS_COUNTER,)

    def __init__(self, workers: WorkerSet, learn_step: LockedLearnStep,
                 versions: WorkerWeightVersions, *, broadcast_interval: int = 1) -> None:
        if broadcast_interval < 1:
            raise ValueError(f"broadcast_interval must be at least 1, got {broadcast_interval=}.")
        self.workers = workers
        self.learn_step = learn_step
        self.versions = versions
        self.broadcast_interval = broadcast_interval
        self.num_weight_puts = 0
        self._weights_ref: Any = None
        self._weights_version = 0
        self._updates_since_refresh = 0

    def __call__(self, output: LearnerOutput) -> TrainResult:
        self._updates_since_refresh += 1
        source = output.source
        targets = [w for w in source.workers() if w is not None] if isinstance(
            source, TrainBatchSource) else []
        if targets:
            self._refresh_weights_if_due()
            metrics = LocalIterator.get_metrics()
            global_vars = {"timestep": int(metrics.counters[STEPS_SAMPLED_COUNTER])}
            for worker in targets:
                if self.versions.get(worker) == self._weights_version:
                    continue
                self.workers.set_weights_of(worker, self._weights_ref, global_vars)
                self.versions.set(worker, self._weights_version)
                metrics.counters[NUM_WEIGHT_BROADCASTS_COUNTER] += 1
        return TrainResult(learner_stats={pid: dict(stats) for pid, stats
                                          in stats_by_policy(output.stats).items()},
                           num_steps_trained=output.batch_count)

    def _refresh_weights_if_due(self) -> None:
        due = self._weights_ref is None or self._updates_since_refresh >= self.broadcast_interval
        if not due or (self._weights_ref is not None
                       and self.learn_step.version == self._weights_version):
            return
        with self.learn_step.lock:
            weights = self.learn_step.get_weights()  # all trained policies' (multi-agent)
            version = self.learn_step.version
        self._weights_ref = executor.put(weights)
        self._weights_version = version
        self._updates_since_refresh = 0
        self.num_weight_puts += 1

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_weights_ref"] = None  # an object-store reference does not outlive a run
        return state

    def graph_links(self) -> list[GraphLink]:
        """A dashed "weights" edge back to the rollout workers' source (none without remote
        workers: the driver samples with the learner's own policy)."""
        if not self.workers.remote_workers():
            return []
        return [workers_graph_link(self.workers, "to", "weights")]

    def __repr__(self) -> str:
        return f"BroadcastToSourceWorkers(broadcast_interval={self.broadcast_interval})"
