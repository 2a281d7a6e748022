"""Operators that hold a distributed-replay plan to a replay ratio (Ape-X's `training_intensity`).

An asynchronous plan lets sampling and learning run at whatever speed their cores allow, so the
number of rows trained per env step sampled (the replay ratio) drifts with the machine's load.
Two gates fix it at `training_intensity`, one in each direction, both counted from
`learning_starts` (before it the learner cannot train):

- `WaitForSamples`, in the replay flow before the learner's queue, holds a replayed batch while
  the rows already given to the learner reach `training_intensity * (env steps - learning_starts)`:
  the learner waits for samples.
- `WaitForLearner`, in the store flow right after the rollouts arrive, holds a sampled batch
  while env steps run more than `max_steps_ahead` ahead of `steps trained / training_intensity`:
  sampling waits for the learner (and the rollout workers idle, leaving it their cores).

```python
store = (rollouts.gather_async(num_async=2).zip_with_source_actor()
         .for_each(WaitForLearner(training_intensity=5, learning_starts=2000,
                                  max_steps_ahead=400))
         .for_each(RecordSampledSteps()).for_each(StoreToReplay(replay_actors)))
replay = (Replay(replay_actors)
          .for_each(WaitForSamples(training_intensity=5, learning_starts=2000))
          .for_each(Enqueue(learner.inqueue)))
train = (Dequeue(learner.outqueue).for_each(LearnerOutputToResult())
         .for_each(RecordReplayRatio(learning_starts=2000)))
plan = Concurrently([store, replay, train], mode="async", output_indexes=[2])
```

Neither gate ever blocks the plan: a held item makes its flow "not ready" and `Concurrently`
runs the other flows meanwhile (which is what moves the counters a gate waits on). Neither
can hold forever: `WaitForLearner` opens while the learner has not been given a row yet (its
shards may still be filling), and whenever it holds, the learner has rows queued or
`WaitForSamples` has budget for more; a gate that stays shut for `timeout_s` of trying fails the
plan saying which side stopped.
"""

from __future__ import annotations

import time
from typing import Any

from flowrl.data import MultiAgentBatch
from flowrl.iter import LocalIterator, NonBlockingStep
from flowrl.ops.concurrency import DEFAULT_QUEUE_TIMEOUT_S, _StarvationClock
from flowrl.ops.metrics import STEPS_SAMPLED_COUNTER, STEPS_TRAINED_COUNTER

ROWS_RELEASED_COUNTER = "replay/rows_released"
"""Replayed rows `WaitForSamples` let through to the learner (its budget's spending)."""
REPLAY_RATIO_INFO = "learner/replay_ratio"
"""Rows trained per env step sampled since learning_starts (kept in the metrics `info`)."""

# The longest a shut gate sleeps per idle round; what opens it is another flow's progress.
_GATE_POLL_S = 0.002


def replay_ratio(steps_trained: float, steps_sampled: float, learning_starts: int) -> float:
    """Rows trained per env step sampled after `learning_starts`; 0 before any such step.

    Examples:
        >>> replay_ratio(10_000, 4_000, 2_000)
        5.0
        >>> replay_ratio(0, 1_500, 2_000)
        0.0
    """
    sampled = steps_sampled - learning_starts
    return steps_trained / sampled if sampled > 0 else 0.0


def _rows(item: Any) -> int:
    """Rows the learner trains on in `item`: a batch or a (source, batch) pair; agent steps
    for a MultiAgentBatch (what `learner/steps_trained` counts)."""
    if isinstance(item, tuple) and len(item) == 2:
        item = item[1]
    if isinstance(item, MultiAgentBatch):
        return item.agent_steps()
    return len(item)


def _check_gate_args(operator: str, training_intensity: float, learning_starts: int,
                     timeout_s: float) -> None:
    if isinstance(training_intensity, bool) or not training_intensity > 0:
        raise ValueError(f"{operator} needs training_intensity > 0 (rows trained per env step "
                         f"sampled), got {training_intensity=}")
    if learning_starts < 0:
        raise ValueError(f"{operator} needs learning_starts >= 0, got {learning_starts=}")
    if not timeout_s > 0:
        raise ValueError(f"{operator} needs timeout_s > 0 seconds, got {timeout_s=}")


class _Gate(NonBlockingStep):
    """What both gates share: a starvation clock, hold statistics and a short idle wait."""

    def __init__(self, operator: str, *, training_intensity: float, learning_starts: int,
                 timeout_s: float) -> None:
        _check_gate_args(operator, training_intensity, learning_starts, timeout_s)
        self.training_intensity = float(training_intensity)
        self.learning_starts = int(learning_starts)
        self.timeout_s = timeout_s
        self.num_holds = 0
        self.held_s = 0.0
        self._held_since: float | None = None
        self._shut = _StarvationClock()

    def try_apply(self, item: Any) -> tuple[bool, Any]:
        counters = LocalIterator.get_metrics().counters
        if self.is_open(counters, item):
            self._opened()
            return True, item
        self._hold(counters)
        return False, None

    def is_open(self, counters: Any, item: Any) -> bool:
        """True when `item` may pass now, given the plan's shared counters."""
        raise NotImplementedError

    def why_shut(self, counters: Any) -> str:
        """What the gate waits for, for the error when it stays shut."""
        raise NotImplementedError

    def _opened(self) -> None:
        if self._held_since is not None:
            self.held_s += time.monotonic() - self._held_since
            self._held_since = None
        self._shut.reset()

    def _hold(self, counters: Any) -> None:
        if self._held_since is None:
            self._held_since = time.monotonic()
            self.num_holds += 1
        waited = self._shut.waited()
        if waited > self.timeout_s:
            raise TimeoutError(
                f"{self!r} stayed shut for {waited:.1f} s (timeout_s={self.timeout_s}): "
                f"{self.why_shut(counters)}")

    def wait(self, timeout_s: float) -> None:
        # Only another flow's progress opens the gate; those flows' own waits do the blocking.
        time.sleep(min(timeout_s, _GATE_POLL_S))

    def extra_stats(self) -> dict[str, Any]:
        held = self.held_s
        if self._held_since is not None:
            held += time.monotonic() - self._held_since
        return {"holding": self._held_since is not None, "num_holds": self.num_holds,
                "held_s": held}


class WaitForSamples(_Gate):
    """Holds replayed batches back while the learner would get ahead of the samples.

    A batch passes while the rows given to the learner so far (the larger of the rows this
    gate let through and `learner/steps_trained`) are fewer than
    `training_intensity * (sampler/env_steps - learning_starts)`; so the learner trains at
    most one batch beyond `training_intensity` rows per env step sampled. Put it in the replay
    flow before `Enqueue(learner.inqueue)`: while it holds, the replay actors get no new
    requests and the learner waits.

    Consumes: a replayed batch, or a (replay actor, batch) pair. Yields: the same item.
    Metrics: counter `replay/rows_released` (rows let through; agent steps for a
    MultiAgentBatch); statistics `holding`, `num_holds`, `held_s`.

    Args:
        training_intensity: rows trained per env step sampled.
        learning_starts: env steps sampled before the learner's first step; the budget
            counts the steps after it.
        timeout_s: seconds of holding (while the plan keeps trying) before the plan fails:
            no env steps were sampled all that time.

    Examples:
        >>> WaitForSamples(training_intensity=5, learning_starts=2000)
        WaitForSamples(training_intensity=5.0, learning_starts=2000)
    """

    metrics_written = (ROWS_RELEASED_COUNTER,)

    def __init__(self, *, training_intensity: float, learning_starts: int,
                 timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S) -> None:
        super().__init__("WaitForSamples", training_intensity=training_intensity,
                         learning_starts=learning_starts, timeout_s=timeout_s)

    def is_open(self, counters: Any, item: Any) -> bool:
        # A restored checkpoint (or one from before this counter) may hold fewer released
        # rows than rows trained; the learner has been given at least what it trained.
        given = max(counters.get(ROWS_RELEASED_COUNTER, 0),
                    counters.get(STEPS_TRAINED_COUNTER, 0))
        budget = self.training_intensity * (counters.get(STEPS_SAMPLED_COUNTER, 0)
                                            - self.learning_starts)
        if given >= budget:
            return False
        counters[ROWS_RELEASED_COUNTER] = given + _rows(item)
        return True

    def why_shut(self, counters: Any) -> str:
        sampled = counters.get(STEPS_SAMPLED_COUNTER, 0)
        return (f"no env steps were sampled meanwhile ({sampled} in all, "
                f"learning_starts={self.learning_starts}), so the learner's budget of "
                f"training_intensity={self.training_intensity} rows per step stayed spent. "
                "Check that the store flow runs in the same Concurrently and that the rollout "
                "workers are sampling.")

    def __repr__(self) -> str:
        return (f"WaitForSamples(training_intensity={self.training_intensity}, "
                f"learning_starts={self.learning_starts})")


class WaitForLearner(_Gate):
    """Holds sampled batches back while sampling runs ahead of the learner.

    A batch passes while `sampler/env_steps - learning_starts` is at most
    `learner/steps_trained / training_intensity + max_steps_ahead`, and always before the
    learner has been given its first row (before `learning_starts`, or while the replay
    shards fill), so it never waits on a learner that cannot train yet. Put it in the store
    flow right after the gather, before `RecordSampledSteps`: while it holds, the gather sends
    the rollout workers no new requests, and once their requests in flight are answered they
    idle.

    Consumes: a sampled batch, or a (rollout worker, batch) pair. Yields: the same item.
    Metrics: none written; reads `sampler/env_steps`, `learner/steps_trained` and
    `replay/rows_released`; statistics `holding`, `num_holds`, `held_s`.

    Args:
        training_intensity: rows trained per env step sampled.
        learning_starts: env steps sampled before the learner's first step.
        max_steps_ahead: env steps sampling may lead the learner by (>= 0): room for the
            learner's queue and the workers' requests in flight, so neither side idles at
            every batch.
        timeout_s: seconds of holding (while the plan keeps trying) before the plan fails:
            the learner trained nothing all that time.

    Examples:
        >>> WaitForLearner(training_intensity=5, learning_starts=2000, max_steps_ahead=400)
        WaitForLearner(training_intensity=5.0, learning_starts=2000, max_steps_ahead=400)
    """

    def __init__(self, *, training_intensity: float, learning_starts: int,
                 max_steps_ahead: int, timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S) -> None:
        super().__init__("WaitForLearner", training_intensity=training_intensity,
                         learning_starts=learning_starts, timeout_s=timeout_s)
        if isinstance(max_steps_ahead, bool) or not max_steps_ahead >= 0:
            raise ValueError(f"WaitForLearner needs max_steps_ahead >= 0 env steps, got "
                             f"{max_steps_ahead=}")
        self.max_steps_ahead = int(max_steps_ahead)

    def is_open(self, counters: Any, item: Any) -> bool:
        trained = counters.get(STEPS_TRAINED_COUNTER, 0)
        if max(counters.get(ROWS_RELEASED_COUNTER, 0), trained) == 0:
            return True  # the learner has nothing yet: it may still be waiting for its shards
        ahead = counters.get(STEPS_SAMPLED_COUNTER, 0) - self.learning_starts
        return ahead <= trained / self.training_intensity + self.max_steps_ahead

    def why_shut(self, counters: Any) -> str:
        trained = counters.get(STEPS_TRAINED_COUNTER, 0)
        given = counters.get(ROWS_RELEASED_COUNTER, 0)
        return (f"the learner trained no rows meanwhile ({trained} in all, {given} given to "
                "it). Check that the learner thread is alive and that the train flow (Dequeue "
                "of its results) runs in the same Concurrently.")

    def __repr__(self) -> str:
        return (f"WaitForLearner(training_intensity={self.training_intensity}, "
                f"learning_starts={self.learning_starts}, "
                f"max_steps_ahead={self.max_steps_ahead})")


class RecordReplayRatio:
    """Reports the measured replay ratio: `learner/steps_trained` per `sampler/env_steps`
    sampled after `learning_starts` (cumulative; 0 before any such step).

    Consumes: anything (e.g. a TrainResult). Yields: the same item.
    Metrics: info `learner/replay_ratio`.

    Examples:
        >>> RecordReplayRatio(learning_starts=2000)
        RecordReplayRatio(learning_starts=2000)
    """

    metrics_written = (REPLAY_RATIO_INFO,)

    def __init__(self, *, learning_starts: int) -> None:
        if learning_starts < 0:
            raise ValueError(f"RecordReplayRatio needs learning_starts >= 0, got "
                             f"{learning_starts=}")
        self.learning_starts = int(learning_starts)

    def __call__(self, item: Any) -> Any:
        metrics = LocalIterator.get_metrics()
        counters = metrics.counters
        metrics.info[REPLAY_RATIO_INFO] = replay_ratio(
            counters.get(STEPS_TRAINED_COUNTER, 0), counters.get(STEPS_SAMPLED_COUNTER, 0),
            self.learning_starts)
        return item

    def __repr__(self) -> str:
        return f"RecordReplayRatio(learning_starts={self.learning_starts})"
