"""``ParallelIterator``: a lazy plan over shards (Ray actors, or plain objects in local mode)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from flowrl.iter.graph import GraphLink, Node, callable_label
from flowrl.iter.groups import plan_graph
from flowrl.iter.local_iterator import LocalIterator, _check_positive, collect_stats
from flowrl.iter.metrics import SharedMetrics
from flowrl.iter.shards import (
    ActorShard,
    Gather,
    GeneratorShard,
    OnActorFailure,
    RepartitionGroup,
    RepartitionShard,
    ShardSpec,
)
from flowrl.iter.transforms import (
    Batch,
    Combine,
    ConcurrentMap,
    Filter,
    Flatten,
    Map,
    Shuffle,
)

T = TypeVar("T")
U = TypeVar("U")


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
        impl = Map(fn) if max_concurrency == 1 else ConcurrentMap(fn, max_concurrency)
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
        return self._then("filter", label or f"filter({callable_label(fn)})", Filter(fn))

    def batch(self, n: int) -> ParallelIterator[list[T]]:
        """Groups each shard's items into lists of ``n``.

        Examples:
            >>> from_range(4, num_shards=2).batch(2).gather_sync().take(2)
            [[0, 1], [2, 3]]
        """
        _check_positive("batch", n=n)
        return self._then("batch", f"batch({n})", Batch(n), {"n": n})

    def flatten(self) -> ParallelIterator[Any]:
        """Flattens list items on every shard.

        Examples:
            >>> from_items([[1, 2]], num_shards=1).flatten().gather_sync().take(2)
            [1, 2]
        """
        return self._then("flatten", "flatten()", Flatten())

    def combine(
        self, fn: Callable[[T], Iterable[U]], label: str | None = None
    ) -> ParallelIterator[U]:
        """Flat-map on every shard: ``fn(item)`` returns a list of outputs.

        Examples:
            >>> from_items([1, 2], num_shards=1).combine(lambda x: [x, x]).gather_sync().take(4)
            [1, 1, 2, 2]
        """
        return self._then("combine", label or f"combine({callable_label(fn)})", Combine(fn))

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
            Shuffle(buffer_size, seed),
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

    def graph(self, *, internals: bool = False) -> Any:
        """The plan as a ``networkx.DiGraph`` (see ``LocalIterator.graph``).

        Examples:
            >>> sorted(d["kind"] for _, d in from_range(2).for_each(abs).graph().nodes(data=True))
            ['source', 'transform']
        """
        return plan_graph(self._node, self.stats(), internals=internals)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-operator statistics; all zero until the plan is gathered and run."""
        return collect_stats(self._node, None)


# -- sources ------------------------------------------------------------------------------------


def _source(op: str, label: str, sources: list[Any], params: dict[str, Any],
            links: tuple[GraphLink, ...] = ()) -> ParallelIterator:
    node = Node(
        op=op,
        label=label,
        kind="source",
        parents=(),
        where="shard",
        shards=len(sources),
        params=params,
        links=links,
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
    actors: list[Any], name: str | None = None, on_actor_failure: OnActorFailure | None = None,
    *, graph_links: list[GraphLink] | tuple[GraphLink, ...] = (),
    reply_timeout_s: float | None = None,
) -> ParallelIterator[Any]:
    """One shard per existing ``ParallelIteratorWorker`` actor (or plain object in local mode).

    Args:
        actors: Handles from ``executor.create_actor`` of ParallelIteratorWorker subclasses.
        name: The source's label (default ``from_actors[shards=N]``).
        on_actor_failure: ``(shard_index, error) -> new_handle | None``, called when a shard's
            actor dies during a gather: a new handle continues the shard (its operators are
            rebuilt on it; counter ``num_actor_restarts``), None drops it. Without it a dead
            actor raises FlowError naming the shard.
        graph_links: Side links of the source in the plan graph (drawing only), e.g.
            ``GraphLink(workers, "RolloutWorkers", "rollout workers", "is")``: the source
            stands for these actors, so links other operators declare to them end here.
        reply_timeout_s: Seconds a gather waits for a shard's next item before it treats the
            actor as dead (``ActorStalledError``: replaced through ``on_actor_failure``, or a
            FlowError naming the shard); None waits as long as it takes. Applies where the
            gather blocks (``gather_sync``, ``batch_across_shards``, a blocking
            ``gather_async``); in local mode a call returns only when it is done.

    Examples:
        >>> from flowrl.iter import ParallelIteratorWorker
        >>> workers = [ParallelIteratorWorker([1, 2], repeat=False)]
        >>> from_actors(workers, name="Workers").gather_sync().take(2)
        [1, 2]
    """
    if reply_timeout_s is not None and not reply_timeout_s > 0:
        raise ValueError(f"from_actors needs reply_timeout_s > 0 seconds or None, got "
                         f"{reply_timeout_s=}")
    sources = [ActorShard(actor, on_actor_failure, reply_timeout_s) for actor in actors]
    return _source("from_actors", name or f"from_actors[shards={len(sources)}]", sources, {},
                   tuple(graph_links))
