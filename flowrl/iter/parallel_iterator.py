"""``ParallelIterator``: a lazy plan over shards (Ray actors, or plain objects in local mode)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from flowrl.iter import executor
from flowrl.iter import operators as ops
from flowrl.iter.errors import ActorDiedError, FlowError
from flowrl.iter.graph import Node, callable_label, to_networkx
from flowrl.iter.local_iterator import LocalIterator, _check_positive, collect_stats
from flowrl.iter.metrics import MetricsContext, SharedMetrics
from flowrl.iter.worker import END, ParallelIteratorWorker, ShardFailure, ShardOp

T = TypeVar("T")
U = TypeVar("U")

OnActorFailure = Callable[[int, BaseException], Any]


class ShardSpec:
    """One shard of a plan: where its items come from and the operators applied on it."""

    __slots__ = ("source", "source_node", "ops")

    def __init__(self, source: Any, source_node: Node, shard_ops: tuple[Node, ...] = ()) -> None:
        self.source = source
        self.source_node = source_node
        self.ops = shard_ops

    def then(self, node: Node) -> ShardSpec:
        return ShardSpec(self.source, self.source_node, (*self.ops, node))

    def __getstate__(self) -> tuple:
        return self.source, self.source_node, self.ops

    def __setstate__(self, state: tuple) -> None:
        self.source, self.source_node, self.ops = state


class GeneratorShard:
    """A shard served by a (pooled) ``ParallelIteratorWorker`` over ``item_generator``."""

    on_actor_failure = None
    pooled = True

    def __init__(self, item_generator: Any, repeat: bool) -> None:
        self.item_generator = item_generator
        self.repeat = repeat

    def start(self, started: dict[int, Any]) -> Any:
        return executor.acquire_shard_worker(
            ParallelIteratorWorker, self.item_generator, self.repeat
        )


class ActorShard:
    """A shard served by an existing ``ParallelIteratorWorker`` actor (``from_actors``)."""

    pooled = False

    def __init__(self, handle: Any, on_actor_failure: OnActorFailure | None) -> None:
        self.handle = handle
        self.on_actor_failure = on_actor_failure

    def start(self, started: dict[int, Any]) -> Any:
        return self.handle


class RepartitionGroup:
    """The old shards that a ``repartition`` reads from, started once per run."""

    def __init__(self, parents: tuple[ShardSpec, ...], num_partitions: int) -> None:
        self.parents = parents
        self.num_partitions = num_partitions


class RepartitionShard:
    on_actor_failure = None
    pooled = False

    def __init__(self, group: RepartitionGroup, index: int) -> None:
        self.group = group
        self.index = index

    def start(self, started: dict[int, Any]) -> Any:
        key = id(self.group)
        if key not in started:
            handles = [spec.source.start(started) for spec in self.group.parents]
            executor.get(
                [
                    _init_call(h, spec, i)
                    for i, (h, spec) in enumerate(zip(handles, self.group.parents, strict=True))
                ]
            )
            started[key] = handles
        reader = _SliceReader(started[key], self.index, self.group.num_partitions)
        return executor.create_actor(ParallelIteratorWorker, reader, False, num_cpus=0)


class _SliceReader:
    """Item factory of a repartitioned shard: round-robin slices of every old shard."""

    def __init__(self, parents: list[Any], index: int, step: int) -> None:
        self.parents, self.index, self.step = parents, index, step

    def __call__(self) -> Iterator[Any]:
        active = list(self.parents)
        while active:
            for handle in list(active):
                item = executor.get(executor.call(handle, "par_iter_slice", self.step, self.index))
                if item is END:
                    active.remove(handle)
                elif isinstance(item, ShardFailure):
                    raise item.error
                else:
                    yield item


def _init_call(handle: Any, spec: ShardSpec, index: int) -> Any:
    shard_ops = [ShardOp(n) for n in spec.ops]
    if executor.is_plain_object(handle):
        # Ray gives every shard its own copy of the operators (stateful callables keep state
        # per shard); a plain-object shard gets a deep copy for the same semantics.
        shard_ops = copy.deepcopy(shard_ops)
    return executor.call(handle, "par_iter_init", shard_ops, index, ShardOp(spec.source_node))


class _Run:
    __slots__ = ("index", "spec", "handle", "generation", "done", "released", "final_stats")

    def __init__(self, index: int, spec: ShardSpec, handle: Any) -> None:
        self.index, self.spec, self.handle = index, spec, handle
        self.generation = 0
        self.done = False
        self.released = False
        self.final_stats: dict[str, tuple[int, int, float]] | None = None


_RESTARTED = object()


class _Shards:
    """The running shards behind one gather: start, fetch, and recover from dead actors."""

    def __init__(self, specs: tuple[ShardSpec, ...], node: Node, context: MetricsContext) -> None:
        self.specs, self.node, self.context = specs, node, context
        self.runs: list[_Run] = []

    def start(self) -> list[_Run]:
        started: dict[int, Any] = {}
        self.runs = [_Run(i, spec, spec.source.start(started)) for i, spec in enumerate(self.specs)]

        self.context.shard_sets.append(self)
        for run in self.runs:
            try:
                executor.get(_init_call(run.handle, run.spec, run.index))
            except ActorDiedError as error:
                self.recover(run, error)
        return [run for run in self.runs if not run.done]

    def request(self, run: _Run) -> Any:
        return executor.call(run.handle, "par_iter_next")

    def resolve(self, run: _Run, future: Any, *, refetch: bool) -> Any:
        """The value of ``future`` (END when the shard ends); restarts or drops dead shards."""
        try:
            value = executor.get(future)
        except ActorDiedError as error:
            value = self.recover(run, error)
            if value is _RESTARTED and refetch:
                return self.resolve(run, self.request(run), refetch=True)
            return value
        if type(value) is ShardFailure:
            raise value.error
        return value

    def recover(self, run: _Run, error: ActorDiedError) -> Any:
        callback = run.spec.source.on_actor_failure
        if callback is None:
            raise FlowError(
                operator=self.node.label,
                lineage=self.node.lineage,
                shard=run.index,
                original_type=type(error).__name__,
                original_message=f"the actor serving shard {run.index} died: {error}",
                remote_traceback="",
            ) from error
        replacement = callback(run.index, error)
        run.generation += 1
        if replacement is None:
            run.done = True
            return END
        run.handle = replacement
        executor.get(_init_call(replacement, run.spec, run.index))
        self.context.counters["num_actor_restarts"] += 1
        return _RESTARTED

    def finish(self, run: _Run) -> None:
        """The shard ran out: keep its statistics and give a pooled actor back."""
        run.done = True
        if run.spec.source.pooled and not run.released:
            try:
                run.final_stats = executor.get(executor.call(run.handle, "par_iter_stats"))
            except ActorDiedError:
                run.final_stats = {}
            run.released = True
            executor.release_shard_worker(run.handle)

    def release_all(self) -> None:
        """The gather was closed: pooled actors of unfinished shards go back to the pool."""
        for run in self.runs:
            if run.spec.source.pooled and not run.released:
                run.released = True
                run.final_stats = {}
                executor.release_shard_worker(run.handle)

    def stats(self) -> dict[str, tuple[int, int, float]]:
        futures = [
            (run, executor.call(run.handle, "par_iter_stats"))
            for run in self.runs
            if not run.released and (not run.done or run.generation == 0)
        ]
        shards = [run.final_stats for run in self.runs if run.final_stats]
        for _, future in futures:
            try:
                shards.append(executor.get(future))
            except Exception:  # a dead shard has no statistics to report
                continue
        totals: dict[str, tuple[int, int, float]] = {}
        for shard in shards:
            for node_id, (a, b, c) in shard.items():
                x, y, z = totals.get(node_id, (0, 0, 0.0))
                totals[node_id] = (x + a, y + b, z + c)
        return totals


def shard_stats(context: MetricsContext) -> dict[str, tuple[int, int, float]]:
    """Per-node statistics summed over every live shard started under ``context``."""
    totals: dict[str, tuple[int, int, float]] = {}
    for shards in context.shard_sets:
        for node_id, (a, b, c) in shards.stats().items():
            x, y, z = totals.get(node_id, (0, 0, 0.0))
            totals[node_id] = (x + a, y + b, z + c)
    return totals


class Gather:
    """Driver-side source reading every shard: ``sync``/``batch`` rounds, or ``async``."""

    def __init__(self, shards: tuple[ShardSpec, ...], mode: str, num_async: int = 1) -> None:
        self.shards, self.mode, self.num_async = shards, mode, num_async

    def open(self, node: Node, build: ops.Build) -> Iterator[Any]:
        stat = build.context.op_stat(node.id)
        shards = _Shards(self.shards, node, build.context)
        if self.mode == "async":
            return _gather_async(shards, self.num_async, build, stat)
        return _gather_rounds(shards, self.mode == "batch", build, stat)


def _gather_rounds(shards: _Shards, as_batch: bool, build: ops.Build, stat: Any):
    import time

    clock = time.perf_counter
    try:
        runs = shards.start()
        yield from _rounds(shards, runs, as_batch, build, stat, clock)
    finally:
        shards.release_all()


def _rounds(shards, runs, as_batch, build, stat, clock):
    context = build.context
    while runs:
        start = clock()
        futures = [shards.request(run) for run in runs]
        values = [
            shards.resolve(run, future, refetch=True)
            for run, future in zip(runs, futures, strict=True)
        ]
        stat.time_s += clock() - start
        live = []
        for run, value in zip(runs, values, strict=True):
            if value is END:
                shards.finish(run)
            else:
                live.append((run, value))
        runs = [run for run, _ in live]
        stat.items_in += len(live)
        if not live:
            return
        if as_batch:
            stat.items_out += 1
            yield [value for _, value in live]
            continue
        for run, value in live:
            context.current_actor = run.handle
            stat.items_out += 1
            yield value


def _gather_async(shards: _Shards, num_async: int, build: ops.Build, stat: Any):
    import time

    clock = time.perf_counter
    pending: dict[Any, tuple[_Run, int]] = {}

    def submit(run: _Run) -> None:
        pending[shards.request(run)] = (run, run.generation)

    try:
        for run in shards.start():
            for _ in range(num_async):
                submit(run)
        yield from _async_loop(shards, pending, submit, num_async, build, stat, clock)
    finally:
        shards.release_all()


def _async_loop(shards, pending, submit, num_async, build, stat, clock):
    context = build.context
    while pending:
        start = clock()
        futures = list(pending)
        ready, _ = executor.wait(futures, num_returns=len(futures), timeout=0)
        if not ready:
            if build.nonblocking:
                stat.time_s += clock() - start
                ops.Waits.refs.extend(futures)
                yield ops.NOT_READY
                continue
            ready, _ = executor.wait(futures, num_returns=1, timeout=None)
        stat.time_s += clock() - start
        for future in ready:
            run, generation = pending.pop(future)
            if run.done or generation != run.generation:
                continue  # a request to an actor that was since replaced
            value = shards.resolve(run, future, refetch=False)
            if value is END:
                shards.finish(run)
                continue
            if value is _RESTARTED:
                for _ in range(num_async):
                    submit(run)
                continue
            context.current_actor = run.handle
            stat.items_in += 1
            stat.items_out += 1
            yield value
            submit(run)  # only now: fn(x_i) downstream ran before x_{i+1} is requested


class ParallelIterator(Generic[T]):
    """A lazy plan over shards; gather it into a ``LocalIterator`` to run it.

    Operators chained here run on every shard (in the shard's actor on Ray, in the driver in
    local mode); stateful callables keep their state per shard. Create one with ``from_items``,
    ``from_range``, ``from_iterators`` or ``from_actors``.

    Examples:
        >>> import flowrl, flowrl.iter
        >>> flowrl.init(local_mode=True)
        >>> it = flowrl.iter.from_range(4, num_shards=2).for_each(lambda x: x * 10)
        >>> it.gather_sync().take(4)
        [0, 20, 10, 30]
    """

    def __init__(self, node: Node, shards: tuple[ShardSpec, ...]) -> None:
        self._node = node
        self._shards = shards

    def _then(
        self, op: str, label: str, impl: Any, params: dict[str, Any] | None = None
    ) -> ParallelIterator[Any]:
        node = Node(
            op=op,
            label=label,
            kind="transform",
            parents=(self._node,),
            where="shard",
            shards=len(self._shards),
            params=params,
            impl=impl,
        )
        return ParallelIterator(node, tuple(spec.then(node) for spec in self._shards))

    def __repr__(self) -> str:
        return self._node.lineage

    def __iter__(self) -> Any:
        raise TypeError(
            f"You must gather {self!r} before iterating over it, e.g. with .gather_sync() "
            "(deterministic rounds) or .gather_async() (as items complete)."
        )

    # -- per-shard transforms ---------------------------------------------------------------

    def for_each(
        self, fn: Callable[[T], U], max_concurrency: int = 1, label: str | None = None
    ) -> ParallelIterator[U]:
        """Applies ``fn`` to every item on every shard (see ``LocalIterator.for_each``).

        Examples:
            >>> from_range(4).for_each(abs)
            from_range[4, shards=2].for_each(abs)
        """
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be an int >= 1, got {max_concurrency=}")
        impl = ops.Map(fn) if max_concurrency == 1 else ops.ConcurrentMap(fn, max_concurrency)
        return self._then(
            "for_each",
            label or f"for_each({callable_label(fn)})",
            impl,
            {"max_concurrency": max_concurrency},
        )

    def filter(self, fn: Callable[[T], bool], label: str | None = None) -> ParallelIterator[T]:
        """Keeps, on every shard, the items for which ``fn(item)`` is true.

        Examples:
            >>> from_range(6, num_shards=1).filter(lambda x: x % 2).gather_sync().take(5)
            [1, 3, 5]
        """
        return self._then("filter", label or f"filter({callable_label(fn)})", ops.Filter(fn))

    def batch(self, n: int) -> ParallelIterator[list[T]]:
        """Groups each shard's items into lists of ``n``.

        Examples:
            >>> from_range(4, num_shards=2).batch(2).gather_sync().take(2)
            [[0, 1], [2, 3]]
        """
        _check_positive("batch", n=n)
        return self._then("batch", f"batch({n})", ops.Batch(n), {"n": n})

    def flatten(self) -> ParallelIterator[Any]:
        """Flattens list items on every shard.

        Examples:
            >>> from_items([[1, 2]], num_shards=1).flatten().gather_sync().take(2)
            [1, 2]
        """
        return self._then("flatten", "flatten()", ops.Flatten())

    def combine(
        self, fn: Callable[[T], Iterable[U]], label: str | None = None
    ) -> ParallelIterator[U]:
        """Flat-map on every shard: ``fn(item)`` returns a list of outputs.

        Examples:
            >>> from_items([1, 2], num_shards=1).combine(lambda x: [x, x]).gather_sync().take(4)
            [1, 1, 2, 2]
        """
        return self._then("combine", label or f"combine({callable_label(fn)})", ops.Combine(fn))

    def local_shuffle(self, buffer_size: int, seed: int | None = None) -> ParallelIterator[T]:
        """Shuffles each shard's items through a buffer of ``buffer_size``.

        Examples:
            >>> sorted(from_range(4, num_shards=1).local_shuffle(3, seed=1).gather_sync().take(4))
            [0, 1, 2, 3]
        """
        _check_positive("local_shuffle", buffer_size=buffer_size)
        return self._then(
            "local_shuffle",
            f"local_shuffle({buffer_size}, seed={seed})",
            ops.Shuffle(buffer_size, seed),
            {"buffer_size": buffer_size, "seed": seed},
        )

    # -- reshaping ----------------------------------------------------------------------------

    def repartition(self, num_partitions: int) -> ParallelIterator[T]:
        """Redistributes items over ``num_partitions`` new shards, round-robin from each old one.

        Examples:
            >>> from_range(4, num_shards=1).repartition(2).gather_sync().take(4)
            [0, 1, 2, 3]
        """
        _check_positive("repartition", num_partitions=num_partitions)
        group = RepartitionGroup(self._shards, num_partitions)
        node = Node(
            op="repartition",
            label=f"repartition({num_partitions})",
            kind="transform",
            parents=(self._node,),
            where="shard",
            shards=num_partitions,
            params={"num_partitions": num_partitions},
        )
        shards = tuple(ShardSpec(RepartitionShard(group, i), node) for i in range(num_partitions))
        return ParallelIterator(node, shards)

    def select_shards(self, indices: list[int]) -> ParallelIterator[T]:
        """A plan over the given subset of shards (keep subsets disjoint across consumers).

        Examples:
            >>> from_range(4, num_shards=2).select_shards([1]).gather_sync().take(4)
            [2, 3]
        """
        indices = list(indices)
        for index in indices:
            if not 0 <= index < len(self._shards):
                raise ValueError(
                    f"shard index out of range: {index=}, but the iterator has "
                    f"{len(self._shards)} shards (0..{len(self._shards) - 1})"
                )
        node = Node(
            op="select_shards",
            label=f"select_shards({indices})",
            kind="transform",
            parents=(self._node,),
            where="shard",
            shards=len(indices),
            params={"indices": indices},
        )
        return ParallelIterator(node, tuple(self._shards[i] for i in indices))

    def union(self, *others: ParallelIterator[Any]) -> ParallelIterator[Any]:
        """The shards of this iterator followed by those of ``others`` (no data moves).

        Examples:
            >>> from_range(2, num_shards=1).union(from_items(["a"], num_shards=1)).num_shards()
            2
        """
        for other in others:
            if not isinstance(other, ParallelIterator):
                raise TypeError(f"ParallelIterator.union() takes ParallelIterators, got {other!r}")
        shards = self._shards + tuple(s for other in others for s in other._shards)
        node = Node(
            op="union",
            label="union()",
            kind="union",
            parents=(self._node, *(other._node for other in others)),
            where="shard",
            shards=len(shards),
            lineage=f"{self!r}.union({', '.join(repr(other) for other in others)})",
        )
        return ParallelIterator(node, shards)

    def num_shards(self) -> int:
        """How many shards the plan runs on.

        Examples:
            >>> from_range(8, num_shards=4).num_shards()
            4
        """
        return len(self._shards)

    # -- gathering into the driver --------------------------------------------------------------

    def _gather(
        self,
        op: str,
        label: str,
        impl: Gather,
        params: dict[str, Any] | None = None,
        shards: tuple[ShardSpec, ...] | None = None,
    ) -> LocalIterator[Any]:
        node = Node(
            op=op,
            label=label,
            kind="gather",
            parents=(self._node,),
            where="driver",
            shards=len(shards if shards is not None else self._shards),
            params=params,
            impl=impl,
        )
        return LocalIterator._from_node(node, SharedMetrics())

    def gather_sync(self) -> LocalIterator[T]:
        """Barrier rounds: each round yields one item per shard, in shard order.

        A shard that runs out is dropped; the others go on.

        Examples:
            >>> from_range(4, num_shards=2).gather_sync().take(4)
            [0, 2, 1, 3]
        """
        return self._gather("gather_sync", "gather_sync()", Gather(self._shards, "sync"))

    def batch_across_shards(self) -> LocalIterator[list[T]]:
        """Barrier rounds yielded as lists: one item per (remaining) shard each.

        Examples:
            >>> from_range(4, num_shards=2).batch_across_shards().take(2)
            [[0, 2], [1, 3]]
        """
        return self._gather(
            "batch_across_shards", "batch_across_shards()", Gather(self._shards, "batch")
        )

    def gather_async(self, num_async: int = 1) -> LocalIterator[T]:
        """Items in completion order, with ``num_async`` requests in flight per shard.

        Waiting is one batched ``wait`` over all pending requests. With ``num_async=1`` the
        next item of a shard is requested only after the previous one went through the
        downstream operators. Sets ``current_actor`` for ``zip_with_source_actor``.

        Examples:
            >>> sorted(from_range(4, num_shards=2).gather_async(num_async=2).take(4))
            [0, 1, 2, 3]
        """
        _check_positive("gather_async", num_async=num_async)
        return self._gather(
            "gather_async",
            f"gather_async(num_async={num_async})",
            Gather(self._shards, "async", num_async),
            {"num_async": num_async},
        )

    def shards(self) -> list[LocalIterator[T]]:
        """One driver-side iterator per shard (each shard must be read by one consumer).

        Examples:
            >>> [s.take(2) for s in from_range(4, num_shards=2).shards()]
            [[0, 1], [2, 3]]
        """
        return [self.get_shard(i) for i in range(len(self._shards))]

    def get_shard(self, index: int) -> LocalIterator[T]:
        """A driver-side iterator over shard ``index`` only.

        Examples:
            >>> from_range(4, num_shards=2).get_shard(1).take(5)
            [2, 3]
        """
        if not 0 <= index < len(self._shards):
            raise ValueError(
                f"shard index out of range: {index=}, but the iterator has "
                f"{len(self._shards)} shards"
            )
        shard = (self._shards[index],)
        return self._gather(
            "get_shard", f"get_shard({index})", Gather(shard, "sync"), {"index": index}, shard
        )

    def take(self, n: int) -> list[T]:
        """The first ``n`` items of ``gather_sync()``.

        Examples:
            >>> from_items([1, 2, 3], num_shards=1).take(2)
            [1, 2]
        """
        return self.gather_sync().take(n)

    def show(self, n: int = 20) -> None:
        """Prints the first ``n`` items of ``gather_sync()``.

        Examples:
            >>> from_items(["a"], num_shards=1).show()
            a
        """
        self.gather_sync().show(n)

    def graph(self) -> Any:
        """The plan as a ``networkx.DiGraph`` (see ``LocalIterator.graph``).

        Examples:
            >>> sorted(d["kind"] for _, d in from_range(2).for_each(abs).graph().nodes(data=True))
            ['source', 'transform']
        """
        return to_networkx(self._node, self.stats())

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-operator statistics; all zero until the plan is gathered and run."""
        return collect_stats(self._node, None)


# -- sources ------------------------------------------------------------------------------------


def _source(op: str, label: str, sources: list[Any], params: dict[str, Any]) -> ParallelIterator:
    node = Node(
        op=op,
        label=label,
        kind="source",
        parents=(),
        where="shard",
        shards=len(sources),
        params=params,
    )
    return ParallelIterator(node, tuple(ShardSpec(source, node) for source in sources))


def from_items(items: list[T], num_shards: int = 2, repeat: bool = False) -> ParallelIterator[T]:
    """Splits ``items`` round-robin over ``num_shards`` shards.

    Examples:
        >>> import flowrl; flowrl.init(local_mode=True)
        >>> from_items([1, 2, 3, 4], num_shards=2).gather_sync().take(4)
        [1, 2, 3, 4]
    """
    _check_positive("from_items", num_shards=num_shards)
    items = list(items)
    sources = [GeneratorShard(items[i::num_shards], repeat) for i in range(num_shards)]
    return _source(
        "from_items",
        f"from_items[{len(items)}, shards={num_shards}{', repeat=True' if repeat else ''}]",
        sources,
        {"num_items": len(items), "repeat": repeat},
    )


def from_range(n: int, num_shards: int = 2, repeat: bool = False) -> ParallelIterator[int]:
    """Splits ``range(n)`` into ``num_shards`` contiguous chunks, one per shard.

    Examples:
        >>> from_range(4, num_shards=2)
        from_range[4, shards=2]
    """
    _check_positive("from_range", num_shards=num_shards)
    sources = []
    for i in range(num_shards):
        start, end = i * n // num_shards, (i + 1) * n // num_shards
        sources.append(GeneratorShard(range(start, end), repeat))
    return _source(
        "from_range",
        f"from_range[{n}, shards={num_shards}{', repeat=True' if repeat else ''}]",
        sources,
        {"n": n, "repeat": repeat},
    )


def from_iterators(
    generators_or_factories: list[Any], repeat: bool = False, name: str | None = None
) -> ParallelIterator[Any]:
    """One shard per iterable, or per zero-argument factory (needed for generators on Ray).

    Examples:
        >>> from_iterators([lambda: iter("ab"), [1]]).gather_sync().take(3)
        ['a', 1, 'b']
    """
    sources = [GeneratorShard(g, repeat) for g in generators_or_factories]
    label = name or f"from_iterators[shards={len(sources)}]"
    return _source("from_iterators", label, sources, {"repeat": repeat})


def from_actors(
    actors: list[Any], name: str | None = None, on_actor_failure: OnActorFailure | None = None
) -> ParallelIterator[Any]:
    """One shard per existing ``ParallelIteratorWorker`` actor (or plain object in local mode).

    Args:
        actors: Handles from ``executor.create_actor`` of ParallelIteratorWorker subclasses.
        name: The source's label (default ``from_actors[shards=N]``).
        on_actor_failure: ``(shard_index, error) -> new_handle | None``, called when a shard's
            actor dies during a gather: a new handle continues the shard (its operators are
            rebuilt on it; counter ``num_actor_restarts``), None drops it. Without it a dead
            actor raises FlowError naming the shard.

    Examples:
        >>> workers = [ParallelIteratorWorker([1, 2], repeat=False)]
        >>> from_actors(workers, name="Workers").gather_sync().take(2)
        [1, 2]
    """
    sources = [ActorShard(actor, on_actor_failure) for actor in actors]
    return _source("from_actors", name or f"from_actors[shards={len(sources)}]", sources, {})
