"""`LearnerThread`: trains the learner policy in a Python thread fed by a queue (IMPALA, Ape-X).

The plan runs on the driver's main thread and keeps sampling while the learner trains: the
plan puts batches on `learner.inqueue` (`Enqueue`) and reads results from `learner.outqueue`
(`Dequeue(learner.outqueue, check=learner.check)`). If the thread dies, the next plan step that
touches it raises a `FlowError` naming the thread, the policy and the original traceback.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flowrl.data import DEFAULT_POLICY_ID, MultiAgentBatch
from flowrl.iter.errors import operator_error
from flowrl.iter.graph import GraphLink
from flowrl.iter.metrics import TimerStat
from flowrl.ops.concurrency import WatchedQueue

# How often the thread looks up from a blocking queue call to see whether it should stop.
_STOP_POLL_S = 0.1


@dataclass(frozen=True)
class LearnerOutput:
    """What the learner thread puts on `learner.outqueue` after each update.

    Attributes:
        source: What the plan paired with the batch (`(source, batch)` items), e.g. the
            rollout worker that produced it, so weights can go back to it; None otherwise.
        batch_count: Steps in the batch trained on (agent steps, summed over policies, for
            a MultiAgentBatch).
        stats: The learner's statistics for this update (loss terms, ...), or {policy id:
            statistics} when it trained several policies (see `stats_by_policy`).
        learner_version: The learner's `weights_version` after this update.
    """

    source: Any
    batch_count: int
    stats: dict[str, Any]
    learner_version: int


class MinibatchBuffer:
    """Replays each batch from a queue `num_passes` times, cycling over `size` slots (IMPALA).

    With one slot each batch is trained on `num_passes` times in a row; with k slots the
    learner alternates between the k latest batches, so consecutive updates see different data.

    Examples:
        >>> import queue
        >>> inbox = queue.Queue()
        >>> for batch in "ab":
        ...     inbox.put(batch)
        >>> buffer = MinibatchBuffer(inbox, size=2, num_passes=2)
        >>> [buffer.get(timeout_s=0.1)[0] for _ in range(4)]
        ['a', 'b', 'a', 'b']
        >>> buffer.get(timeout_s=0.01) is None
        True
    """

    def __init__(self, inqueue: queue.Queue, size: int, num_passes: int) -> None:
        self.inqueue = inqueue
        self.num_passes = num_passes
        self.slots: list[Any] = [None] * size
        self.passes_left = [0] * size
        self.index = 0

    def get(self, timeout_s: float) -> tuple[Any, bool] | None:
        """`(item, is_new)` for the next update, or None if no new item came within the wait."""
        index = self.index
        is_new = self.passes_left[index] <= 0
        if is_new:
            try:
                self.slots[index] = self.inqueue.get(timeout=timeout_s)
            except queue.Empty:
                return None
            self.passes_left[index] = self.num_passes
        item = self.slots[index]
        self.passes_left[index] -= 1
        if self.passes_left[index] == 0:
            self.slots[index] = None  # the last pass: do not keep the batch alive
        self.index = (index + 1) % len(self.slots)
        return item, is_new

    def holds_batches(self) -> bool:
        """True while some slot still has passes left."""
        return any(passes > 0 for passes in self.passes_left)


class LearnerThread(threading.Thread):
    """A daemon thread that trains the learner policy on the batches put on its `inqueue`.

    Each item on `inqueue` is a batch, or a `(source, batch)` pair whose `source` (opaque to
    the thread) comes back in the `LearnerOutput` on `outqueue`. Use it in a plan with
    `Enqueue(learner.inqueue)` and `Dequeue(learner.outqueue, check=learner.check)`, or
    imperatively: `learner.start(); learner.inqueue.put(batch); learner.outqueue.get()`.

    Args:
        workers: A WorkerSet, or anything with `local_worker().policy` (only used when `learn`
            is not given).
        policy_id: The id of the policy being trained (for errors and statistics).
        learn: `(batch) -> stats dict`; default `workers.local_worker().policy.learn_on_batch`.
        in_queue_size: Capacity of `inqueue`, in items.
        out_queue_size: Capacity of `outqueue`; the learner waits when it is full.
        num_sgd_iter: Updates per batch (each batch is replayed this many times).
        minibatch_buffer_size: Batches the replay cycles over (see `MinibatchBuffer`).
        timeout_s: Seconds a queue may stay full or empty while the plan keeps trying before
            the plan fails, saying which side is starving.

    Examples:
        >>> learner = LearnerThread(None, learn=lambda batch: {"loss": float(sum(batch))})
        >>> learner.start()
        >>> learner.inqueue.put(("worker-1", [1.0, 2.0]))
        >>> output = learner.outqueue.get(timeout=10)
        >>> output.source, output.batch_count, output.stats, output.learner_version
        ('worker-1', 2, {'loss': 3.0}, 1)
        >>> learner.stop()
    """

    def __init__(
        self,
        workers: Any,
        *,
        policy_id: str = DEFAULT_POLICY_ID,
        learn: Callable[[Any], dict[str, Any]] | None = None,
        in_queue_size: int = 16,
        out_queue_size: int = 128,
        num_sgd_iter: int = 1,
        minibatch_buffer_size: int = 1,
        timeout_s: float = 300.0,
    ) -> None:
        for name, value in (
            ("in_queue_size", in_queue_size),
            ("out_queue_size", out_queue_size),
            ("num_sgd_iter", num_sgd_iter),
            ("minibatch_buffer_size", minibatch_buffer_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LearnerThread needs {name} to be an int >= 1, got {value!r}")
        if isinstance(timeout_s, bool) or not timeout_s > 0:
            raise ValueError(f"LearnerThread needs timeout_s > 0 seconds, got {timeout_s=}")
        super().__init__(name=f"flowrl-learner-{policy_id}", daemon=True)
        # What __reduce__ rebuilds an unstarted copy from (plans pickle before they run).
        self._constructor_arguments = (workers, {
            "policy_id": policy_id, "learn": learn, "in_queue_size": in_queue_size,
            "out_queue_size": out_queue_size, "num_sgd_iter": num_sgd_iter,
            "minibatch_buffer_size": minibatch_buffer_size, "timeout_s": timeout_s})
        self.policy_id = policy_id
        self.learn = learn if learn is not None else _learn_on_batch_of(workers, policy_id)
        self.num_sgd_iter = num_sgd_iter
        self.timeout_s = timeout_s
        self.inqueue = _LearnerQueue(
            self,
            "inqueue",
            in_queue_size,
            name="learner.inqueue",
            check=self.check,
            timeout_s=timeout_s,
            diagnose=self._why_inqueue_stays_full,
        )
        self.outqueue = _LearnerQueue(
            self,
            "outqueue",
            out_queue_size,
            name="learner.outqueue",
            check=self.check,
            timeout_s=timeout_s,
            diagnose=self._why_outqueue_stays_empty,
        )
        self.minibatch_buffer = MinibatchBuffer(self.inqueue, minibatch_buffer_size, num_sgd_iter)
        self.num_batches_received = 0
        self.num_updates = 0
        self.num_steps_trained = 0
        self.weights_version = 0
        self.learn_timer = TimerStat()
        self._update_times: collections.deque[float] = collections.deque(maxlen=100)
        self._learning_since: float | None = None
        self._last_batch_at: float | None = None
        self._waiting_for_outqueue = False
        self._failure: BaseException | None = None
        self._stopping = threading.Event()

    def __reduce__(self) -> tuple:
        """Pickles as a new, unstarted learner with the same settings, so a plan holding it
        (and its queues) pickles before it runs, like every other plan."""
        workers, settings = self._constructor_arguments
        return (_unstarted_learner, (type(self), workers, settings))

    def start(self) -> None:
        """Starts the thread; `stop_learner_threads(workers)` (Trainer.stop) will stop it."""
        _STARTED_LEARNERS.add(self)
        super().start()

    # -- the thread ----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                got = self.minibatch_buffer.get(timeout_s=_STOP_POLL_S)
                if got is not None:
                    self._train_once(*got)
        except BaseException as error:  # noqa: BLE001 - kept; check() raises it on the plan side
            self._failure = error

    def _train_once(self, item: Any, is_new: bool) -> None:
        if is_new:
            self.num_batches_received += 1
            self._last_batch_at = time.monotonic()
        source, batch = item if isinstance(item, tuple) and len(item) == 2 else (None, item)
        count = _batch_count(batch)
        self._learning_since = time.monotonic()
        start = time.perf_counter()
        stats = self.learn(batch)
        self.learn_timer.push(time.perf_counter() - start)
        self.learn_timer.push_units_processed(count)
        self._learning_since = None
        self.num_updates += 1
        self.weights_version += 1
        self.num_steps_trained += count
        self._update_times.append(time.monotonic())
        output = LearnerOutput(source, count, dict(stats or {}), self.weights_version)
        self._put_output(output)

    def _put_output(self, output: LearnerOutput) -> None:
        self._waiting_for_outqueue = True
        try:
            while not self._stopping.is_set():
                try:
                    self.outqueue.put(output, timeout=_STOP_POLL_S)
                    return
                except queue.Full:
                    continue
        finally:
            self._waiting_for_outqueue = False

    # -- the plan side -------------------------------------------------------------------------

    def check(self) -> None:
        """Raises a `FlowError` if the thread died, or a RuntimeError if it is not running.

        `Enqueue(learner.inqueue)` and `Dequeue(learner.outqueue)` call it on every try.
        """
        failure = self._failure
        if failure is not None:
            raise operator_error(
                failure,
                operator=f"LearnerThread {self.name!r} (policy_id={self.policy_id!r})",
                lineage=f"the learner thread {self.name!r} training policy {self.policy_id!r}",
                shard=None,
            )
        if not self.is_alive():
            state = "was stopped" if self._stopping.is_set() else "was never started"
            raise RuntimeError(
                f"The learner thread {self.name!r} (policy_id={self.policy_id!r}) {state}, so "
                "nothing consumes learner.inqueue; call learner.start() before running the plan "
                "and learner.stop() only after it."
            )

    def stop(self, timeout_s: float = 10.0) -> None:
        """Asks the thread to finish its current update and waits up to `timeout_s` for it."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout_s)

    def stats(self) -> dict[str, Any]:
        """Counters for a result dict or the plan graph (all plain numbers)."""
        now = time.monotonic()
        times = list(self._update_times)
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        return {
            "num_batches_received": self.num_batches_received,
            "num_updates": self.num_updates,
            "num_steps_trained": self.num_steps_trained,
            "weights_version": self.weights_version,
            "updates_per_s": (len(times) - 1) / span if span > 0 else 0.0,
            "learn_time_ms": 1000 * self.learn_timer.mean,
            "learn_throughput": self.learn_timer.mean_throughput,
            "inqueue_size": self.inqueue.qsize(),
            "inqueue_maxsize": self.inqueue.maxsize,
            "outqueue_size": self.outqueue.qsize(),
            "outqueue_maxsize": self.outqueue.maxsize,
            "seconds_since_last_batch": (
                now - self._last_batch_at if self._last_batch_at is not None else None
            ),
            "alive": self.is_alive(),
        }

    def _why_outqueue_stays_empty(self) -> str:
        if self._learning_since is not None:
            busy = time.monotonic() - self._learning_since
            return (
                f"The learner is not producing: one update (learn on policy {self.policy_id!r}) "
                f"has been running for {busy:.1f} s; it is slow or stuck."
            )
        if self.inqueue.empty() and not self.minibatch_buffer.holds_batches():
            last = self.stats()["seconds_since_last_batch"]
            when = "ever" if last is None else f"for {last:.1f} s"
            return (
                f"No batches are arriving from the producer: learner.inqueue has had no batch "
                f"{when} ({self.num_batches_received} received in all). Check that the flow "
                "feeding Enqueue(learner.inqueue) produces items (are the rollout workers "
                "sampling?) and that it runs in the same Concurrently as this Dequeue."
            )
        return (
            f"The learner is not producing: it holds batches (learner.inqueue "
            f"{self.inqueue.qsize()}/{self.inqueue.maxsize}) but finished no update."
        )

    def _why_inqueue_stays_full(self) -> str:
        if self._waiting_for_outqueue:
            return (
                f"The learner waits on a full learner.outqueue ({self.outqueue.qsize()}/"
                f"{self.outqueue.maxsize}): the plan does not read it; add "
                "Dequeue(learner.outqueue, check=learner.check) to the plan's Concurrently."
            )
        if self._learning_since is not None:
            busy = time.monotonic() - self._learning_since
            return (
                f"The learner is not taking batches: one update (learn on policy "
                f"{self.policy_id!r}) has been running for {busy:.1f} s; it is slow or stuck."
            )
        return "The learner is not taking batches from learner.inqueue."


class LockedLearnStep:
    """The learner thread's `learn`: one update of the learner policy, under a lock.

    The plan's operators that read or change the learner policy while the thread trains
    (weight reads for broadcasts, target-network and KL updates) take the same `lock`, so they
    never see half an update. `version` counts the updates done; `timestep` is the
    sampled-steps counter the plan last passed in, which drives learning-rate schedules.

    A `MultiAgentBatch` of several policies (independent policies) trains each of the
    learner worker's `policies_to_train` on its own rows, in one update, and returns
    {policy id: stats}; one of only "default_policy" (shared-policy mode) is that policy's
    `SampleBatch`. `trained_policies()` and `get_weights()` give the operators the policies an
    update changes.

    Args:
        workers: A WorkerSet, or anything with `local_worker().policy` (the learner policy).
        learn: `(batch) -> stats dict`, one update; default the learner policy's
            `learn_on_batch`. Ape-X passes a step that also computes the batch's TD errors.
            For several policies it gets a `MultiAgentBatch` of the trained policies' rows and
            returns {policy id: stats}.
        policy_ids: the policies this learner trains (one algorithm's policies in a run that
            composes several); default: the learner worker's `policies_to_train`.

    Examples:
        >>> class Policy:
        ...     def learn_on_batch(self, batch): return {"rows": len(batch)}
        ...     def on_global_var_update(self, global_vars): pass
        >>> class Workers:
        ...     def local_worker(self): return self
        ...     policy = Policy()
        >>> step = LockedLearnStep(Workers())
        >>> step([1, 2, 3]), step.version
        ({'rows': 3}, 1)
    """

    def __init__(self, workers: Any, learn: Callable[[Any], dict[str, Any]] | None = None,
                 *, policy_ids: list[str] | None = None) -> None:
        self.workers = workers
        self.learn = learn
        self.policy_ids = None if policy_ids is None else list(policy_ids)
        self.lock = threading.Lock()
        self.version = 0
        self.timestep = 0
        self._applied_timestep = -1

    @property
    def policy(self) -> Any:
        """The learner policy (the local worker's; with several policies use
        `trained_policies()`)."""
        return self.workers.local_worker().policy

    def trained_policies(self) -> dict[str, Any]:
        """Policy id -> policy, for the policies the learner trains: {"default_policy":
        policy} for a single-agent (or shared-policy) learner, else the local multi-agent
        worker's `policies_to_train`. Read or change them under `lock`."""
        local = self._multi_agent_learner()
        if local is None:
            return {DEFAULT_POLICY_ID: self.policy}
        return {pid: local.get_policy(pid) for pid in self._trained_ids(local)}

    def _trained_ids(self, local: Any) -> list[str]:
        return list(local.policies_to_train) if self.policy_ids is None else self.policy_ids

    def get_weights(self) -> Any:
        """The weights rollout workers take (`set_weights`): the learner policy's, or
        {policy id: weights} of the trained policies of a multi-agent learner. Call it under
        `lock`."""
        local = self._multi_agent_learner()
        if local is None:
            return self.policy.get_weights()
        return local.get_weights(self._trained_ids(local))

    def _multi_agent_learner(self) -> Any:
        """The local worker if it holds several policies (a multi-agent learner), else None."""
        local = self.workers.local_worker()
        if getattr(local, "multi_agent", None) is None or not hasattr(local, "get_policy"):
            return None
        return local

    def __call__(self, batch: Any) -> dict[str, Any]:
        with self.lock:
            per_policy = self._policy_batches(batch)
            if self.timestep != self._applied_timestep:
                for policy in self.trained_policies().values():
                    policy.on_global_var_update({"timestep": self.timestep})
                self._applied_timestep = self.timestep
            if per_policy is None:
                batch = _single_policy_rows(batch)
                stats = (self.learn(batch) if self.learn is not None
                         else self.policy.learn_on_batch(batch))
            else:
                local = self.workers.local_worker()
                if self.learn is not None:  # e.g. Ape-X's: each policy with its TD errors
                    stats = self.learn(MultiAgentBatch(
                        per_policy, sum(len(rows) for rows in per_policy.values())))
                else:
                    stats = {pid: local.get_policy(pid).learn_on_batch(rows)
                             for pid, rows in per_policy.items()}
            self.version += 1
        return stats

    def _policy_batches(self, batch: Any) -> dict[str, Any] | None:
        """Policy id -> rows to train for a batch of several policies (or one other than
        "default_policy"); None for a single-policy batch."""
        if not isinstance(batch, MultiAgentBatch) or set(batch.policy_batches) == {
                DEFAULT_POLICY_ID}:
            return None
        from flowrl.ops.train_ops import policy_batches_to_train

        return policy_batches_to_train(batch, self.workers.local_worker(), self.policy_ids)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        return ("LockedLearnStep()" if self.policy_ids is None
                else f"LockedLearnStep(policy_ids={self.policy_ids})")


_STARTED_LEARNERS: weakref.WeakSet[LearnerThread] = weakref.WeakSet()


def stop_learner_threads(workers: Any) -> None:
    """Stops every started learner thread built on `workers` (what `Trainer.stop` calls), so no
    learner goes on training after its trainer stopped."""
    for learner in list(_STARTED_LEARNERS):
        if learner._constructor_arguments[0] is workers:
            learner.stop()
            _STARTED_LEARNERS.discard(learner)


class _LearnerQueue(WatchedQueue):
    """One of a learner's queues; pickles as a reference to that learner's queue."""

    def __init__(self, learner: LearnerThread, attribute: str, maxsize: int,
                 **options: Any) -> None:
        super().__init__(maxsize, **options)
        self._learner = learner
        self._attribute = attribute

    def __reduce__(self) -> tuple:
        return (getattr, (self._learner, self._attribute))

    def graph_link(self, direction: str) -> GraphLink:
        """The learner thread as the plan graph draws it: `Enqueue(learner.inqueue)` sends it
        batches ("to"), `Dequeue(learner.outqueue)` reads its results ("from")."""
        learner = self._learner
        return GraphLink(learner, f"LearnerThread(policy {learner.policy_id})", "learner thread",
                         "from" if direction == "from" else "to",
                         "results" if direction == "from" else "batches")


def _unstarted_learner(cls: type, workers: Any, settings: dict[str, Any]) -> LearnerThread:
    return cls(workers, **settings)


def _learn_on_batch_of(workers: Any, policy_id: str) -> Callable[[Any], dict[str, Any]]:
    try:
        policy = workers.local_worker().policy
        learn = policy.learn_on_batch
    except AttributeError as error:
        raise TypeError(
            f"LearnerThread(workers, policy_id={policy_id!r}) trains "
            "workers.local_worker().policy.learn_on_batch, but "
            f"{workers!r} has no such policy ({error}); pass a WorkerSet, or learn=callable"
        ) from error
    return learn


def _single_policy_rows(batch: Any) -> Any:
    if isinstance(batch, MultiAgentBatch):
        return batch.policy_batches[DEFAULT_POLICY_ID]
    return batch


def stats_by_policy(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{policy id: stats} of a learn step's stats: {policy id: stats} as they are (a learner
    that trained several policies), flat stats as "default_policy"'s. The inner dicts are
    `stats`' own (not copies), so operators can add keys to them.

    Examples:
        >>> stats_by_policy({"loss": 1.0})
        {'default_policy': {'loss': 1.0}}
        >>> stats_by_policy({"p1": {"loss": 1.0}, "p2": {"loss": 2.0}})["p2"]
        {'loss': 2.0}
    """
    if not stats:
        return {}
    if all(isinstance(value, Mapping) for value in stats.values()):
        return dict(stats)
    return {DEFAULT_POLICY_ID: stats}


def _batch_count(batch: Any) -> int:
    if isinstance(batch, MultiAgentBatch):
        return batch.agent_steps()  # agent steps: what the policies train on
    count = getattr(batch, "count", None)
    if isinstance(count, int):
        return count
    try:
        return len(batch)
    except TypeError:
        return 0


class StartLearnerThread:
    """The check `Enqueue`/`Dequeue` run on every try: starts the learner thread on the plan's
    first step (so building or pickling a plan starts nothing), then `learner.check()`.

    Examples:
        >>> StartLearnerThread(learner)  # doctest: +SKIP
        StartLearnerThread(flowrl-learner-default_policy)
    """

    def __init__(self, learner: LearnerThread) -> None:
        self.learner = learner

    def __call__(self) -> None:
        learner = self.learner
        if learner.ident is None:  # never started
            learner.start()
        learner.check()

    def __repr__(self) -> str:
        return f"StartLearnerThread({self.learner.name})"
