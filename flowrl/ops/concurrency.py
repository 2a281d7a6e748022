"""Running several flows in one plan: `Concurrently`, and queues between a plan and a thread.

`Concurrently` joins sub-flows (a store flow and a train flow, an enqueue flow and a dequeue
flow) into one plan node. `Enqueue` and `Dequeue` connect a plan to a Python thread (a learner
thread) through `queue.Queue`s without ever blocking the plan on a full or empty queue: the
engine runs the other flows meanwhile and blocks only when no flow can make progress.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any

from flowrl.iter import GraphLink, LocalIterator, NonBlockingStep, PollingSource, merge_iterators

DEFAULT_QUEUE_TIMEOUT_S = 300.0

# A plan that was not driven for this long (e.g. between two `train()` calls) restarts the
# clock of a full or empty queue, so time spent outside the plan never counts as starvation.
_UNDRIVEN_GAP_S = 1.0

_MODES = ("round_robin", "async")


def Concurrently(  # noqa: N802 - a combinator named like the operators users know (STYLE G3)
    iterators: list[LocalIterator[Any]],
    mode: str = "round_robin",
    output_indexes: list[int] | None = None,
    round_robin_weights: list[int | str] | None = None,
) -> LocalIterator[Any]:
    """Runs several flows in one plan, as one node joining them.

    Args:
        iterators: The flows (LocalIterators) to run together; they share one metrics context.
        mode: `"round_robin"` pulls items in a fixed rotation; `"async"` takes whatever flow
            has an item ready, blocking only when none has.
        output_indexes: Positions of the flows whose items leave the operator (default: all).
            The other flows still run, for their side effects (storing to a buffer, feeding a
            learner thread).
        round_robin_weights: Only with `"round_robin"`: items pulled from each flow per
            rotation, an int, or `"*"` for as many as are ready without blocking (not every
            weight may be `"*"`). Default: one each.

    Raises:
        ValueError: empty `iterators`, an unknown mode, weights with `"async"`, weights of the
            wrong length, all weights `"*"`, or an output index out of range.

    Examples:
        >>> store = LocalIterator(lambda: range(4), name="store")
        >>> train = LocalIterator(lambda: "ab", name="train")
        >>> Concurrently([store, train], mode="round_robin", output_indexes=[1],
        ...              round_robin_weights=[2, 1]).take(2)
        ['a', 'b']
    """
    if isinstance(iterators, LocalIterator) or not isinstance(iterators, list | tuple):
        raise TypeError(
            f"Concurrently() takes a list of LocalIterators, got {iterators!r}; "
            "e.g. Concurrently([store_flow, train_flow])"
        )
    if not iterators:
        raise ValueError(
            "Concurrently() needs at least one flow to run, got an empty list; pass e.g. "
            "Concurrently([store_flow, train_flow])"
        )
    if mode not in _MODES:
        raise ValueError(f"Concurrently() mode must be one of {_MODES}, got {mode=}")
    if mode == "async" and round_robin_weights is not None:
        raise ValueError(
            "Concurrently(mode='async') takes whatever flow is ready and has no rotation, so "
            f"round_robin_weights are not allowed (got {round_robin_weights=}); use "
            "mode='round_robin' for weights"
        )
    weights = list(round_robin_weights) if round_robin_weights is not None else None
    outputs = list(output_indexes) if output_indexes is not None else None
    settings = [f"mode={mode!r}"]
    if outputs is not None:
        settings.append(f"output_indexes={outputs}")
    if weights is not None:
        settings.append(f"round_robin_weights={weights}")
    inputs = ", ".join(repr(iterator) for iterator in iterators)
    return merge_iterators(
        list(iterators),
        deterministic=mode == "round_robin",
        round_robin_weights=weights,
        output_indexes=outputs,
        op="Concurrently",
        kind="concurrently",
        label=f"Concurrently({', '.join(settings)})",
        lineage=f"Concurrently([{inputs}], {', '.join(settings)})",
        params={"mode": mode, "output_indexes": outputs, "round_robin_weights": weights},
        method="Concurrently()",
    )


class WatchedQueue(queue.Queue):
    """A `queue.Queue` between a plan and a thread that knows that thread's health.

    `Enqueue`/`Dequeue` on it call `check()` on every try (it raises when the thread died),
    use its `timeout_s`, and, when it starves, add `diagnose()` (which side is stuck) to the
    error. Otherwise it is an ordinary queue.

    Examples:
        >>> watched = WatchedQueue(2, name="learner.inqueue", check=lambda: None)
        >>> watched.put(1); watched.get(), watched.maxsize
        (1, 2)
    """

    def __init__(
        self,
        maxsize: int = 0,
        *,
        name: str,
        check: Callable[[], None] | None = None,
        timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S,
        diagnose: Callable[[], str] | None = None,
    ) -> None:
        super().__init__(maxsize)
        self.name = name
        self.check = check
        self.timeout_s = timeout_s
        self.diagnose = diagnose

    def __repr__(self) -> str:
        return self.name


def _describe(target: queue.Queue) -> str:
    if isinstance(target, WatchedQueue):
        return target.name
    return f"{type(target).__name__}(maxsize={target.maxsize})"


def _fill(target: queue.Queue) -> dict[str, int]:
    return {"queue_size": target.qsize(), "queue_maxsize": target.maxsize}


def _queue_links(target: queue.Queue, direction: str) -> list[GraphLink]:
    """The side link to the thread at the other end of ``target``, if the queue names one
    (``target.graph_link(direction)``, as a learner thread's queues do)."""
    describe = getattr(target, "graph_link", None)
    link = describe(direction) if callable(describe) else None
    return [link] if link is not None else []


def _check_queue_args(operator: str, target: Any, timeout_s: float | None) -> None:
    if not isinstance(target, queue.Queue):
        raise TypeError(f"{operator} needs a queue.Queue, got {target!r}")
    if timeout_s is not None and (isinstance(timeout_s, bool) or not timeout_s > 0):
        raise ValueError(f"{operator} needs timeout_s > 0 seconds (or None), got {timeout_s=}")


class _StarvationClock:
    """How long a queue has stayed full (or empty) while the plan kept trying."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.last_try = 0.0

    def waited(self) -> float:
        """Seconds stuck so far, counting this try; restarts after a gap in the plan's tries."""
        now = time.monotonic()
        if self.since is None or now - self.last_try > _UNDRIVEN_GAP_S:
            self.since = now
        self.last_try = now
        return now - self.since

    def reset(self) -> None:
        self.since = None


class Enqueue(NonBlockingStep):
    """Puts each item on a queue (for a learner thread); apply it with `for_each`.

    The item passes through unchanged. A full queue never blocks the plan: under
    `Concurrently` the other flows run and the item is put later. If the queue stays full
    for `timeout_s` seconds of trying, the plan fails with a `FlowError` saying the consumer is
    not taking items. `check()` (default: the queue's own, for a `WatchedQueue`) runs on every
    try, so a dead consumer thread surfaces here.

    Args:
        target: The `queue.Queue` to put items on.
        timeout_s: Seconds the queue may stay full (default: the queue's `timeout_s`, else 300).
        check: Called on every try; raises to fail the plan (e.g. the learner thread died).

    Examples:
        >>> import queue
        >>> inbox = queue.Queue()
        >>> LocalIterator(lambda: [1, 2], name="batches").for_each(Enqueue(inbox)).take(2)
        [1, 2]
        >>> inbox.qsize()
        2
    """

    def __init__(
        self,
        target: queue.Queue,
        *,
        timeout_s: float | None = None,
        check: Callable[[], None] | None = None,
    ) -> None:
        _check_queue_args("Enqueue", target, timeout_s)
        self.queue = target
        self.timeout_s = timeout_s or getattr(target, "timeout_s", DEFAULT_QUEUE_TIMEOUT_S)
        self.check = check if check is not None else getattr(target, "check", None)
        self._full = _StarvationClock()

    def try_apply(self, item: Any) -> tuple[bool, Any]:
        if self.check is not None:
            self.check()
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            waited = self._full.waited()
            if waited > self.timeout_s:
                raise TimeoutError(self._starving_message(waited)) from None
            return False, None
        self._full.reset()
        return True, item

    def _starving_message(self, waited: float) -> str:
        diagnose = getattr(self.queue, "diagnose", None)
        hint = "Whatever reads this queue (a thread, or a Dequeue flow) is not taking items."
        if diagnose is not None:
            hint = diagnose()
        return (
            f"{_describe(self.queue)} stayed full ({self.queue.qsize()}/{self.queue.maxsize}) "
            f"for {waited:.1f} s (timeout_s={self.timeout_s}): the consumer side is starving "
            f"the producer. {hint}"
        )

    def wait(self, timeout_s: float) -> None:
        target = self.queue
        with target.not_full:  # the queue's own lock: full() would deadlock in here
            if 0 < target.maxsize <= target._qsize():
                target.not_full.wait(timeout_s)

    def extra_stats(self) -> dict[str, Any]:
        return _fill(self.queue)

    def graph_links(self) -> list[GraphLink]:
        """The thread this queue feeds (a learner thread), for the plan graph."""
        return _queue_links(self.queue, "to")

    def __repr__(self) -> str:
        return f"Enqueue({_describe(self.queue)})"


class _DequeueSource(PollingSource):
    def __init__(
        self, target: queue.Queue, check: Callable[[], None] | None, timeout_s: float
    ) -> None:
        self.queue = target
        self.check = check
        self.timeout_s = timeout_s
        self._empty = _StarvationClock()

    def poll(self) -> tuple[bool, Any]:
        if self.check is not None:
            self.check()
        try:
            item = self.queue.get_nowait()
        except queue.Empty:
            waited = self._empty.waited()
            if waited > self.timeout_s:
                raise TimeoutError(self._starving_message(waited)) from None
            return False, None
        self._empty.reset()
        return True, item

    def _starving_message(self, waited: float) -> str:
        diagnose = getattr(self.queue, "diagnose", None)
        hint = "Whatever writes to this queue (a thread, or an Enqueue flow) is not producing."
        if diagnose is not None:
            hint = diagnose()
        return (
            f"no item arrived on {_describe(self.queue)} for {waited:.1f} s "
            f"(timeout_s={self.timeout_s}): the producer side is not producing. {hint}"
        )

    def wait(self, timeout_s: float) -> None:
        target = self.queue
        with target.not_empty:  # the queue's own lock: empty() would deadlock in here
            if not target._qsize():
                target.not_empty.wait(timeout_s)

    def extra_stats(self) -> dict[str, Any]:
        return _fill(self.queue)

    def graph_links(self) -> list[GraphLink]:
        """The thread that fills this queue (a learner thread), for the plan graph."""
        return _queue_links(self.queue, "from")


def Dequeue(  # noqa: N802 - a source, named like the operators users know (STYLE G3)
    target: queue.Queue,
    check: Callable[[], None] | None = None,
    *,
    timeout_s: float | None = None,
    name: str | None = None,
) -> LocalIterator[Any]:
    """A source yielding the items put on a queue (e.g. a learner thread's outputs).

    An empty queue never blocks the plan: under `Concurrently` the other flows run meanwhile.
    `check()` (default: the queue's own, for a `WatchedQueue`) runs on every poll and may
    raise, e.g. when the learner thread died; that error fails the plan. If the queue stays
    empty for `timeout_s` seconds of polling, the plan fails with a `FlowError` saying the
    producer side is not producing.

    Args:
        target: The `queue.Queue` to read.
        check: Called on every poll; raises to fail the plan.
        timeout_s: Seconds the queue may stay empty (default: the queue's `timeout_s`, else
            300).
        name: The source's label (default `Dequeue(<queue>)`).

    Examples:
        >>> import queue
        >>> outbox = queue.Queue()
        >>> outbox.put("result")
        >>> Dequeue(outbox).take(1)
        ['result']
    """
    _check_queue_args("Dequeue", target, timeout_s)
    if check is not None and not callable(check):
        raise TypeError(f"Dequeue check must be a zero-argument callable, got {check!r}")
    effective_check = check if check is not None else getattr(target, "check", None)
    effective_timeout = timeout_s or getattr(target, "timeout_s", DEFAULT_QUEUE_TIMEOUT_S)
    source = _DequeueSource(target, effective_check, effective_timeout)
    return LocalIterator.from_polling_source(
        source,
        name=name or f"Dequeue({_describe(target)})",
        op="Dequeue",
        params={"timeout_s": effective_timeout},
    )
