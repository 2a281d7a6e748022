"""``LocalIterator``: a lazy, driver-side stream of items built from plan nodes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from flowrl.iter.build import drive, open_node
from flowrl.iter.duplicate import DuplicateChild, DuplicateState
from flowrl.iter.errors import FlowError
from flowrl.iter.graph import Kind, Node, callable_label, node_operators, walk
from flowrl.iter.groups import mark_group, plan_graph
from flowrl.iter.metrics import MetricsContext, SharedMetrics, get_current_metrics
from flowrl.iter.scheduling import Build
from flowrl.iter.sources import IterSource, PolledSource, PollingSource
from flowrl.iter.transforms import (
    Batch,
    Combine,
    ConcurrentMap,
    Filter,
    Flatten,
    Map,
    NonBlockingMap,
    NonBlockingStep,
    Shuffle,
    zip_with_source_actor,
)
from flowrl.iter.union import Union

T = TypeVar("T")
U = TypeVar("U")


class LocalIterator(Generic[T]):
    """A lazy stream of items computed in the driver process.

    Nothing runs until the first ``next()``; until then the iterator is a plain serializable
    description of the plan (``repr``, ``graph()``, ``pickle.dumps``). Every method returns a
    new iterator.

    Args:
        base_iterator_factory: Zero-argument callable returning the source iterable; it is
            called when the plan first runs.
        name: The source's label in the plan, e.g. ``"ParallelRollouts(local)"``.
        shared_metrics: The metrics handle to share with other iterators (default: new).

    Examples:
        >>> it = LocalIterator(lambda: range(5), name="numbers")
        >>> it.for_each(lambda x: x * 10).filter(lambda x: x > 10).take(2)
        [20, 30]
        >>> repr(it.batch(2))
        'numbers.batch(2)'
    """

    def __init__(
        self,
        base_iterator_factory: Callable[[], Iterable[T]],
        *,
        name: str,
        shared_metrics: SharedMetrics | None = None,
    ) -> None:
        if not callable(base_iterator_factory):
            raise TypeError(
                "LocalIterator needs a zero-argument callable returning an iterable, got "
                f"{base_iterator_factory=}; wrap it, e.g. LocalIterator(lambda: items, ...)"
            )
        node = Node(
            op="LocalIterator",
            label=name,
            kind="source",
            parents=(),
            where="driver",
            shards=None,
            impl=IterSource(base_iterator_factory),
        )
        self._setup(node, shared_metrics or SharedMetrics())

    def _setup(self, node: Node, shared_metrics: SharedMetrics) -> None:
        self._node = node
        self.shared_metrics = shared_metrics
        self._generator: Iterator[T] | None = None

    @classmethod
    def _from_node(cls, node: Node, shared_metrics: SharedMetrics) -> LocalIterator[Any]:
        it = cls.__new__(cls)
        it._setup(node, shared_metrics)
        return it

    @classmethod
    def from_polling_source(
        cls,
        source: PollingSource,
        *,
        name: str,
        op: str | None = None,
        params: dict[str, Any] | None = None,
        shared_metrics: SharedMetrics | None = None,
    ) -> LocalIterator[Any]:
        """A source that is polled and may have nothing ready (e.g. an empty queue).

        Under a union or ``Concurrently`` the other inputs run while it has nothing; driven
        alone, the plan blocks in ``source.wait`` between polls. See ``PollingSource``.

        Examples:
            >>> from flowrl.iter.sources import PollingSource
            >>> class Once(PollingSource):
            ...     def __init__(self):
            ...         self.done = False
            ...     def poll(self):
            ...         if self.done:
            ...             raise StopIteration
            ...         self.done = True
            ...         return True, "only item"
            >>> LocalIterator.from_polling_source(Once(), name="once").take(3)
            ['only item']
        """
        if not isinstance(source, PollingSource):
            raise TypeError(
                f"from_polling_source() needs a flowrl.iter.PollingSource, got {source!r}; "
                "for a plain iterable use LocalIterator(lambda: items, name=...)"
            )
        node = Node(
            op=op or type(source).__name__,
            label=name,
            kind="source",
            parents=(),
            where="driver",
            shards=None,
            params=params,
            impl=PolledSource(source),
        )
        return cls._from_node(node, shared_metrics or SharedMetrics())

    def _then(
        self,
        op: str,
        label: str,
        impl: Any,
        params: dict[str, Any] | None = None,
        kind: str = "transform",
    ) -> LocalIterator[Any]:
        node = Node(
            op=op,
            label=label,
            kind=kind,
            parents=(self._node,),  # type: ignore[arg-type]
            where="driver",
            shards=None,
            params=params,
            impl=impl,
        )
        return LocalIterator._from_node(node, self.shared_metrics)

    # -- running ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[T]:
        # The running generator itself (same stream as next(self)), saving a call per item.
        return self._generator if self._generator is not None else self._build()

    def __next__(self) -> T:
        generator = self._generator
        if generator is None:
            generator = self._build()
        return next(generator)

    def _build(self) -> Iterator[T]:
        for node in walk(self._node):
            if isinstance(node.impl, Union):
                for child in node.impl.children:
                    child.shared_metrics.merge_into(node.impl.shared_metrics)
        context = self.shared_metrics.get()
        built = open_node(self._node, Build(context))
        self._generator = drive(built, context)
        return self._generator

    def __getstate__(self) -> dict[str, Any]:
        if self._generator is not None:
            raise RuntimeError(
                f"{self!r} has started running and can no longer be pickled; pickle the plan "
                "before its first next()."
            )
        return {"_node": self._node, "shared_metrics": self.shared_metrics, "_generator": None}

    def __repr__(self) -> str:
        return self._node.lineage

    @staticmethod
    def get_metrics() -> MetricsContext:
        """The metrics context of the running plan; only valid inside an operator.

        Raises:
            RuntimeError: Called outside an operator of a running plan.

        Examples:
            >>> def count(x):
            ...     LocalIterator.get_metrics().counters["seen"] += 1
            ...     return x
            >>> it = LocalIterator(lambda: range(3), name="src").for_each(count)
            >>> _ = it.take(3); it.shared_metrics.get().counters["seen"]
            3
        """
        return get_current_metrics()

    # -- transforms ---------------------------------------------------------------------------

    def for_each(
        self, fn: Callable[[T], U], max_concurrency: int = 1, label: str | None = None
    ) -> LocalIterator[U]:
        """Applies ``fn`` to every item, in order.

        Args:
            fn: Function or callable object; a stateful one keeps its state across items.
            max_concurrency: With k > 1, up to k calls run at once as Ray tasks (inline in
                local mode); outputs keep the input order. State is then not shared.
            label: The operator's name in the plan (default ``for_each(<fn>)``).

        Examples:
            >>> LocalIterator(lambda: [1, 2], name="src").for_each(str).take(2)
            ['1', '2']
        """
        label = label or f"for_each({callable_label(fn)})"
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be an int >= 1, got {max_concurrency=}")
        if isinstance(fn, NonBlockingStep):
            if max_concurrency != 1:
                raise ValueError(
                    f"{label} retries items instead of blocking and runs one at a time; "
                    f"drop max_concurrency (got {max_concurrency=})"
                )
            impl: Any = NonBlockingMap(fn)
        elif max_concurrency == 1:
            impl = Map(fn)
        else:
            impl = ConcurrentMap(fn, max_concurrency)
        return self._then("for_each", label, impl, {"max_concurrency": max_concurrency})

    def filter(self, fn: Callable[[T], bool], label: str | None = None) -> LocalIterator[T]:
        """Keeps the items for which ``fn(item)`` is true.

        Examples:
            >>> LocalIterator(lambda: range(6), name="src").filter(lambda x: x % 2).take(5)
            [1, 3, 5]
        """
        return self._then("filter", label or f"filter({callable_label(fn)})", Filter(fn))

    def batch(self, n: int) -> LocalIterator[list[T]]:
        """Groups items into lists of ``n``; the last list may be shorter.

        Examples:
            >>> LocalIterator(lambda: range(5), name="src").batch(2).take(3)
            [[0, 1], [2, 3], [4]]
        """
        _check_positive("batch", n=n)
        return self._then("batch", f"batch({n})", Batch(n), {"n": n})

    def flatten(self) -> LocalIterator[Any]:
        """Yields the elements of each (iterable) item; the inverse of ``batch``.

        Examples:
            >>> LocalIterator(lambda: [[1, 2], [3]], name="src").flatten().take(5)
            [1, 2, 3]
        """
        return self._then("flatten", "flatten()", Flatten())

    def combine(self, fn: Callable[[T], Iterable[U]], label: str | None = None) -> LocalIterator[U]:
        """Flat-map: ``fn(item)`` returns a list (possibly empty) of outputs.

        Examples:
            >>> LocalIterator(lambda: [1, 2], name="src").combine(lambda x: [x] * x).take(5)
            [1, 2, 2]
        """
        return self._then("combine", label or f"combine({callable_label(fn)})", Combine(fn))

    def shuffle(self, buffer_size: int, seed: int | None = None) -> LocalIterator[T]:
        """Shuffles items through a buffer of ``buffer_size`` (seeded: reproducible).

        Examples:
            >>> sorted(LocalIterator(lambda: range(4), name="src").shuffle(2, seed=0).take(4))
            [0, 1, 2, 3]
        """
        _check_positive("shuffle", buffer_size=buffer_size)
        return self._then(
            "shuffle",
            f"shuffle({buffer_size}, seed={seed})",
            Shuffle(buffer_size, seed),
            {"buffer_size": buffer_size, "seed": seed},
        )

    def zip_with_source_actor(self) -> LocalIterator[tuple[Any, T]]:
        """Pairs each item with the shard actor that produced it (needs an upstream gather).

        Examples:
            >>> import flowrl, flowrl.iter
            >>> flowrl.init(local_mode=True)
            >>> pairs = flowrl.iter.from_range(2, num_shards=1).gather_async()
            >>> [item for _, item in pairs.zip_with_source_actor().take(2)]
            [0, 1]
        """
        return self._then(
            "zip_with_source_actor", "zip_with_source_actor()", Map(zip_with_source_actor)
        )

    def duplicate(self, n: int, max_ahead: int = 100) -> list[LocalIterator[T]]:
        """Returns ``n`` iterators that each yield every item of this one.

        Buffering is bounded: a child may run at most ``max_ahead`` items ahead of its slowest
        sibling. Under a ``union`` it then yields to the others; consumed alone it raises.

        Examples:
            >>> a, b = LocalIterator(lambda: range(3), name="src").duplicate(2)
            >>> a.union(b, deterministic=True).take(6)
            [0, 0, 1, 1, 2, 2]
        """
        _check_positive("duplicate", n=n, max_ahead=max_ahead)
        state = DuplicateState(self._node, n, max_ahead)
        children = []
        for index in range(n):
            node = Node(
                op="duplicate",
                label=f"duplicate({n})[{index}]",
                kind="duplicate",
                parents=(self._node,),
                where="driver",
                shards=None,
                params={"n": n, "index": index},
                impl=DuplicateChild(state, index),
            )
            children.append(LocalIterator._from_node(node, self.shared_metrics))
        return children

    def union(
        self,
        *others: LocalIterator[Any],
        deterministic: bool = False,
        round_robin_weights: list[int | str] | None = None,
        output_indexes: list[int] | None = None,
    ) -> LocalIterator[Any]:
        """Merges this iterator with ``others``; the merged plans share one metrics context.

        Args:
            *others: Iterators to merge with.
            deterministic: True alternates strictly (``round_robin_weights[i]`` items from
                input i per round; blocking). False yields whatever input has items ready,
                without blocking on any one of them.
            round_robin_weights: Items per round for each input; ``"*"`` takes as many as are
                ready without blocking (not every weight may be ``"*"``). A filtered-out item
                still takes its turn.
            output_indexes: Positions (0 is this iterator) of the inputs whose items leave the
                union; the other inputs still run, for their side effects. None: all of them.

        Examples:
            >>> a = LocalIterator(lambda: range(4), name="a")
            >>> b = LocalIterator(lambda: "xyz", name="b")
            >>> a.union(b, deterministic=True, round_robin_weights=[2, 1]).take(6)
            [0, 1, 'x', 2, 3, 'y']
        """
        children = [self, *others]
        settings = []
        if deterministic:
            settings.append("deterministic=True")
        if round_robin_weights is not None:
            settings.append(f"round_robin_weights={list(round_robin_weights)}")
        if output_indexes is not None:
            settings.append(f"output_indexes={list(output_indexes)}")
        arguments = [repr(other) for other in others]
        return merge_iterators(
            children,
            deterministic=deterministic,
            round_robin_weights=round_robin_weights,
            output_indexes=output_indexes,
            op="union",
            kind="union",
            label=f"union({', '.join(settings)})",
            lineage=f"{self!r}.union({', '.join(arguments + settings)})",
            method="union()",
        )

    # -- consuming and inspecting -------------------------------------------------------------

    def take(self, n: int) -> list[T]:
        """Runs the plan until ``n`` items (or the end) and returns them.

        Examples:
            >>> LocalIterator(lambda: range(10), name="src").take(3)
            [0, 1, 2]
        """
        items = []
        for item in self:
            items.append(item)
            if len(items) >= n:
                break
        return items

    def show(self, n: int = 20) -> None:
        """Prints up to ``n`` items, one per line.

        Examples:
            >>> LocalIterator(lambda: ["a"], name="src").show()
            a
        """
        for item in self.take(n):
            print(item)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-operator items in/out, seconds and throughput of this run, by graph node id.

        Fast per-item operators time a sample of items after the first 64 and extrapolate.

        Examples:
            >>> it = LocalIterator(lambda: range(3), name="src").for_each(abs)
            >>> _ = it.take(3)
            >>> [(s["label"], s["items_out"]) for s in it.stats().values()]
            [('src', 3), ('for_each(abs)', 3)]
        """
        return collect_stats(self._node, self.shared_metrics.get())

    def operators(self, kind: type | None = None) -> list[Any]:
        """The operator objects of this plan in plan order (each once), e.g. the functions
        given to ``for_each``; with ``kind``, only its instances. The Trainer finds the
        operators whose state a checkpoint holds this way.

        Examples:
            >>> class Double:
            ...     def __call__(self, x): return 2 * x
            >>> it = LocalIterator(lambda: range(3), name="src").for_each(Double())
            >>> [type(op).__name__ for op in it.operators(Double)]
            ['Double']
        """
        found: dict[int, Any] = {}
        for node in walk(self._node):
            for owner in node_operators(node):
                if kind is None or isinstance(owner, kind):
                    found.setdefault(id(owner), owner)
        return list(found.values())

    def stats_state(self) -> list[tuple[str, int, int, float]]:
        """The per-operator statistics as plain data, in plan order, for a checkpoint.

        ``stats()`` is keyed by node ids, which a plan rebuilt in another process does not
        share; this form is keyed by position and label, so ``restore_stats`` can match it.

        Examples:
            >>> it = LocalIterator(lambda: range(3), name="src")
            >>> _ = it.take(2)
            >>> it.stats_state()
            [('src', 0, 2, 0.0)]
        """
        return [
            (s["label"], s["items_in"], s["items_out"], round(s["time_s"], 9))
            for s in self.stats().values()
        ]

    def restore_stats(self, state: list[tuple[str, int, int, float]]) -> None:
        """Adds checkpointed per-operator statistics to this plan's, so counts carry on.

        Raises:
            ValueError: if ``state`` was saved from a plan of another shape.

        Examples:
            >>> it = LocalIterator(lambda: range(3), name="src")
            >>> it.restore_stats([("src", 0, 5, 0.5)])
            >>> it.stats_state()
            [('src', 0, 5, 0.5)]
        """
        nodes = list(walk(self._node))
        labels = [node.label for node in nodes]
        saved_labels = [entry[0] for entry in state]
        if labels != saved_labels:
            raise ValueError(
                f"These statistics come from another plan: saved operators {saved_labels}, "
                f"this plan has {labels}. Restore a checkpoint into the plan that wrote it."
            )
        context = self.shared_metrics.get()
        for node, (_, items_in, items_out, seconds) in zip(nodes, state):
            stat = context.op_stat(node.id)
            stat.items_in, stat.items_out, stat.time_s = int(items_in), int(items_out), seconds

    def graph(self, *, internals: bool = False) -> Any:
        """The whole plan as a ``networkx.DiGraph`` (node attributes include ``stats()``).

        An operator that built several engine nodes (``as_operator``, e.g. ``ParallelRollouts``)
        is one node, as the plan reads; ``internals=True`` shows every engine node.

        Examples:
            >>> g = LocalIterator(lambda: [], name="src").for_each(abs).graph()
            >>> [g.nodes[n]["kind"] for n in g.nodes]
            ['source', 'transform']
        """
        return plan_graph(self._node, self.stats(), internals=internals)

    def as_operator(self, label: str, *, inputs: Sequence[Any] = ()) -> LocalIterator[T]:
        """Reads the chain that built this iterator from ``inputs`` as one operator, ``label``.

        For functions that build a plan piece from several engine steps and should read as
        the call the user wrote: the lineage shows ``label`` in place of the steps, and
        ``graph()`` draws them as one node (``graph(internals=True)`` draws each). Call it
        where the chain is built, before the iterator is used further; it marks this
        iterator's nodes and returns the iterator.

        Args:
            label: how the call reads, e.g. ``"ParallelRollouts(mode='bulk_sync')"``.
            inputs: the iterators the operator consumes (none for a source); their own
                chains stay outside it.

        Examples:
            >>> evens = LocalIterator(lambda: range(6), name="numbers")
            >>> pairs = evens.filter(lambda x: x % 2 == 0).batch(2).as_operator(
            ...     "EvenPairs()", inputs=[evens])
            >>> repr(pairs.for_each(sum))
            'numbers.EvenPairs().for_each(sum)'
            >>> pairs.take(2)
            [[0, 2], [4]]
        """
        mark_group(self._node, label, [source._node for source in inputs])
        return self


def _check_positive(method: str, **values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{method}() needs {name} to be an int >= 1, got {name}={value!r}")


def merge_iterators(
    iterators: list[LocalIterator[Any]],
    *,
    deterministic: bool,
    round_robin_weights: list[int | str] | None = None,
    output_indexes: list[int] | None = None,
    op: str,
    kind: Kind,
    label: str,
    lineage: str,
    params: dict[str, Any] | None = None,
    method: str,
) -> LocalIterator[Any]:
    """One plan node that runs ``iterators`` together; what ``union`` and ``Concurrently`` build.

    Checks the arguments (``method`` names the caller in error messages), then adds a single
    node of ``kind`` whose parents are the inputs; the merged plans share one metrics context.

    Examples:
        >>> a, b = LocalIterator(lambda: [1], name="a"), LocalIterator(lambda: [2], name="b")
        >>> merged = merge_iterators([a, b], deterministic=True, op="merge", kind="union",
        ...                          label="merge()", lineage="merge(a, b)", method="merge()")
        >>> merged.take(2), repr(merged)
        ([1, 2], 'merge(a, b)')
    """
    if not iterators:
        raise ValueError(f"{method} needs at least one LocalIterator to run, got none")
    for iterator in iterators:
        if not isinstance(iterator, LocalIterator):
            raise TypeError(
                f"{method} takes LocalIterators, got {iterator!r}; gather a "
                "ParallelIterator first (e.g. gather_async())."
            )
    if round_robin_weights is not None:
        round_robin_weights = list(round_robin_weights)
        if len(round_robin_weights) != len(iterators):
            raise ValueError(
                f"{method}: round_robin_weights needs one weight per input: got "
                f"{len(round_robin_weights)} weights for {len(iterators)} inputs"
            )
        for weight in round_robin_weights:
            if weight != "*" and (
                isinstance(weight, bool) or not isinstance(weight, int) or weight < 1
            ):
                raise ValueError(f"{method}: each weight must be an int >= 1 or '*', got {weight=}")
        if all(weight == "*" for weight in round_robin_weights):
            raise ValueError(
                f"{method}: not every round_robin_weight may be '*': at least one input "
                f"needs a count, got {round_robin_weights=}"
            )
    if output_indexes is not None:
        output_indexes = list(output_indexes)
        for index in output_indexes:
            if (
                isinstance(index, bool)
                or not isinstance(index, int)
                or not (0 <= index < len(iterators))
            ):
                raise ValueError(
                    f"{method}: output index out of range: {index=}, but there are "
                    f"{len(iterators)} inputs (valid indexes 0..{len(iterators) - 1})"
                )
    if params is None:
        params = {
            "deterministic": deterministic,
            "round_robin_weights": round_robin_weights,
            "output_indexes": output_indexes,
        }
    impl = Union(tuple(iterators), deterministic, round_robin_weights, output_indexes)
    impl.shared_metrics = SharedMetrics()
    node = Node(
        op=op,
        label=label,
        kind=kind,
        parents=tuple(iterator._node for iterator in iterators),
        where="driver",
        shards=None,
        impl=impl,
        params=params,
        lineage=lineage,
    )
    return LocalIterator._from_node(node, impl.shared_metrics)


def collect_stats(node: Node, context: MetricsContext | None) -> dict[str, dict[str, Any]]:
    """Sums each node's statistics over its builds on the driver and on live shards."""
    from flowrl.iter.shards import shard_stats

    totals: dict[str, list[float]] = {}
    if context is not None:
        for node_id, stats in context.op_stats.items():
            for stat in stats:
                _add(totals, node_id, stat.read())
        for node_id, values in shard_stats(context).items():
            _add(totals, node_id, values)
    result = {}
    for current in walk(node):
        items_in, items_out, seconds = totals.get(current.id, (0, 0, 0.0))
        result[current.id] = {
            "op": current.op,
            "label": current.label,
            "kind": current.kind,
            "where": current.where,
            "items_in": int(items_in),
            "items_out": int(items_out),
            "time_s": seconds,
            "throughput": items_out / seconds if seconds > 0 else 0.0,
        }
        extra_stats = getattr(current.impl, "extra_stats", None)
        if extra_stats is not None:  # e.g. a queue's fill level
            result[current.id].update(extra_stats())
    return result


def _add(totals: dict[str, list[float]], node_id: str, values: tuple) -> None:
    entry = totals.setdefault(node_id, [0, 0, 0.0])
    for index, value in enumerate(values):
        entry[index] += value


__all__ = ["LocalIterator", "FlowError"]
