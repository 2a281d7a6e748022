"""Operators of replay-based plans: store to replay, replay, update priorities, update target.

A replay memory is either one local buffer (`flowrl.replay.ReplayBuffer` or
`PrioritizedReplayBuffer`, in the driver) or a list of replay actors
(`flowrl.workers.replay_actor.ReplayActor`, one buffer shard each). Every side effect has its
own operator: storing, priority updates and target-network updates are never hidden inside a
training step.

```python
store = rollouts.for_each(StoreToReplay(buffer))
train = (Replay(buffer, num_items=32, learning_starts=1000)
         .for_each(UpdatePriorities(workers, buffer, compute_td_errors=td_errors))
         .for_each(TrainOneStep(workers))
         .for_each(UpdateTargetNetwork(workers, 500)))
plan = Concurrently([store, train], mode="round_robin", output_indexes=[1])
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from flowrl.iter import LocalIterator, PollingSource, executor, from_actors
from flowrl.iter.errors import ActorDiedError
from flowrl.ops.learner_thread import LearnerOutput
from flowrl.ops.metrics import (
    NUM_TARGET_UPDATES_COUNTER,
    REPLAY_PRIORITY_UPDATES_COUNTER,
    REPLAY_ROWS_ADDED_COUNTER,
    STEPS_SAMPLED_COUNTER,
    STEPS_TRAINED_COUNTER,
)
from flowrl.ops.results import DEFAULT_POLICY_ID
from flowrl.policy import MultiAgentBatch, SampleBatch
from flowrl.replay import BATCH_INDEXES, PrioritizedReplayBuffer, ReplayBuffer
from flowrl.workers import WorkerSet
from flowrl.workers.replay_actor import add_with_priorities

PRIORITIES = "priorities"
"""A batch column with initial priorities (worker-side prioritization); `StoreToReplay` moves
it out of the stored columns and gives the new rows these priorities."""
TD_ERRORS = "td_errors"
"""The learner statistic holding per-row TD errors of a replayed batch (Ape-X's learner)."""

TargetUpdateBy = Literal["sampled", "trained"]
_TARGET_UPDATE_BY = ("sampled", "trained")

# Unanswered `add`/`update_priorities` calls allowed per replay actor before a store waits.
_MAX_PENDING_CALLS_PER_SHARD = 8


def _split_buffers(operator: str, buffers: Any) -> tuple[ReplayBuffer | None, list[Any]]:
    """(local buffer, []) or (None, replay actors), with a clear error for anything else."""
    if isinstance(buffers, ReplayBuffer):
        return buffers, []
    if isinstance(buffers, list | tuple) and buffers and not any(
            isinstance(b, ReplayBuffer) for b in buffers):
        return None, list(buffers)
    raise TypeError(
        f"{operator} needs a local replay buffer (flowrl.replay.ReplayBuffer or "
        f"PrioritizedReplayBuffer) or a non-empty list of replay actors "
        f"(flowrl.workers.replay_actor.create_replay_actors), got {buffers!r}")


def _single_agent_batch(operator: str, item: Any) -> SampleBatch:
    batch = item[1] if isinstance(item, tuple) and len(item) == 2 else item
    if isinstance(batch, MultiAgentBatch) and set(batch.policy_batches) == {DEFAULT_POLICY_ID}:
        return batch.policy_batches[DEFAULT_POLICY_ID]  # all agents share one policy
    if isinstance(batch, MultiAgentBatch):
        raise TypeError(f"{operator} stores single-agent SampleBatches, got a MultiAgentBatch of "
                        f"policies {sorted(batch.policy_batches)}; add SelectExperiences and "
                        "store each policy's batch in its own buffer (as "
                        "flowrl.plans.multiagent.multiagent_plan does)")
    if not isinstance(batch, SampleBatch):
        raise TypeError(f"{operator} needs SampleBatch items (or (source, SampleBatch) pairs), "
                        f"got {type(batch).__name__}")
    return batch


class _ShardCalls:
    """Unawaited calls on replay actors; finished ones are checked so a dead shard is named."""

    def __init__(self, operator: str, actors: list[Any]) -> None:
        self.operator = operator
        self.actors = actors
        self.pending: list[tuple[int, Any]] = []

    def submit(self, shard: int, method: str, *args: Any) -> None:
        self.check()
        if len(self.pending) >= _MAX_PENDING_CALLS_PER_SHARD * len(self.actors):
            self._collect(self.pending[:1], blocking=True)
        self.pending.append((shard, executor.call(self.actors[shard], method, *args)))

    def check(self) -> None:
        """Raises if a finished call failed; a dead actor gets a message naming its shard."""
        if self.pending:
            self._collect(self.pending, blocking=False)

    def _collect(self, calls: list[tuple[int, Any]], blocking: bool) -> None:
        futures = [future for _, future in calls]
        ready, _ = executor.wait(futures, num_returns=1 if blocking else len(futures),
                                 timeout=None if blocking else 0)
        done = {id(future) for future in ready}
        finished = [(shard, future) for shard, future in calls if id(future) in done]
        self.pending = [call for call in self.pending if id(call[1]) not in done]
        for shard, future in finished:
            try:
                executor.get(future)
            except ActorDiedError as error:
                raise ActorDiedError(
                    f"{self.operator}: replay actor {shard} of {len(self.actors)} "
                    f"({self.actors[shard]!r}) died, so its buffer shard and the rows stored in "
                    "it are lost. Replay actors are not restarted; restore the run from a "
                    "checkpoint (store_buffer_in_checkpoints keeps buffers) or start it again."
                ) from error


class StoreToReplay:
    """Stores each rollout batch in the replay memory: a local buffer, or one replay actor
    chosen at random per batch.

    A `priorities` column (worker-side prioritization) becomes the new rows' initial priorities
    instead of a stored column. Calls on replay actors are not awaited, but a failed one
    (e.g. a dead actor) fails the plan at the next store, naming the shard.

    Consumes: SampleBatch, or (source, SampleBatch). Yields: the same item.
    Metrics: counter `replay/rows_added`.

    Examples:
        >>> from flowrl.replay import ReplayBuffer
        >>> buffer = ReplayBuffer(100)
        >>> rows = LocalIterator(lambda: [SampleBatch({"obs": np.zeros((3, 2))})], name="rows")
        >>> _ = rows.for_each(StoreToReplay(buffer)).take(1)
        >>> len(buffer)
        3
    """

    metrics_written = (REPLAY_ROWS_ADDED_COUNTER,)

    def __init__(self, buffers: Any, *, seed: int | None = None) -> None:
        self.local_buffer, self.actors = _split_buffers("StoreToReplay", buffers)
        self.rng = np.random.default_rng(seed)
        self._calls = _ShardCalls("StoreToReplay", self.actors)

    def __call__(self, item: Any) -> Any:
        batch = _single_agent_batch("StoreToReplay", item)
        columns = dict(batch)
        priorities = columns.pop(PRIORITIES, None)
        stored = SampleBatch(columns)
        if self.local_buffer is not None:
            add_with_priorities(self.local_buffer, stored, priorities)
        else:
            shard = int(self.rng.integers(len(self.actors)))
            self._calls.submit(shard, "add", stored, priorities)
        LocalIterator.get_metrics().counters[REPLAY_ROWS_ADDED_COUNTER] += len(batch)
        return item

    def __repr__(self) -> str:
        where = type(self.local_buffer).__name__ if self.local_buffer is not None else (
            f"replay_actors={len(self.actors)}")
        return f"StoreToReplay({where})"


class _LocalReplaySource(PollingSource):
    """Samples a local buffer once it holds `learning_starts` rows; not ready before."""

    def __init__(self, buffer: ReplayBuffer, num_items: int, learning_starts: int) -> None:
        self.buffer = buffer
        self.num_items = num_items
        self.learning_starts = max(learning_starts, 1)

    def poll(self) -> tuple[bool, Any]:
        if len(self.buffer) < self.learning_starts:
            return False, None
        return True, self.buffer.sample(self.num_items)

    def extra_stats(self) -> dict[str, Any]:
        return {"buffer_size": len(self.buffer), "learning_starts": self.learning_starts}


def _is_sample(pair: tuple[Any, Any]) -> bool:
    return pair[1] is not None


def Replay(  # noqa: N802 - a source, named like the operators users know (STYLE G3)
    buffers: Any, *, num_items: int | None = None, learning_starts: int = 0,
    num_async: int = 4,
) -> LocalIterator[Any]:
    """Sampled batches from the replay memory; nothing until enough rows are stored.

    - A local buffer: yields `num_items`-row SampleBatches once it holds `learning_starts`
      rows. Until then the source is "not ready": under `Concurrently` the other flows run (a
      store flow fills the buffer), and no operator after it ever sees an empty item.
    - Replay actors: yields `(replay_actor, SampleBatch)` pairs, in the order the actors
      answer, with `num_async` requests in flight per actor, so priorities can go back to the
      shard a batch came from. Each actor's own `num_items` and `learning_starts` apply (see
      `create_replay_actors`); a dead actor fails the plan naming its shard.

    Consumes: nothing (a source).
    Yields: SampleBatch (local buffer) or (replay actor, SampleBatch) pairs (replay actors).
    Metrics: none (per-operator counts in the plan's stats).

    Raises:
        ValueError: `num_items` missing or < 1 for a local buffer, `num_items` or
            `learning_starts` given for replay actors, `num_async` < 1, `learning_starts` < 0.

    Examples:
        >>> from flowrl.replay import ReplayBuffer
        >>> buffer = ReplayBuffer(100, seed=0)
        >>> buffer.add(SampleBatch({"obs": np.arange(5.0)}))
        >>> [len(b) for b in Replay(buffer, num_items=4, learning_starts=5).take(2)]
        [4, 4]
    """
    local_buffer, actors = _split_buffers("Replay", buffers)
    if num_async < 1:
        raise ValueError(f"Replay needs num_async >= 1 requests in flight, got {num_async=}")
    if learning_starts < 0:
        raise ValueError(f"Replay needs learning_starts >= 0, got {learning_starts=}")
    if local_buffer is not None:
        if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 1:
            raise ValueError(f"Replay from a local buffer needs num_items >= 1 rows per "
                             f"sample, got {num_items=!r}")
        return LocalIterator.from_polling_source(
            _LocalReplaySource(local_buffer, num_items, learning_starts),
            name=f"Replay({type(local_buffer).__name__}, num_items={num_items}, "
                 f"learning_starts={learning_starts})",
            op="Replay",
            params={"num_items": num_items, "learning_starts": learning_starts,
                    "capacity": local_buffer.capacity})
    if num_items is not None or learning_starts:
        raise ValueError(
            "Replay from replay actors uses each actor's own num_items and learning_starts "
            f"(set them in create_replay_actors); got {num_items=}, {learning_starts=}. Drop "
            "them here.")
    shards = from_actors(actors, name=f"ReplayActors[shards={len(actors)}]")
    pairs = shards.gather_async(num_async=num_async).zip_with_source_actor()
    return pairs.filter(_is_sample, label="Replay(ready samples only)")


class UpdatePriorities:
    """Sets the replayed rows' priorities to their |TD error| (prioritized replay).

    Two kinds of item:

    - a SampleBatch sampled from a local `PrioritizedReplayBuffer` (its `batch_indexes`):
      TD errors come from `compute_td_errors(learner_policy, batch)` (the weights the batch is
      about to be trained with, as in the loss) and the buffer is updated;
    - a `LearnerOutput` whose `source` is the replay actor the batch came from and whose
      `stats` hold the batch's `td_errors` and `batch_indexes` (a learner thread computed
      them): the priorities go back to that shard, and the arrays leave the stats.

    A multi-agent learner's policy is chosen by `policy_id` (default "default_policy").

    Consumes: SampleBatch or LearnerOutput. Yields: the same batch; the LearnerOutput without
    its per-row arrays.
    Metrics: counter `replay/priority_updates`.

    Examples:
        >>> UpdatePriorities(None, [object()])
        UpdatePriorities(replay_actors=1)
    """

    metrics_written = (REPLAY_PRIORITY_UPDATES_COUNTER,)

    def __init__(self, workers: WorkerSet | None, buffers: Any, *,
                 compute_td_errors: Callable[[Any, SampleBatch], np.ndarray] | None = None,
                 policy_id: str = DEFAULT_POLICY_ID) -> None:
        self.workers = workers
        self.policy_id = policy_id
        self.local_buffer, self.actors = _split_buffers("UpdatePriorities", buffers)
        if self.local_buffer is not None:
            if not isinstance(self.local_buffer, PrioritizedReplayBuffer):
                raise TypeError(
                    "UpdatePriorities needs a PrioritizedReplayBuffer; a uniform ReplayBuffer "
                    "has no priorities (set prioritized_replay=True, or drop this operator)")
            if compute_td_errors is None or workers is None:
                raise ValueError("UpdatePriorities on a local buffer computes TD errors with "
                                 "the learner's policy: pass workers and compute_td_errors="
                                 "fn(policy, batch) -> per-row TD errors")
        self.compute_td_errors = compute_td_errors
        self._calls = _ShardCalls("UpdatePriorities", self.actors)

    def __call__(self, item: Any) -> Any:
        metrics = LocalIterator.get_metrics()
        if isinstance(item, LearnerOutput):
            return self._update_shard(item, metrics)
        if not isinstance(item, SampleBatch) or BATCH_INDEXES not in item:
            raise TypeError(
                "UpdatePriorities needs batches sampled from a prioritized buffer (with "
                f"'{BATCH_INDEXES}') or LearnerOutputs, got {type(item).__name__}"
                + (f" with columns {sorted(item.columns)}" if isinstance(item, SampleBatch)
                   else ""))
        if self.local_buffer is None:
            raise TypeError("UpdatePriorities over replay actors needs LearnerOutput items "
                            "whose source is the actor; got a SampleBatch")
        policy = _learner_policy(self.workers, self.policy_id)
        td_errors = np.asarray(self.compute_td_errors(policy, item), dtype=np.float64)
        self.local_buffer.update_priorities(item[BATCH_INDEXES], np.abs(td_errors))
        metrics.counters[REPLAY_PRIORITY_UPDATES_COUNTER] += len(td_errors)
        return item

    def _update_shard(self, output: LearnerOutput, metrics: Any) -> LearnerOutput:
        stats = dict(output.stats)
        td_errors, indexes = stats.pop(TD_ERRORS, None), stats.pop(BATCH_INDEXES, None)
        if td_errors is None or indexes is None:
            raise KeyError(
                f"UpdatePriorities needs the learner's stats to hold '{TD_ERRORS}' and "
                f"'{BATCH_INDEXES}' for each batch; got {sorted(output.stats)}. Train with a "
                "learn function that returns them (e.g. flowrl.plans.apex.LearnWithTDErrors)")
        if self.actors:
            shard = self._shard_of(output.source)
            self._calls.submit(shard, "update_priorities", np.asarray(indexes),
                               np.abs(np.asarray(td_errors, dtype=np.float64)))
        else:
            self.local_buffer.update_priorities(indexes, np.abs(td_errors))
        metrics.counters[REPLAY_PRIORITY_UPDATES_COUNTER] += len(td_errors)
        return dataclasses.replace(output, stats=stats)

    def _shard_of(self, source: Any) -> int:
        for index, actor in enumerate(self.actors):
            if actor is source or actor == source:
                return index
        raise ValueError(f"UpdatePriorities got a batch from {source!r}, which is none of its "
                         f"{len(self.actors)} replay actors; pass Replay's actors to both")

    def __repr__(self) -> str:
        where = type(self.local_buffer).__name__ if self.local_buffer is not None else (
            f"replay_actors={len(self.actors)}")
        return f"UpdatePriorities({where})"


def _learner_policy(workers: WorkerSet, policy_id: str) -> Any:
    """The learner's policy `policy_id` (multi-agent learners hold one per policy id)."""
    worker = workers.local_worker()
    return worker.policy if policy_id == DEFAULT_POLICY_ID else worker.get_policy(policy_id)


class UpdateTargetNetwork:
    """Updates the learner's target network every `target_network_update_freq` steps.

    Counts env steps sampled (`by="sampled"`, DQN) or samples trained on (`by="trained"`,
    Ape-X, whose learner runs at its own pace) in the shared counters, and moves the target
    toward the online network (`policy.update_target(tau)`; tau=1 copies it) each time that
    many have passed since the last update. `policy_id` picks a multi-agent learner's policy.
    With a learner thread, pass its `LockedLearnStep` as `learn_step`: the update then takes
    the learner's lock, so it never lands in the middle of a gradient step.

    Consumes: any item (put it after the training step). Yields: the same item.
    Metrics: counter `learner/target_updates`.

    Examples:
        >>> UpdateTargetNetwork(None, 500, by="trained")
        UpdateTargetNetwork(target_network_update_freq=500, by='trained')
    """

    metrics_written = (NUM_TARGET_UPDATES_COUNTER,)

    def __init__(self, workers: WorkerSet | None, target_network_update_freq: int, *,
                 by: TargetUpdateBy = "sampled", tau: float = 1.0,
                 policy_id: str = DEFAULT_POLICY_ID, learn_step: Any = None) -> None:
        if isinstance(target_network_update_freq, bool) or not isinstance(
                target_network_update_freq, int) or target_network_update_freq < 1:
            raise ValueError(f"target_network_update_freq must be an int >= 1 (steps), got "
                             f"{target_network_update_freq!r}")
        if by not in _TARGET_UPDATE_BY:
            raise ValueError(f"UpdateTargetNetwork by={by!r} is not one of "
                             f"{list(_TARGET_UPDATE_BY)} (count env steps sampled or samples "
                             "trained)")
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"UpdateTargetNetwork needs tau in (0, 1], got {tau=}")
        self.workers = workers
        self.target_network_update_freq = target_network_update_freq
        self.by = by
        self.tau = tau
        self.policy_id = policy_id
        self.learn_step = learn_step
        self.last_update_at = 0

    def __call__(self, item: Any) -> Any:
        counters = LocalIterator.get_metrics().counters
        now = int(counters[STEPS_SAMPLED_COUNTER if self.by == "sampled" else
                           STEPS_TRAINED_COUNTER])
        if now - self.last_update_at >= self.target_network_update_freq:
            policy = _learner_policy(self.workers, self.policy_id)
            if self.learn_step is None:
                policy.update_target(self.tau)
            else:
                with self.learn_step.lock:
                    policy.update_target(self.tau)
            self.last_update_at = now
            counters[NUM_TARGET_UPDATES_COUNTER] += 1
        return item

    def __repr__(self) -> str:
        return (f"UpdateTargetNetwork(target_network_update_freq="
                f"{self.target_network_update_freq}, by={self.by!r})")


__all__ = ["PRIORITIES", "TD_ERRORS", "Replay", "StoreToReplay", "UpdatePriorities",
           "UpdateTargetNetwork"]
