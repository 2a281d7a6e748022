"""The shards behind a gather: where each shard's items come from, and how gathers read them."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from typing import Any

from flowrl.iter import executor
from flowrl.iter.errors import ActorDiedError, ActorStalledError, FlowError
from flowrl.iter.graph import Node
from flowrl.iter.metrics import MetricsContext
from flowrl.iter.not_ready import NOT_READY
from flowrl.iter.scheduling import Build, Waits
from flowrl.iter.shipping import (
    WorkerImportError,
    as_worker_import_error,
    missing_module_message,
)
from flowrl.iter.worker import END, ParallelIteratorWorker, ShardFailure, ShardOp

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

    def __init__(self, handle: Any, on_actor_failure: OnActorFailure | None,
                 reply_timeout_s: float | None = None) -> None:
        self.handle = handle
        self.on_actor_failure = on_actor_failure
        self.reply_timeout_s = reply_timeout_s

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


def _unimportable_operator_error(error: WorkerImportError, node: Node, run: Any) -> FlowError:
    """A FlowError naming the shard operators whose functions live in the missing module."""
    nodes = (run.spec.source_node, *run.spec.ops)
    needing = [n.label for n in nodes if _defined_in(n.impl, error.name)]
    operators = ", ".join(needing or [n.label for n in nodes])
    return FlowError(
        operator=needing[0] if needing else node.label,
        lineage=node.lineage,
        shard=run.index,
        original_type="ModuleNotFoundError",
        original_message=missing_module_message(
            error.name or "?", f"the shard operator(s) {operators}"),
        remote_traceback="",
    )


def _defined_in(impl: Any, module_name: str | None) -> bool:
    """Whether an operator's function (``impl.fn``, or the impl itself) comes from the module."""
    for candidate in (getattr(impl, "fn", None), impl):
        module = getattr(candidate, "__module__", None) or type(candidate).__module__
        if module_name and isinstance(module, str) and (
                module == module_name or module.startswith(module_name + ".")):
            return True
    return False


ShardStats = dict[str, tuple[int, int, float]]
"""Per-operator ``(items_in, items_out, seconds)`` of one shard, by node id."""


class _Run:
    """One shard of a running gather; its statistics outlive the actors that served it."""

    __slots__ = ("index", "spec", "handle", "generation", "done", "released", "final_stats",
                 "last_stats", "retired_stats")

    def __init__(self, index: int, spec: ShardSpec, handle: Any) -> None:
        self.index, self.spec, self.handle = index, spec, handle
        self.generation = 0
        self.done = False
        self.released = False
        self.final_stats: ShardStats | None = None
        # The latest statistics read from the current actor, and the sum of the last ones read
        # from the actors it replaced: a restart never takes counts back.
        self.last_stats: ShardStats = {}
        self.retired_stats: ShardStats = {}

    def retire_actor(self) -> None:
        """The current actor is gone: keep its last statistics in the running total."""
        self.retired_stats = _sum_stats([self.retired_stats, self.last_stats])
        self.last_stats = {}

    def total_stats(self) -> ShardStats:
        """Statistics of this shard over every actor that served it."""
        current = self.final_stats if self.released else self.last_stats
        return _sum_stats([self.retired_stats, current or {}])


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
            except WorkerImportError as error:
                raise _unimportable_operator_error(error, self.node, run) from error
        return [run for run in self.runs if not run.done]

    def request(self, run: _Run) -> Any:
        return executor.call(run.handle, "par_iter_next")

    def resolve_all(self, runs: list[_Run], futures: list[Any]) -> list[Any]:
        """One batched get for a round; per-shard resolution only when an actor died or gave
        no reply within its ``reply_timeout_s``."""
        timeout = _reply_timeout(runs)
        try:
            values = executor.get(futures, timeout=timeout)
        except TimeoutError:  # some shard gave no reply in time: find which, and recover it
            _, stalled = executor.wait(futures, num_returns=len(futures), timeout=0)
            return [self.resolve(run, future, refetch=True,
                                 stalled_after=timeout if future in stalled else None)
                    for run, future in zip(runs, futures, strict=True)]
        except ActorDiedError:
            return [
                self.resolve(run, future, refetch=True)
                for run, future in zip(runs, futures, strict=True)
            ]
        for value in values:
            if type(value) is ShardFailure:
                raise value.error
        return values

    def resolve(self, run: _Run, future: Any, *, refetch: bool,
                stalled_after: float | None = None) -> Any:
        """The value of ``future`` (END when the shard ends); restarts or drops dead shards,
        and stalled ones (no reply after ``stalled_after`` seconds)."""
        try:
            if stalled_after is not None:
                raise ActorStalledError(
                    f"it gave no reply for {stalled_after:g} s (reply_timeout_s="
                    f"{stalled_after:g}); whatever it runs may hang (an env's step() or "
                    f"reset()?)")
            value = executor.get(future)
        except ActorDiedError as error:
            value = self.recover(run, error)
            if value is _RESTARTED and refetch:
                future = self.request(run)
                return self.resolve(run, future, refetch=True,
                                    stalled_after=_timed_out(run, future))
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
                original_message=_death_message(run.index, error),
                remote_traceback="",
            ) from error
        try:
            replacement = callback(run.index, error)
        except ActorDiedError as refused:  # the callback will not replace it: name the operator
            raise FlowError(
                operator=self.node.label,
                lineage=self.node.lineage,
                shard=run.index,
                original_type=type(refused).__name__,
                original_message=str(refused),
                remote_traceback="",
            ) from refused
        run.retire_actor()
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
                run.final_stats = run.last_stats
            run.released = True
            executor.release_shard_worker(run.handle)

    def release_all(self) -> None:
        """The gather was closed: pooled actors of unfinished shards go back to the pool."""
        for run in self.runs:
            if run.spec.source.pooled and not run.released:
                run.released = True
                run.final_stats = {}
                executor.release_shard_worker(run.handle)

    def stats(self) -> ShardStats:
        """Per-node statistics summed over the shards, cumulative across actor restarts: a
        dead actor counts with the last statistics read from it."""
        futures = [(run, executor.call(run.handle, "par_iter_stats"))
                   for run in self.runs if not run.released]
        for run, future in futures:
            try:
                run.last_stats = executor.get(future)
            except ActorDiedError:  # dead: its last statistics stand until it is replaced
                continue
        return _sum_stats([run.total_stats() for run in self.runs])


def _sum_stats(shards: list[ShardStats]) -> ShardStats:
    totals: ShardStats = {}
    for shard in shards:
        for node_id, (a, b, c) in shard.items():
            x, y, z = totals.get(node_id, (0, 0, 0.0))
            totals[node_id] = (x + a, y + b, z + c)
    return totals


def _death_message(shard_index: int, error: ActorDiedError) -> str:
    import_error = as_worker_import_error(error, f"the actor serving shard {shard_index}")
    if import_error is not None:
        return f"the actor serving shard {shard_index} could not start: {import_error}"
    if isinstance(error, ActorStalledError):
        return f"the actor serving shard {shard_index} stalled: {error}"
    return f"the actor serving shard {shard_index} died: {error}"


def _timed_out(run: _Run, future: Any) -> float | None:
    """The run's `reply_timeout_s` if `future` gives no reply within it, else None."""
    timeout = _reply_timeout([run])
    if timeout is None:
        return None
    ready, _ = executor.wait([future], num_returns=1, timeout=timeout)
    return None if ready else timeout


def _reply_timeout(runs: list[_Run]) -> float | None:
    """The shortest ``reply_timeout_s`` of the runs' sources (None: wait as long as it takes)."""
    timeouts = [t for t in (getattr(run.spec.source, "reply_timeout_s", None) for run in runs)
                if t is not None]
    return min(timeouts) if timeouts else None


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

    def open(self, node: Node, build: Build) -> Iterator[Any]:
        stat = build.context.op_stat(node.id)
        shards = _Shards(self.shards, node, build.context)
        if self.mode == "async":
            return _gather_async(shards, self.num_async, build, stat)
        return _gather_rounds(shards, self.mode == "batch", build, stat)


def _gather_rounds(shards: _Shards, as_batch: bool, build: Build, stat: Any):
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
        values = shards.resolve_all(runs, futures)
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


def _gather_async(shards: _Shards, num_async: int, build: Build, stat: Any):
    clock = time.perf_counter
    pending: dict[Any, tuple[_Run, int]] = {}

    def submit(run: _Run) -> None:
        pending[shards.request(run)] = (run, run.generation, time.monotonic())

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
        stalled: list[Any] = []
        timeout = None
        if not ready:
            if build.nonblocking:
                stat.time_s += clock() - start
                Waits.refs.extend(futures)
                yield NOT_READY
                continue
            timeout = _reply_timeout([run for run, _, _ in pending.values()])
            ready, _ = executor.wait(futures, num_returns=1, timeout=timeout)
            if not ready:  # nothing came back in time: the oldest requests' actors stalled
                stalled = [f for f, (_, _, sent) in pending.items()
                           if time.monotonic() - sent >= timeout]
                ready = stalled or ready
        stat.time_s += clock() - start
        for future in ready:
            run, generation, _ = pending.pop(future)
            if run.done or generation != run.generation:
                continue  # a request to an actor that was since replaced
            value = shards.resolve(run, future, refetch=False,
                                   stalled_after=timeout if stalled else None)
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
