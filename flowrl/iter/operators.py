"""How operators run: generator implementations, fused per-item chains, union and duplicate.

A plan is built into nested generators on its first ``next()``. Consecutive ``for_each`` and
``filter`` steps are fused into one generated loop (one generator frame for the whole chain),
which is what keeps the engine's per-item cost below that of hand-chained generators.

``NOT_READY`` is the internal "nothing available now" value used for non-blocking scheduling
(``union(deterministic=False)``, ``gather_async`` under a union, ``duplicate`` backpressure,
filtered-out items under a union). It only flows between engine generators: user functions
never receive it and the iterator a user drives never yields it.
"""

from __future__ import annotations

import collections
import random
import time
from collections.abc import Iterator
from typing import Any

from flowrl.iter import executor
from flowrl.iter.errors import operator_error
from flowrl.iter.metrics import MetricsContext, current, get_current_metrics, get_ident


class _NotReady:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_READY"

    def __reduce__(self) -> str:
        return "NOT_READY"


NOT_READY = _NotReady()


class Waits:
    """What non-ready generators are waiting on, so a union can block instead of spinning."""

    refs: list[Any] = []
    progress = 0


class Build:
    """Settings of one build of a (sub)plan.

    Attributes:
        context: The metrics context operators see.
        shard: The shard index when building on a shard, None on the driver.
        cooperative: Filters and duplicates may yield NOT_READY instead of looping/failing.
        nonblocking: Gathers yield NOT_READY instead of blocking.
    """

    __slots__ = ("context", "shard", "cooperative", "nonblocking")

    def __init__(
        self,
        context: MetricsContext,
        shard: int | None = None,
        *,
        cooperative: bool = False,
        nonblocking: bool = False,
    ) -> None:
        self.context = context
        self.shard = shard
        self.cooperative = cooperative
        self.nonblocking = nonblocking

    def derive(self, *, cooperative: bool, nonblocking: bool) -> Build:
        return Build(self.context, self.shard, cooperative=cooperative, nonblocking=nonblocking)


# ---------------------------------------------------------------------------------------------
# Operator implementations (the `impl` of a node). Per-item ones transform an upstream iterator.


class Map:
    """``for_each(fn)`` with ``max_concurrency=1``: fused with neighbouring Map/Filter steps."""

    fusable = "map"

    def __init__(self, fn: Any) -> None:
        self.fn = fn


class Filter:
    fusable = "filter"

    def __init__(self, fn: Any) -> None:
        self.fn = fn


class Transform:
    """Base for non-fused per-item operators: ``wrap(upstream, op, build) -> iterator``."""

    fusable = None

    def wrap(self, upstream: Iterator[Any], op: Any, build: Build) -> Iterator[Any]:
        raise NotImplementedError


def _error(op: Any, build: Build, exc: BaseException) -> BaseException:
    return operator_error(exc, operator=op.label, lineage=op.lineage, shard=build.shard)


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
            raise _error(op, build, exc) from exc
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
            raise _error(op, build, exc) from exc
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


def zip_with_source_actor(item: Any) -> tuple[Any, Any]:
    """``(actor that produced item, item)``; the actor comes from the upstream gather."""
    actor = get_current_metrics().current_actor
    if actor is None:
        raise ValueError(
            "zip_with_source_actor() needs a source actor for each item, which only a gather "
            "(gather_async() or gather_sync()) upstream of it sets; add one before it."
        )
    return actor, item


# ---------------------------------------------------------------------------------------------
# Fused chains of Map/Filter steps, compiled once per (step kinds, cooperative) shape.

_SAMPLE_AFTER = 64  # time every item until then; afterwards 1 in 16 if the chain is cheap
_CHEAP_SECONDS = 20e-6
_fused_cache: dict[tuple[tuple[str, ...], bool], Any] = {}


def _fused_code(kinds: tuple[str, ...], cooperative: bool) -> str:
    """Source of one generator running a chain of Map/Filter steps.

    Only filters count (``o{i}``: items kept); a step's items in are the items out of the
    nearest filter before it (or ``seen``, the items pulled from upstream). Timing is sampled.
    """
    steps = range(len(kinds))
    lines = ["def fused(upstream, fns, stats, wrap, NR, pc, source_wrap, source_stat):"]
    if kinds:
        lines.append("    " + ", ".join(f"f{i}" for i in steps) + ", = fns")
    for i in steps:
        lines.append(f"    o{i} = c{i} = 0; t{i} = 0.0")
    lines += ["    seen = 0; mask = 0", "    try:", "        for x in upstream:"]
    if cooperative:
        lines += ["            if x is NR:", "                yield x", "                continue"]
    lines += ["            seen += 1", "            if seen & mask:"]
    lines += _fused_body(kinds, cooperative, timed=False)
    lines += ["            else:", "                tp = pc()"]
    total = " + ".join(f"t{i}" for i in steps) or "0.0"
    lines += [
        f"                if seen == {_SAMPLE_AFTER + 1}:",
        f"                    mask = 15 if ({total}) < {_SAMPLE_AFTER * _CHEAP_SECONDS} else 0",
    ]
    lines += _fused_body(kinds, cooperative, timed=True)
    lines += [
        "    except Exception as e:",
        "        if source_wrap is None or getattr(e, '_flowrl_step', False):",
        "            raise",
        "        raise source_wrap(e)",
        "    finally:",
        "        if source_stat is not None:",
        "            source_stat.items_out = seen",
    ]
    entering = "seen"
    for i, kind in enumerate(kinds):
        out = f"o{i}" if kind == "filter" else entering
        lines.append(
            f"        s = stats[{i}]; s.items_in = {entering}; s.items_out = {out}; "
            f"s.time_s = t{i} / c{i} * {entering} if c{i} else 0.0"
        )
        entering = out
    return "\n".join(lines)


def _fused_body(kinds: tuple[str, ...], cooperative: bool, *, timed: bool) -> list[str]:
    pad = "                "
    lines: list[str] = []
    for i, kind in enumerate(kinds):
        target = "x" if kind == "map" else "keep"
        lines += [
            f"{pad}try:",
            f"{pad}    {target} = f{i}(x)",
            f"{pad}except Exception as e:",
            f"{pad}    raise wrap({i}, e)",
        ]
        if timed:
            lines.append(f"{pad}tn = pc(); t{i} += tn - tp; c{i} += 1; tp = tn")
        if kind == "filter":
            lines.append(f"{pad}if not keep:")
            if cooperative:
                lines += [f"{pad}    Waits.progress += 1", f"{pad}    yield NR"]
            lines += [f"{pad}    continue", f"{pad}o{i} += 1"]
    lines.append(f"{pad}yield x")
    return lines


def _fused_function(kinds: tuple[str, ...], cooperative: bool) -> Any:
    key = (kinds, cooperative)
    function = _fused_cache.get(key)
    if function is None:
        namespace: dict[str, Any] = {"Waits": Waits}
        exec(compile(_fused_code(kinds, cooperative), "<flowrl fused chain>", "exec"), namespace)
        function = _fused_cache[key] = namespace["fused"]
    return function


def _fused_probe(generator: Any, index: int, kinds: tuple[str, ...]) -> Any:
    def probe() -> tuple[int, int, float] | None:
        frame = generator.gi_frame
        if frame is None:
            return None
        values = frame.f_locals
        entering = values.get("seen", 0)
        for i in range(index):
            if kinds[i] == "filter":
                entering = values.get(f"o{i}", 0)
        items_out = values.get(f"o{index}", 0) if kinds[index] == "filter" else entering
        sampled = values.get(f"c{index}", 0)
        seconds = values.get(f"t{index}", 0.0) / sampled * entering if sampled else 0.0
        return entering, items_out, seconds

    return probe


def _seen_probe(generator: Any) -> Any:
    def probe() -> tuple[int, int, float] | None:
        frame = generator.gi_frame
        return None if frame is None else (0, frame.f_locals.get("seen", 0), 0.0)

    return probe


def _fuse(
    upstream: Iterator[Any], ops: list[Any], build: Build, source: Any = None
) -> Iterator[Any]:
    kinds = tuple(op.impl.fusable for op in ops)
    fns = [op.impl.fn for op in ops]
    stats = [build.context.op_stat(op.id) for op in ops]

    def wrap(index: int, exc: BaseException) -> BaseException:
        error = _error(ops[index], build, exc)
        error._flowrl_step = True  # raised by a step: the source must not re-wrap it
        return error

    source_wrap, source_stat = source if source is not None else (None, None)
    generator = _fused_function(kinds, build.cooperative)(
        upstream, fns, stats, wrap, NOT_READY, time.perf_counter, source_wrap, source_stat
    )
    for index, stat in enumerate(stats):
        stat.probe = _fused_probe(generator, index, kinds)
    if source_stat is not None:
        source_stat.probe = _seen_probe(generator)
    return generator


def apply_transforms(
    upstream: Iterator[Any], ops: list[Any], build: Build, source: Any = None
) -> Iterator[Any]:
    """Applies per-item operators (records with ``id``, ``label``, ``lineage``, ``impl``).

    ``source`` is ``(wrap_error, stat)`` when ``upstream`` is a raw user iterator: the first
    fused chain then counts its items and attributes its errors (saving a generator layer).
    """
    pending: list[Any] = []
    for op in ops:
        if op.impl.fusable is not None:
            pending.append(op)
            continue
        upstream, source = _fuse(upstream, pending, build, source), None
        pending = []
        upstream = op.impl.wrap(upstream, op, build)
    if pending or source is not None:
        upstream = _fuse(upstream, pending, build, source)
    return upstream


def is_transform(impl: Any) -> bool:
    return isinstance(impl, Map | Filter | Transform)


def open_node(node: Any, build: Build) -> Iterator[Any]:
    """Builds the generator chain that produces ``node``'s items."""
    chain = []
    while is_transform(node.impl):
        chain.append(node)
        node = node.parents[0]
    chain.reverse()
    if isinstance(node.impl, IterSource):
        return node.impl.open_raw(node, chain, build)
    return apply_transforms(node.impl.open(node, build), chain, build)


# ---------------------------------------------------------------------------------------------
# Driver-side sources: a user iterable, a union, one child of a duplicate.


class IterSource:
    """A driver-side source from a zero-argument factory returning an iterable."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def open_raw(self, node: Any, chain: list[Any], build: Build) -> Iterator[Any]:
        """The factory's iterator under ``chain``; the first fused chain counts its items."""
        stat = build.context.op_stat(node.id)

        def wrap(exc: BaseException) -> BaseException:
            return _error(node, build, exc)

        try:  # builds run on the plan's first next(), so this is not at construction time
            iterator = iter(self.factory())
        except Exception as exc:
            raise wrap(exc) from exc
        return apply_transforms(iterator, chain, build, (wrap, stat))


class Union:
    """Merges driver-side iterators; see ``LocalIterator.union``."""

    def __init__(
        self, children: tuple[Any, ...], deterministic: bool, weights: list[Any] | None
    ) -> None:
        self.children = children
        self.deterministic = deterministic
        self.weights = weights or [1] * len(children)

    def open(self, node: Any, build: Build) -> Iterator[Any]:
        iterators = []
        for child, weight in zip(self.children, self.weights, strict=True):
            nonblocking = (not self.deterministic) or weight == "*"
            child_build = build.derive(cooperative=True, nonblocking=nonblocking)
            iterators.append(open_node(child._node, child_build))
        return _union(iterators, self, build, build.context.op_stat(node.id))


def _union(iterators, impl, build, stat):
    weights = list(impl.weights)
    active = list(range(len(iterators)))
    clock = time.perf_counter
    while active:
        found, mark, progress = False, len(Waits.refs), Waits.progress
        for index in list(active):
            weight, pulls = weights[index], 0
            while weight == "*" or pulls < weight:
                start = clock()
                try:
                    item = next(iterators[index])
                except StopIteration:
                    active.remove(index)
                    break
                finally:
                    stat.time_s += clock() - start
                if item is NOT_READY:
                    if impl.deterministic and weight != "*":
                        pulls += 1  # a not-ready item (e.g. filtered out) still takes a turn
                        continue
                    break
                pulls += 1
                found = True
                stat.items_in += 1
                stat.items_out += 1
                yield item
        if found or not active:
            continue
        if build.cooperative:
            yield NOT_READY  # the enclosing scheduler decides how to wait
            continue
        refs = list(dict.fromkeys(Waits.refs[mark:]))
        del Waits.refs[mark:]
        if Waits.progress == progress:
            if refs:
                executor.wait(refs, num_returns=1, timeout=None)
            else:
                time.sleep(0.001)


class DuplicateState:
    """The upstream shared by the children of ``duplicate(n)`` and their buffers."""

    def __init__(self, parent: Any, n: int, max_ahead: int) -> None:
        self.parent = parent
        self.n = n
        self.max_ahead = max_ahead
        self.upstream: Iterator[Any] | None = None
        self.queues: list[collections.deque[Any]] = []
        self.closed: set[int] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "parent": self.parent,
            "n": self.n,
            "max_ahead": self.max_ahead,
            "upstream": None,
            "queues": [],
            "closed": set(),
        }


class DuplicateChild:
    def __init__(self, state: DuplicateState, index: int) -> None:
        self.state = state
        self.index = index

    def open(self, node: Any, build: Build) -> Iterator[Any]:
        state = self.state
        if state.upstream is None:
            state.upstream = open_node(state.parent, build)
            state.queues = [collections.deque() for _ in range(state.n)]
        return _duplicate_child(state, self.index, node, build, build.context.op_stat(node.id))


def _duplicate_child(state, index, node, build, stat):
    try:
        yield from _duplicate_items(state, index, node, build, stat)
    finally:  # a finished or failed child no longer holds its siblings back
        state.closed.add(index)
        state.queues[index].clear()


def _duplicate_items(state, index, node, build, stat):
    queue = state.queues[index]
    while True:
        others = [q for i, q in enumerate(state.queues) if i != index and i not in state.closed]
        if queue:
            stat.items_out += 1
            yield queue.popleft()
            continue
        lagging = max(others, key=len, default=None)
        if lagging is not None and len(lagging) >= state.max_ahead:
            if build.cooperative:
                Waits.progress += 1
                yield NOT_READY
                continue
            raise RuntimeError(
                f"{node.label} would run more than max_ahead={state.max_ahead} items ahead of "
                "a sibling that is not being consumed; consume the duplicates together (for "
                "example with union(...)) or raise duplicate(..., max_ahead=...)."
            )
        try:
            item = next(state.upstream)
        except StopIteration:
            return
        if item is NOT_READY:
            yield item
            continue
        stat.items_in += 1
        for other in others:
            other.append(item)
        stat.items_out += 1
        yield item


def drive(iterator: Iterator[Any], context: MetricsContext) -> Iterator[Any]:
    """Runs ``iterator`` with ``context`` as the current metrics while it computes each item."""
    now = current
    mine = (context, get_ident())
    saved = now.state
    now.state = mine
    inside = True
    try:
        for item in iterator:
            now.state = saved
            inside = False
            yield item
            saved = now.state
            now.state = mine
            inside = True
    finally:
        if inside:
            now.state = saved
