"""The shard protocol: ``ParallelIteratorWorker``, the base class of every shard actor."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

from flowrl.iter.build import apply_transforms
from flowrl.iter.errors import FlowError, operator_error
from flowrl.iter.metrics import MetricsContext, current, get_ident
from flowrl.iter.scheduling import Build


class _End:
    """Returned by ``par_iter_next`` when the shard is exhausted (never shown to users)."""

    __slots__ = ()

    def __reduce__(self) -> str:
        return "END"

    def __repr__(self) -> str:
        return "END"


END = _End()


class ShardFailure:
    """Returned by ``par_iter_next`` when an operator on the shard raised; holds the FlowError."""

    __slots__ = ("error",)

    def __init__(self, error: FlowError) -> None:
        self.error = error


class ShardOp:
    """What a shard needs to know about one of its operators (no links to the rest of the plan)."""

    __slots__ = ("id", "label", "lineage", "impl")

    def __init__(self, node: Any) -> None:
        self.id, self.label, self.lineage, self.impl = node.id, node.label, node.lineage, node.impl

    def __getstate__(self) -> tuple:
        return self.id, self.label, self.lineage, self.impl

    def __setstate__(self, state: tuple) -> None:
        self.id, self.label, self.lineage, self.impl = state


class ParallelIteratorWorker:
    """Base class of an actor (or, in local mode, a plain object) that serves one shard.

    Subclass it and call ``ParallelIteratorWorker.__init__(self, item_generator, repeat)``;
    create instances with ``executor.create_actor`` so the same class works as a Ray actor and
    as a plain object. ``from_actors`` then iterates them. The driver calls, in order:

    .. code-block:: python

        worker.par_iter_init(ops, shard_index, source)   # build the shard's operator chain
        worker.par_iter_next()                           # -> item, or an internal end/failure
        worker.par_iter_stats()                          # -> per-operator counts on this shard

    Args:
        item_generator: An iterable, or a zero-argument callable returning an iterator
            (generators cannot be pickled, so pass a factory to Ray).
        repeat: Start over when the items run out (needs a re-iterable or a factory).

    Examples:
        >>> class Counter(ParallelIteratorWorker):
        ...     def __init__(self, n):
        ...         ParallelIteratorWorker.__init__(self, lambda: iter(range(n)), repeat=False)
        >>> import flowrl, flowrl.iter
        >>> flowrl.init(local_mode=True)
        >>> flowrl.iter.from_actors([Counter(2), Counter(3)]).gather_sync().take(10)
        [0, 0, 1, 1, 2]
    """

    def __init__(self, item_generator: Any, repeat: bool) -> None:
        self.item_generator = item_generator
        self.repeat = repeat
        self._par_iter: Iterator[Any] | None = None
        self._par_context = MetricsContext()
        self._par_shard = 0
        self._par_source: Any = None
        self._par_slices: dict[int, collections.deque[Any]] = {}
        self._par_slice_count = 0

    def par_iter_reset(self, item_generator: Any, repeat: bool) -> None:
        """Serves new items (lets the engine reuse a generic shard actor)."""
        ParallelIteratorWorker.__init__(self, item_generator, repeat)

    def _par_items(self) -> Iterator[Any]:
        source = self.item_generator
        while True:
            iterable = source() if callable(source) and not hasattr(source, "__iter__") else source
            iterator = iter(iterable)
            produced = False
            for item in iterator:
                produced = True
                yield item
            if not self.repeat or not produced:
                return
            if iterator is iterable:
                raise ValueError(
                    "repeat=True needs a re-iterable (a list) or a zero-argument factory; "
                    f"got the one-shot iterator {iterable!r}"
                )

    def par_iter_init(self, ops: list[Any], shard_index: int = 0, source: Any = None) -> None:
        """(Re)builds this shard's operator chain; items restart from the item generator."""
        self._par_context = MetricsContext()
        self._par_shard = shard_index
        self._par_source = source
        build = Build(self._par_context, shard_index)
        counted = None
        if source is not None:
            counted = (self._par_error, self._par_context.op_stat(source.id))
        self._par_iter = apply_transforms(self._par_items(), list(ops), build, counted)
        self._par_slices = {}
        self._par_slice_count = 0

    def par_iter_next(self) -> Any:
        """The next item of the shard; internal END / ShardFailure values end or report."""
        if self._par_iter is None:
            self.par_iter_init([])
        now = current
        saved = now.state
        now.state = (self._par_context, get_ident())
        try:
            return next(self._par_iter)  # type: ignore[arg-type]
        except StopIteration:
            return END
        except Exception as exc:
            return ShardFailure(self._par_error(exc))
        finally:
            now.state = saved

    def _par_error(self, exc: Exception) -> FlowError:
        if isinstance(exc, FlowError):
            return exc
        source = self._par_source
        label = source.label if source is not None else type(self).__name__
        lineage = source.lineage if source is not None else label
        return operator_error(exc, operator=label, lineage=lineage, shard=self._par_shard)

    def par_iter_slice(self, step: int, start: int) -> Any:
        """The next item whose position on this shard is ``start`` modulo ``step``."""
        waiting = self._par_slices.get(start)
        if waiting:
            return waiting.popleft()
        while True:
            item = self.par_iter_next()
            if item is END or isinstance(item, ShardFailure):
                return item
            position = self._par_slice_count % step
            self._par_slice_count += 1
            if position == start:
                return item
            self._par_slices.setdefault(position, collections.deque()).append(item)

    def par_iter_stats(self) -> dict[str, tuple[int, int, float]]:
        """Per-operator ``(items_in, items_out, seconds)`` on this shard, by node id."""
        totals: dict[str, tuple[int, int, float]] = {}
        for node_id, stats in self._par_context.op_stats.items():
            for stat in stats:
                i, o, t = stat.read()
                a, b, c = totals.get(node_id, (0, 0, 0.0))
                totals[node_id] = (a + i, b + o, c + t)
        return totals

    def par_iter_metrics(self) -> MetricsContext:
        """The shard's own metrics context (what operators on this shard see)."""
        return self._par_context
