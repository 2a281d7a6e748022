"""Per-item operator implementations: the ``impl`` of a transform node.

``Map`` and ``Filter`` are fused with their neighbours into one generated loop (see
``fused.py``); every other transform wraps its upstream iterator in its own generator and
passes ``NOT_READY`` through untouched.
"""

from __future__ import annotations

import collections
import random
import time
from collections.abc import Iterator
from typing import Any

from flowrl.iter import executor
from flowrl.iter.metrics import get_current_metrics
from flowrl.iter.not_ready import NOT_READY
from flowrl.iter.scheduling import IDLE_POLL_SECONDS, Build, Waits, raise_step_error


class Map:
    """``for_each(fn)`` with ``max_concurrency=1``: fused with neighbouring Map/Filter steps."""

    fusable = "map"

    def __init__(self, fn: Any) -> None:
        self.fn = fn


class Filter:
    """``filter(fn)``: fused with neighbouring Map/Filter steps."""

    fusable = "filter"

    def __init__(self, fn: Any) -> None:
        self.fn = fn


class Transform:
    """Base for non-fused per-item operators: ``wrap(upstream, op, build) -> iterator``."""

    fusable = None

    def wrap(self, upstream: Iterator[Any], op: Any, build: Build) -> Iterator[Any]:
        raise NotImplementedError


def is_transform(impl: Any) -> bool:
    """True for the impl of a per-item operator (one that has exactly one parent)."""
    return isinstance(impl, Map | Filter | Transform)


class Batch(Transform):
    def __init__(self, n: int) -> None:
        self.n = n

    def wrap(self, upstream, op, build):
        return _batch(upstream, self.n, build.context.op_stat(op.id))


def _batch(upstream, n, stat):
    buffer: list[Any] = []
    for item in upstream:
        if item is NOT_READY:
            yield item
            continue
        stat.items_in += 1
        buffer.append(item)
        if len(buffer) >= n:
            stat.items_out += 1
            yield buffer
            buffer = []
    if buffer:
        stat.items_out += 1
        yield buffer


class Flatten(Transform):
    def wrap(self, upstream, op, build):
        return _flatten(upstream, build.context.op_stat(op.id))


def _flatten(upstream, stat):
    for item in upstream:
        if item is NOT_READY:
            yield item
            continue
        stat.items_in += 1
        for sub_item in item:
            stat.items_out += 1
            yield sub_item


class Combine(Transform):
    """``combine(fn)``: ``fn(item)`` returns an iterable of outputs (flat-map)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def wrap(self, upstream, op, build):
        return _combine(upstream, self.fn, op, build, build.context.op_stat(op.id))


def _combine(upstream, fn, op, build, stat):
    clock = time.perf_counter
    for item in upstream:
        if item is NOT_READY:
            yield item
            continue
        stat.items_in += 1
        start = clock()
        try:
            outputs = list(fn(item))
        except Exception as exc:
            raise_step_error(op, build, exc)
        stat.time_s += clock() - start
        for output in outputs:
            stat.items_out += 1
            yield output


class Shuffle(Transform):
    def __init__(self, buffer_size: int, seed: int | None) -> None:
        self.buffer_size = buffer_size
        self.seed = seed

    def wrap(self, upstream, op, build):
        return _shuffle(
            upstream, self.buffer_size, random.Random(self.seed), build.context.op_stat(op.id)
        )


def _shuffle(upstream, buffer_size, rng, stat):
    buffer: list[Any] = []
    for item in upstream:
        if item is NOT_READY:
            yield item
            continue
        stat.items_in += 1
        buffer.append(item)
        while len(buffer) >= buffer_size:
            stat.items_out += 1
            yield buffer.pop(rng.randrange(len(buffer)))
    while buffer:
        stat.items_out += 1
        yield buffer.pop(rng.randrange(len(buffer)))


class ConcurrentMap(Transform):
    """``for_each(fn, max_concurrency=k>1)``: up to k calls in flight as Ray tasks, in order."""

    def __init__(self, fn: Any, max_concurrency: int) -> None:
        self.fn = fn
        self.max_concurrency = max_concurrency

    def wrap(self, upstream, op, build):
        return _concurrent_map(upstream, self, op, build, build.context.op_stat(op.id))


def _concurrent_map(upstream, impl, op, build, stat):
    submit = executor.remote_apply(impl.fn)
    pending: collections.deque[Any] = collections.deque()
    clock = time.perf_counter

    def result(future):
        start = clock()
        try:
            value = executor.get_task_result(future)
        except Exception as exc:
            raise_step_error(op, build, exc)
        stat.time_s += clock() - start
        stat.items_out += 1
        return value

    for item in upstream:
        if item is NOT_READY:
            yield item
            continue
        stat.items_in += 1
        pending.append(submit(item))
        if len(pending) >= impl.max_concurrency:
            yield result(pending.popleft())
    while pending:
        yield result(pending.popleft())


class NonBlockingStep:
    """Base for a ``for_each`` callable that sometimes cannot finish an item yet.

    Putting an item on a full queue is the typical case. Under a union (or ``Concurrently``)
    the engine then runs the other inputs and retries the same item later, so the plan never
    hangs on it; driven on its own, the plan blocks in ``wait`` between tries. Called directly
    (imperative code), the step blocks until it is done.

    Subclasses implement ``try_apply`` and usually ``wait``; ``extra_stats`` adds values (for
    example a queue's fill level) to the operator's entry in ``stats()`` and ``graph()``.

    Examples:
        >>> class EveryOtherTry(NonBlockingStep):
        ...     def __init__(self):
        ...         self.tries = 0
        ...     def try_apply(self, item):
        ...         self.tries += 1
        ...         return self.tries % 2 == 0, item * 10
        >>> EveryOtherTry()(4)
        40
    """

    def try_apply(self, item: Any) -> tuple[bool, Any]:
        """``(True, output)`` when the item is done, ``(False, None)`` to be retried later."""
        raise NotImplementedError(f"{type(self).__name__} must implement try_apply(item)")

    def wait(self, timeout_s: float) -> None:
        """Blocks until a retry may succeed or ``timeout_s`` passes (default: sleeps)."""
        time.sleep(timeout_s)

    def extra_stats(self) -> dict[str, Any]:
        """Values added to this operator's statistics (default: none)."""
        return {}

    def __call__(self, item: Any) -> Any:
        while True:
            done, output = self.try_apply(item)
            if done:
                return output
            self.wait(IDLE_POLL_SECONDS)


class NonBlockingMap(Transform):
    """``for_each(step)`` for a ``NonBlockingStep``: retries an item instead of blocking."""

    def __init__(self, step: NonBlockingStep) -> None:
        self.fn = step

    def wrap(self, upstream, op, build):
        return _nonblocking_map(upstream, self.fn, op, build, build.context.op_stat(op.id))

    def extra_stats(self) -> dict[str, Any]:
        return self.fn.extra_stats()


def _nonblocking_map(upstream, step, op, build, stat):
    clock = time.perf_counter
    for item in upstream:
        if item is NOT_READY:
            yield item
            continue
        stat.items_in += 1
        while True:
            start = clock()
            try:
                done, output = step.try_apply(item)
            except Exception as exc:
                raise_step_error(op, build, exc)
            stat.time_s += clock() - start
            if done:
                break
            if build.cooperative:
                Waits.waiters.append(step.wait)
                yield NOT_READY  # the enclosing union runs the other inputs, then retries
            else:
                step.wait(IDLE_POLL_SECONDS)
        stat.items_out += 1
        yield output


def zip_with_source_actor(item: Any) -> tuple[Any, Any]:
    """``(actor that produced item, item)``; the actor comes from the upstream gather."""
    actor = get_current_metrics().current_actor
    if actor is None:
        raise ValueError(
            "zip_with_source_actor() needs a source actor for each item, which only a gather "
            "(gather_async() or gather_sync()) upstream of it sets; add one before it."
        )
    return actor, item
