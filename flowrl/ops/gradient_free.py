"""Operators of the gradient-free plans (ES, ARS): perturbation requests out, returns back.

The flow of an evolution-strategies plan:

```
PerturbationRollouts  --offsets-->  rollout workers  --(offset, R+, R-, lengths)-->
    MergeObservationStats -> filter(DropStaleResults) -> combine(CollectPerturbations)
    -> UpdateFromReturns(estimator) -> SyncObservationFilter -> BroadcastWeights
```

Results are taken as they arrive, tagged with the version of the weights they ran with; a
result for older weights is dropped (and counted), so a slow worker never holds an iteration
back, and an iteration's batch size never depends on the number of workers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from flowrl.data import DEFAULT_POLICY_ID
from flowrl.iter import ActorDiedError, GraphLink, LocalIterator, PollingSource, executor
from flowrl.ops.metrics import STEPS_SAMPLED_COUNTER, STEPS_TRAINED_COUNTER
from flowrl.ops.results import TrainResult
from flowrl.ops.rollout_ops import workers_graph_link
from flowrl.policy.filters import RunningStat
from flowrl.workers import WorkerSet
from flowrl.workers.noise_table import SharedNoiseTable
from flowrl.workers.perturbation import (
    PerturbationRequest,
    PerturbationResult,
    evaluate_perturbations,
)

STALE_RESULTS_COUNTER = "gradient_free/stale_results_dropped"
"""Worker results dropped because they ran with weights older than the learner's."""
STALE_STEPS_COUNTER = "gradient_free/stale_env_steps_dropped"
"""Env steps of the dropped results (sampled, so also in `sampler/env_steps`)."""
PERTURBED_EPISODES_COUNTER = "gradient_free/perturbed_episodes"
"""Episodes run with perturbed weights (two per antithetic pair)."""
EVAL_EPISODES_COUNTER = "gradient_free/eval_episodes"
"""Noise-free evaluation episodes the workers ran (reported as the Trainer's episodes)."""
NOISE_CREATION_INFO = "gradient_free/noise_table_creation_s"
"""Seconds the shared noise table took to create (in the metrics `info`)."""
UPDATE_TIMER = "timers/gradient_free_update"

Estimator = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, dict[str, float]]]
"""`(returns [pairs, 2], noise [pairs, dim], theta) -> (loss gradient, stats)`."""


def _learner_policy(workers: WorkerSet) -> Any:
    return workers.local_worker().policy


class _PerturbationSource(PollingSource):
    """Keeps `requests_in_flight` perturbation requests on every worker; yields answers."""

    def __init__(self, workers: WorkerSet, noise: SharedNoiseTable, *, pairs_per_request: int,
                 noise_stdev: float, eval_prob: float, requests_in_flight: int,
                 seed: int | None) -> None:
        self.workers, self.noise = workers, noise
        self.pairs_per_request, self.noise_stdev = pairs_per_request, noise_stdev
        self.eval_prob, self.requests_in_flight, self.seed = eval_prob, requests_in_flight, seed
        self._rng: np.random.Generator | None = None
        self._pending: dict[Any, int] = {}

    def _handles(self) -> list[Any]:
        return self.workers.remote_workers() or [self.workers.local_worker()]

    def _request(self) -> PerturbationRequest:
        assert self._rng is not None
        dim = _learner_policy(self.workers).num_params
        offsets = tuple(self.noise.sample_offset(self._rng, dim)
                        for _ in range(self.pairs_per_request))
        seeds = tuple(int(s) for s in self._rng.integers(0, 2**31 - 1, self.pairs_per_request))
        return PerturbationRequest(
            noise=self.noise, offsets=offsets, noise_stdev=self.noise_stdev, env_seeds=seeds,
            evaluate=bool(self._rng.random() < self.eval_prob),
            action_noise_seed=int(self._rng.integers(0, 2**31 - 1)))

    def _top_up(self) -> None:
        """Sends requests (with the weights now current) to workers below their quota."""
        if self._rng is None:  # the first step of the plan: create the table here, not earlier
            self.noise.create()
            LocalIterator.get_metrics().info[NOISE_CREATION_INFO] = self.noise.creation_time_s
            self._rng = np.random.default_rng(self.seed)
        for slot, handle in enumerate(self._handles()):
            while list(self._pending.values()).count(slot) < self.requests_in_flight:
                future = executor.call(handle, "apply", evaluate_perturbations, self._request())
                self._pending[future] = slot

    def poll(self) -> tuple[bool, Any]:
        self._top_up()
        ready, _ = executor.wait(list(self._pending), num_returns=1, timeout=0)
        if not ready:
            return False, None
        slot = self._pending.pop(ready[0])
        try:
            result: PerturbationResult = executor.get(ready[0])
        except ActorDiedError as error:
            if not self.workers.remote_workers():
                raise
            self.workers.recreate_worker(slot, error)
            return False, None
        counters = LocalIterator.get_metrics().counters
        counters[STEPS_SAMPLED_COUNTER] += result.env_steps
        counters[PERTURBED_EPISODES_COUNTER] += int(result.lengths.size)
        counters[EVAL_EPISODES_COUNTER] += len(result.eval_episodes)
        return True, result

    def wait(self, timeout_s: float) -> None:
        if self._pending:
            executor.wait(list(self._pending), num_returns=1, timeout=timeout_s)

    def graph_links(self) -> list[GraphLink]:
        """Fan-out (offsets to the workers) and fan-in (returns from them)."""
        return [workers_graph_link(self.workers, "to", "perturbation offsets"),
                workers_graph_link(self.workers, "from", "(offset, R+, R-, lengths)")]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pending": {}}


def PerturbationRollouts(  # noqa: N802 - a source, named like ParallelRollouts (STYLE G3)
    workers: WorkerSet, noise: SharedNoiseTable, *, pairs_per_request: int, noise_stdev: float,
    eval_prob: float = 0.0, requests_in_flight: int = 1, seed: int | None = None,
) -> LocalIterator[PerturbationResult]:
    """Antithetic episode pairs from every rollout worker, as results arrive.

    Every worker always has `requests_in_flight` requests of `pairs_per_request` offsets
    each; a request goes out with the weights current when it is sent (after the previous
    item was processed downstream). With no remote workers the local worker runs them.
    The noise table is created on the first step, not when the plan is built.

    Consumes: nothing (a source).
    Yields: PerturbationResult.
    Metrics: counters `sampler/env_steps`, `gradient_free/perturbed_episodes`,
    `gradient_free/eval_episodes`; info `gradient_free/noise_table_creation_s`.

    Examples:
        >>> rollouts = PerturbationRollouts(  # doctest: +SKIP
        ...     workers, noise, pairs_per_request=5, noise_stdev=0.02)
    """
    if pairs_per_request < 1 or requests_in_flight < 1:
        raise ValueError(f"pairs_per_request and requests_in_flight must be >= 1; got "
                         f"{pairs_per_request=}, {requests_in_flight=}.")
    source = _PerturbationSource(workers, noise, pairs_per_request=pairs_per_request,
                                 noise_stdev=noise_stdev, eval_prob=eval_prob,
                                 requests_in_flight=requests_in_flight, seed=seed)
    name = ("PerturbationRollouts(RolloutWorkers)" if workers.remote_workers()
            else "PerturbationRollouts(local)")
    return LocalIterator.from_polling_source(
        source, name=name, params={"pairs_per_request": pairs_per_request,
                                   "noise_stdev": noise_stdev, "noise_size": noise.size})


class MergeObservationStats:
    """Adds each result's observation statistics to the learner's `RunningStat`.

    Runs before stale results are dropped: their observations are still real data.

    Consumes: PerturbationResult. Yields: the same result.
    Metrics: none.

    Examples:
        >>> MergeObservationStats(workers)  # doctest: +SKIP
        MergeObservationStats()
    """

    metrics_written: tuple[str, ...] = ()

    def __init__(self, workers: WorkerSet) -> None:
        self.workers = workers

    def __call__(self, result: PerturbationResult) -> PerturbationResult:
        delta = RunningStat.from_state(result.observation_delta)
        _learner_policy(self.workers).observation_stats.merge(delta)
        return result

    def __repr__(self) -> str:
        return "MergeObservationStats()"


class DropStaleResults:
    """A filter that keeps results computed with the learner's current weights.

    Consumes: PerturbationResult. Yields: the fresh ones.
    Metrics: counters `gradient_free/stale_results_dropped`,
    `gradient_free/stale_env_steps_dropped`.

    Examples:
        >>> DropStaleResults(workers)  # doctest: +SKIP
        DropStaleResults()
    """

    metrics_written = (STALE_RESULTS_COUNTER, STALE_STEPS_COUNTER)

    def __init__(self, workers: WorkerSet) -> None:
        self.workers = workers

    def __call__(self, result: PerturbationResult) -> bool:
        if result.weights_version == _learner_policy(self.workers).weights_version:
            return True
        counters = LocalIterator.get_metrics().counters
        counters[STALE_RESULTS_COUNTER] += 1
        counters[STALE_STEPS_COUNTER] += result.env_steps
        return False

    def __repr__(self) -> str:
        return "DropStaleResults()"


class CollectPerturbations:
    """Groups fresh results until an iteration has `min_pairs` pairs and `min_steps` steps.

    Use with `.combine()`. The sizes are the config's, never a multiple of the workers.

    Consumes: PerturbationResult. Yields: list[PerturbationResult] (one iteration's batch).
    Metrics: none.

    Examples:
        >>> collect = CollectPerturbations(min_pairs=2, min_steps=0)
        >>> collect
        CollectPerturbations(min_pairs=2, min_steps=0)
    """

    metrics_written: tuple[str, ...] = ()

    def __init__(self, *, min_pairs: int, min_steps: int) -> None:
        self.min_pairs, self.min_steps = min_pairs, min_steps
        self._buffer: list[PerturbationResult] = []

    def __call__(self, result: PerturbationResult) -> list[list[PerturbationResult]]:
        self._buffer.append(result)
        pairs = sum(len(r.offsets) for r in self._buffer)
        steps = sum(int(r.lengths.sum()) for r in self._buffer)
        if pairs < self.min_pairs or steps < self.min_steps:
            return []
        batch, self._buffer = self._buffer, []
        return [batch]

    def __repr__(self) -> str:
        return f"CollectPerturbations(min_pairs={self.min_pairs}, min_steps={self.min_steps})"


class UpdateFromReturns:
    """One step of the learner's flat optimizer along the estimator's gradient.

    The noise rows are read from the driver's zero-copy view of the table at the results'
    offsets. The learner's weight version goes up by one, which makes every result still in
    flight stale.

    Consumes: list[PerturbationResult]. Yields: TrainResult (stats under "default_policy").
    Metrics: counter `learner/steps_trained`; timer `timers/gradient_free_update`.

    Examples:
        >>> UpdateFromReturns(  # doctest: +SKIP
        ...     workers, noise, estimator=ARSGradient(top_directions=8))
        UpdateFromReturns(estimator=ARSGradient(top_directions=8))
    """

    metrics_written = (STEPS_TRAINED_COUNTER, UPDATE_TIMER)

    def __init__(self, workers: WorkerSet, noise: SharedNoiseTable, *,
                 estimator: Estimator) -> None:
        self.workers, self.noise, self.estimator = workers, noise, estimator

    def __call__(self, results: list[PerturbationResult]) -> TrainResult:
        start = time.perf_counter()
        policy = _learner_policy(self.workers)
        offsets = np.concatenate([r.offsets for r in results])
        returns = np.concatenate([r.returns for r in results])
        lengths = np.concatenate([r.lengths for r in results])
        dim = policy.num_params
        noise = np.stack([self.noise.get(int(offset), dim) for offset in offsets])
        theta = policy.get_flat_weights()
        loss_gradient, stats = self.estimator(returns, noise, theta)
        policy.apply_gradients([loss_gradient])
        metrics = LocalIterator.get_metrics()
        metrics.counters[STEPS_TRAINED_COUNTER] += int(lengths.sum())
        metrics.timers[UPDATE_TIMER].push(time.perf_counter() - start)
        stats = {**stats, "perturbed_return_mean": float(returns.mean()),
                 "perturbed_return_max": float(returns.max()), "pairs": float(len(offsets)),
                 "update_norm": float(np.linalg.norm(policy.flat_weights - theta)),
                 "weights_norm": float(np.linalg.norm(policy.flat_weights)),
                 "weights_version": float(policy.weights_version)}
        return TrainResult(learner_stats={DEFAULT_POLICY_ID: stats},
                           num_steps_trained=int(lengths.sum()))

    def __repr__(self) -> str:
        return f"UpdateFromReturns(estimator={self.estimator!r})"


class SyncObservationFilter:
    """Copies the learner's merged observation statistics into the filter it acts with, so
    the next `BroadcastWeights` pushes the merged filter to every worker.

    Consumes: any item. Yields: the same item.
    Metrics: none.

    Examples:
        >>> SyncObservationFilter(workers)  # doctest: +SKIP
        SyncObservationFilter()
    """

    metrics_written: tuple[str, ...] = ()

    def __init__(self, workers: WorkerSet) -> None:
        self.workers = workers

    def __call__(self, item: Any) -> Any:
        _learner_policy(self.workers).update_filter_snapshot()
        return item

    def __repr__(self) -> str:
        return "SyncObservationFilter()"


def centered_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks of all entries, scaled to [-0.5, 0.5] (ties get distinct ranks, as in OpenAI's
    ES); the shape of `values` is kept.

    Examples:
        >>> centered_ranks(np.array([[10.0, -3.0], [0.0, 7.0]])).round(3).tolist()
        [[0.5, -0.5], [-0.167, 0.167]]
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    ranks = np.empty(flat.size, dtype=np.float64)
    ranks[flat.argsort(kind="stable")] = np.arange(flat.size, dtype=np.float64)
    if flat.size > 1:
        ranks = ranks / (flat.size - 1) - 0.5
    else:
        ranks[:] = 0.0
    return ranks.reshape(np.shape(values))


def top_directions(returns: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` pairs with the largest max(R+, R-), best first."""
    scores = np.asarray(returns).max(axis=1)
    count = max(1, min(int(count), len(scores)))
    return np.argsort(-scores, kind="stable")[:count]


def returns_std(returns: np.ndarray) -> float:
    """The std of the given returns, or 1 when they are all equal (a flat step is then 0)."""
    std = float(np.std(returns))
    return std if std > 0 and math.isfinite(std) else 1.0


__all__ = ["CollectPerturbations", "DropStaleResults", "Estimator", "MergeObservationStats",
           "PerturbationRollouts", "SyncObservationFilter", "UpdateFromReturns",
           "centered_ranks", "returns_std", "top_directions"]
