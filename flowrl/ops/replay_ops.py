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
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np

from flowrl.data import DEFAULT_POLICY_ID, MultiAgentBatch, SampleBatch
from flowrl.iter import GraphLink, LocalIterator, PollingSource, executor, from_actors
from flowrl.iter.errors import ActorDiedError
from flowrl.iter.graph import LinkDirection
from flowrl.ops.learner_thread import LearnerOutput, stats_by_policy
from flowrl.ops.metrics import (
    NUM_TARGET_UPDATES_COUNTER,
    REPLAY_PRIORITY_UPDATES_COUNTER,
    REPLAY_ROWS_ADDED_COUNTER,
    STEPS_SAMPLED_COUNTER,
    STEPS_TRAINED_COUNTER,
)
from flowrl.replay import (
    BATCH_INDEXES,
    MultiAgentReplayBuffer,
    PrioritizedReplayBuffer,
    ReplayBuffer,
)
from flowrl.workers import WorkerSet
from flowrl.workers.replay_actor import add_with_priorities

PRIORITIES = "priorities"
"""A batch column with initial priorities (worker-side prioritization); `StoreToReplay` moves
it out of the stored columns and gives the new rows these priorities."""
TD_ERRORS = "td_errors"
"""The learner statistic holding per-row TD errors of a replayed batch (Ape-X's learner)."""

TargetUpdateBy = Literal["sampled", "trained", "updates"]
_TARGET_UPDATE_BY = ("sampled", "trained", "updates")

# Unanswered `add`/`update_priorities` calls allowed per replay actor before a store waits.
_MAX_PENDING_CALLS_PER_SHARD = 8


_LOCAL_BUFFERS = (ReplayBuffer, MultiAgentReplayBuffer)


def _split_buffers(operator: str, buffers: Any) -> tuple[Any, list[Any]]:
    """(local buffer, []) or (None, replay actors), with a clear error for anything else."""
    if isinstance(buffers, _LOCAL_BUFFERS):
        return buffers, []
    if isinstance(buffers, list | tuple) and buffers and not any(
            isinstance(b, _LOCAL_BUFFERS) for b in buffers):
        return None, list(buffers)
    raise TypeError(
        f"{operator} needs a local replay buffer (flowrl.replay.ReplayBuffer, "
        f"PrioritizedReplayBuffer or MultiAgentReplayBuffer) or a non-empty list of replay "
        f"actors (flowrl.workers.replay_actor.create_replay_actors), got {buffers!r}")


def _replay_link(local_buffer: ReplayBuffer | None, actors: list[Any], direction: LinkDirection,
                 data: str = "") -> GraphLink:
    """The replay memory as a side link of the plan graph: the local buffer, or the replay
    actors (the `Replay` source stands for them: `direction="is"`)."""
    if local_buffer is not None:
        return GraphLink(local_buffer, type(local_buffer).__name__, "replay buffer", direction,
                         data)
    return GraphLink(tuple(actors), f"ReplayActors[shards={len(actors)}]", "replay actors",
                     direction, data)


def _batch_to_store(operator: str, item: Any, local_buffer: Any) -> SampleBatch | MultiAgentBatch:
    """The batch of an item as the replay memory takes it: a `MultiAgentBatch` stays one for a
    `MultiAgentReplayBuffer` or for replay actors (which may hold one buffer per policy), and
    one of only "default_policy" (shared-policy mode) is that policy's SampleBatch otherwise."""
    batch = item[1] if isinstance(item, tuple) and len(item) == 2 else item
    if isinstance(batch, MultiAgentBatch):
        if isinstance(local_buffer, MultiAgentReplayBuffer):
            return batch
        if set(batch.policy_batches) == {DEFAULT_POLICY_ID}:
            return batch.policy_batches[DEFAULT_POLICY_ID]  # all agents share one policy
        if local_buffer is None:
            return batch
        raise TypeError(f"{operator} into one {type(local_buffer).__name__} stores single-agent "
                        f"SampleBatches, got a MultiAgentBatch of policies "
                        f"{sorted(batch.policy_batches)}; store into a MultiAgentReplayBuffer "
                        "(one buffer per policy), or add SelectExperiences and PolicyRows first")
    if not isinstance(batch, SampleBatch):
        raise TypeError(f"{operator} needs SampleBatch or MultiAgentBatch items (or (source, "
                        f"batch) pairs), got {type(batch).__name__}")
    return batch


def _split_priorities(batch: SampleBatch | MultiAgentBatch) -> tuple[Any, Any]:
    """(the batch without its `priorities` column, the priorities): per policy for a
    `MultiAgentBatch` ({policy id: priorities}, or None if no policy has them)."""
    if isinstance(batch, MultiAgentBatch):
        parts, priorities = {}, {}
        for policy_id, part in batch.policy_batches.items():
            parts[policy_id], policy_priorities = _split_priorities(part)
            if policy_priorities is not None:
                priorities[policy_id] = policy_priorities
        return MultiAgentBatch(parts, batch.env_steps), priorities or None
    columns = dict(batch)
    priorities = columns.pop(PRIORITIES, None)
    return SampleBatch(columns), priorities


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

    def collect_all(self) -> None:
        """Waits for every call in flight (and raises for a failed one)."""
        while self.pending:
            self._collect(self.pending[:1], blocking=True)

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

    A `MultiAgentBatch` goes into a `MultiAgentReplayBuffer` (or replay actors holding one per
    policy), each policy's rows into its own buffer; one of only "default_policy"
    (shared-policy mode) is stored as that policy's SampleBatch.

    A `priorities` column (worker-side prioritization) becomes the new rows' initial priorities
    instead of a stored column. Calls on replay actors are not awaited, but a failed one
    (e.g. a dead actor) fails the plan at the next store, naming the shard.

    Consumes: SampleBatch or MultiAgentBatch, or (source, batch). Yields: the same item.
    Metrics: counter `replay/rows_added` (rows stored, summed over policies).

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
        batch = _batch_to_store("StoreToReplay", item, self.local_buffer)
        stored, priorities = _split_priorities(batch)
        rows = stored.agent_steps() if isinstance(stored, MultiAgentBatch) else len(stored)
        if isinstance(self.local_buffer, MultiAgentReplayBuffer):
            rows = self.local_buffer.add(stored, priorities)  # policies it holds
        elif self.local_buffer is not None:
            add_with_priorities(self.local_buffer, stored, priorities)
        else:
            shard = int(self.rng.integers(len(self.actors)))
            self._calls.submit(shard, "add", stored, priorities)
        LocalIterator.get_metrics().counters[REPLAY_ROWS_ADDED_COUNTER] += rows
        return item

    def graph_links(self) -> list[GraphLink]:
        """A dashed "rows" edge to the replay memory (the `Replay` source of it)."""
        return [_replay_link(self.local_buffer, self.actors, "to", "rows")]

    def replay_state(self) -> list[dict[str, Any]]:
        """The state of the replay memory this operator stores into, one entry per buffer
        (the local buffer, or each replay actor's shard in order): what a Trainer checkpoint
        holds with `store_buffer_in_checkpoints`. Waits for the stores still in flight."""
        if self.local_buffer is not None:
            return [self.local_buffer.get_state()]
        self._calls.collect_all()
        return executor.get([executor.call(actor, "get_state") for actor in self.actors])

    def restore_replay_state(self, states: list[dict[str, Any]]) -> None:
        """Loads states from `replay_state()` into the same number of buffers (shards)."""
        buffers = [self.local_buffer] if self.local_buffer is not None else self.actors
        if len(states) != len(buffers):
            raise ValueError(
                f"The checkpoint holds {len(states)} replay buffer shard(s), this plan's "
                f"{self!r} stores into {len(buffers)}; restore into a plan with the saved "
                f"num_replay_buffer_shards={len(states)}, or set store_buffer_in_checkpoints="
                "False to start with empty buffers.")
        if self.local_buffer is not None:
            self.local_buffer.set_state(states[0])
            return
        executor.get([executor.call(actor, "set_state", state)
                      for actor, state in zip(self.actors, states)])

    def __repr__(self) -> str:
        where = type(self.local_buffer).__name__ if self.local_buffer is not None else (
            f"replay_actors={len(self.actors)}")
        return f"StoreToReplay({where})"


class _LocalReplaySource(PollingSource):
    """Samples a local buffer once it holds `learning_starts` rows; not ready before. A
    `MultiAgentReplayBuffer` is ready once one policy's buffer holds that policy's
    `learning_starts`, and samples the policies that are ready."""

    def __init__(self, buffer: Any, num_items: int | dict[str, int],
                 learning_starts: int | dict[str, int]) -> None:
        self.buffer = buffer
        self.num_items = num_items
        self.learning_starts = ({pid: max(rows, 1) for pid, rows in learning_starts.items()}
                                if isinstance(learning_starts, dict)
                                else max(learning_starts, 1))

    def poll(self) -> tuple[bool, Any]:
        if isinstance(self.buffer, MultiAgentReplayBuffer):
            ready = {pid: _of_policy(self.num_items, pid)
                     for pid, buffer in self.buffer.buffers.items()
                     if len(buffer) >= _of_policy(self.learning_starts, pid)}
            return (True, self.buffer.sample(ready)) if ready else (False, None)
        if len(self.buffer) < self.learning_starts:
            return False, None
        return True, self.buffer.sample(self.num_items)

    def extra_stats(self) -> dict[str, Any]:
        return {"buffer_size": len(self.buffer), "learning_starts": self.learning_starts}

    def graph_links(self) -> list[GraphLink]:
        return [_replay_link(self.buffer, [], "is")]


def _of_policy(value: int | dict[str, int], policy_id: str) -> int:
    return value[policy_id] if isinstance(value, dict) else value


def _per_policy_setting(name: str, value: Any, buffer: Any, minimum: int) -> int | dict[str, int]:
    """`num_items` or `learning_starts` of `Replay`: an int, or (for a MultiAgentReplayBuffer)
    a dict with one int per policy of the buffer."""
    def valid(number: Any) -> bool:
        return not isinstance(number, bool) and isinstance(number, int) and number >= minimum

    if isinstance(value, Mapping):
        if not isinstance(buffer, MultiAgentReplayBuffer):
            raise ValueError(f"Replay takes {name} per policy only from a "
                             f"MultiAgentReplayBuffer, got {name}={value!r} for {buffer!r}")
        if set(value) != set(buffer.policy_ids) or not all(map(valid, value.values())):
            raise ValueError(f"Replay needs {name} >= {minimum} for each policy of the buffer "
                             f"{buffer.policy_ids}, got {name}={value!r}")
        return dict(value)
    if not valid(value):
        raise ValueError(f"Replay from a local buffer needs {name} >= {minimum}"
                         f"{' rows per sample' if name == 'num_items' else ''}, got "
                         f"{name}={value!r}")
    return value


def _is_sample(pair: tuple[Any, Any]) -> bool:
    return pair[1] is not None


def Replay(  # noqa: N802 - a source, named like the operators users know (STYLE G3)
    buffers: Any, *, num_items: int | Mapping[str, int] | None = None,
    learning_starts: int | Mapping[str, int] = 0, num_async: int = 4,
) -> LocalIterator[Any]:
    """Sampled batches from the replay memory; nothing until enough rows are stored.

    - A local buffer: yields `num_items`-row SampleBatches once it holds `learning_starts`
      rows. Until then the source is "not ready": under `Concurrently` the other flows run (a
      store flow fills the buffer), and no operator after it ever sees an empty item.
    - Replay actors: yields `(replay_actor, SampleBatch)` pairs, in the order the actors
      answer, with `num_async` requests in flight per actor, so priorities can go back to the
      shard a batch came from. Each actor's own `num_items` and `learning_starts` apply (see
      `create_replay_actors`); a dead actor fails the plan naming its shard.
    - A `MultiAgentReplayBuffer` (or actors holding one per policy) yields `MultiAgentBatch`es
      with rows of each policy whose buffer holds its `learning_starts`; `num_items` and
      `learning_starts` may then be dicts policy id -> value.

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
    if not isinstance(learning_starts, Mapping) and learning_starts < 0:
        raise ValueError(f"Replay needs learning_starts >= 0, got {learning_starts=}")
    if local_buffer is not None:
        num_items = _per_policy_setting("num_items", num_items, local_buffer, 1)
        learning_starts = _per_policy_setting("learning_starts", learning_starts,
                                              local_buffer, 0)
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
    shards = from_actors(actors, name=f"ReplayActors[shards={len(actors)}]",
                         graph_links=[_replay_link(None, actors, "is")])
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

    A multi-agent learner's policy is chosen by `policy_id` (default "default_policy"). With one
    buffer per policy (`MultiAgentReplayBuffer`, or replay actors holding one), items are
    `MultiAgentBatch`es, whose rows each policy scores with its own network, or
    `LearnerOutput`s with {policy id: stats}, each with that policy's `td_errors` and
    `batch_indexes`; each policy's priorities go to its own buffer.

    Consumes: SampleBatch, MultiAgentBatch or LearnerOutput. Yields: the same batch; the
    LearnerOutput without its per-row arrays.
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
            if not (isinstance(self.local_buffer, PrioritizedReplayBuffer) or isinstance(
                    self.local_buffer, MultiAgentReplayBuffer) and self.local_buffer.prioritized):
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
        if isinstance(item, MultiAgentBatch) and isinstance(
                self.local_buffer, MultiAgentReplayBuffer):
            return self._update_policies(item, metrics)
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

    def _update_policies(self, batch: MultiAgentBatch, metrics: Any) -> MultiAgentBatch:
        """Each policy's rows (from a prioritized buffer) get |TD error| under its network."""
        indexes, priorities = {}, {}
        for policy_id, part in batch.policy_batches.items():
            if BATCH_INDEXES not in part:
                continue  # that policy's buffer is uniform
            policy = _learner_policy(self.workers, policy_id)
            td_errors = np.asarray(self.compute_td_errors(policy, part), dtype=np.float64)
            indexes[policy_id], priorities[policy_id] = part[BATCH_INDEXES], np.abs(td_errors)
        self.local_buffer.update_priorities(indexes, priorities)
        metrics.counters[REPLAY_PRIORITY_UPDATES_COUNTER] += sum(map(len, priorities.values()))
        return batch

    def _update_shard(self, output: LearnerOutput, metrics: Any) -> LearnerOutput:
        if TD_ERRORS not in output.stats and BATCH_INDEXES not in output.stats:
            by_policy = stats_by_policy(output.stats)
            if any(TD_ERRORS in stats for stats in by_policy.values()):
                return self._update_shard_policies(output, by_policy, metrics)
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

    def _update_shard_policies(self, output: LearnerOutput, by_policy: dict[str, dict],
                               metrics: Any) -> LearnerOutput:
        """{policy id: stats} of a learner that trained several policies: each policy's
        priorities go to its buffer (in the batch's shard)."""
        stats, indexes, priorities = {}, {}, {}
        for policy_id, policy_stats in by_policy.items():
            stats[policy_id] = dict(policy_stats)
            td_errors = stats[policy_id].pop(TD_ERRORS, None)
            policy_indexes = stats[policy_id].pop(BATCH_INDEXES, None)
            if td_errors is None:
                continue  # that policy's buffer is uniform
            if policy_indexes is None:
                raise KeyError(f"UpdatePriorities needs the learner's stats of policy "
                               f"{policy_id!r} to hold '{BATCH_INDEXES}' with its "
                               f"'{TD_ERRORS}'; got {sorted(policy_stats)}")
            indexes[policy_id] = np.asarray(policy_indexes)
            priorities[policy_id] = np.abs(np.asarray(td_errors, dtype=np.float64))
        if self.actors:
            self._calls.submit(self._shard_of(output.source), "update_priorities", indexes,
                               priorities)
        else:
            self.local_buffer.update_priorities(indexes, priorities)
        metrics.counters[REPLAY_PRIORITY_UPDATES_COUNTER] += sum(map(len, priorities.values()))
        return dataclasses.replace(output, stats=stats)

    def _shard_of(self, source: Any) -> int:
        for index, actor in enumerate(self.actors):
            if actor is source or actor == source:
                return index
        raise ValueError(f"UpdatePriorities got a batch from {source!r}, which is none of its "
                         f"{len(self.actors)} replay actors; pass Replay's actors to both")

    def graph_links(self) -> list[GraphLink]:
        """A dashed "priorities" edge back to the replay memory."""
        return [_replay_link(self.local_buffer, self.actors, "to", "priorities")]

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
    Ape-X, whose learner runs at its own pace) in the shared counters, or optimizer updates
    (`by="updates"`): the learner thread's with `learn_step` (APPO), else the learner
    policy's own `num_updates` (SAC, DDPG, TD3), and moves the target
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
                             f"{list(_TARGET_UPDATE_BY)} (count env steps sampled, samples "
                             "trained or learner updates)")
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
        if self.by == "updates" and self.learn_step is not None:
            now = int(self.learn_step.version)
        elif self.by == "updates":
            now = int(_learner_policy(self.workers, self.policy_id).num_updates)
        else:
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
        chosen = "" if self.policy_id == DEFAULT_POLICY_ID else f", policy_id={self.policy_id!r}"
        return (f"UpdateTargetNetwork(target_network_update_freq="
                f"{self.target_network_update_freq}, by={self.by!r}{chosen})")


__all__ = ["PRIORITIES", "TD_ERRORS", "Replay", "StoreToReplay", "UpdatePriorities",
           "UpdateTargetNetwork"]
