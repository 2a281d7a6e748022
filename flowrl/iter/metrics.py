"""Shared metrics of a running plan: counters, timers, info, and per-operator statistics."""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any


class TimerStat:
    """Timing statistics over a sliding window of recent measurements.

    Use it as a context manager, or ``push(seconds)`` measured elsewhere; pair each with
    ``push_units_processed(n)`` to get a throughput.

    Examples:
        >>> timer = TimerStat()
        >>> timer.push(0.5); timer.push(1.5); timer.push_units_processed(4)
        >>> timer.count, timer.mean
        (2, 1.0)
        >>> with timer:
        ...     pass
        >>> timer.count
        3
    """

    def __init__(self, window_size: int = 100) -> None:
        self._window_size = window_size
        self._samples: collections.deque[float] = collections.deque(maxlen=window_size)
        self._units: collections.deque[float] = collections.deque(maxlen=window_size)
        self.count = 0
        self.total = 0.0
        self._start: float | None = None

    def __enter__(self) -> TimerStat:
        if self._start is not None:
            raise RuntimeError("TimerStat is not reentrant: it is already timing a block")
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        assert self._start is not None
        self.push(time.perf_counter() - self._start)
        self._start = None

    def push(self, seconds: float) -> None:
        """Records one measurement."""
        self._samples.append(seconds)
        self.count += 1
        self.total += seconds

    def push_units_processed(self, n: float) -> None:
        """Records how many units (items, steps) the latest measurement processed."""
        self._units.append(n)

    @property
    def mean(self) -> float:
        """Mean seconds over the window (0.0 before any measurement)."""
        return sum(self._samples) / len(self._samples) if self._samples else 0.0

    @property
    def mean_units_processed(self) -> float:
        return sum(self._units) / len(self._units) if self._units else 0.0

    @property
    def mean_throughput(self) -> float:
        """Units processed per second over the window (0.0 when unknown)."""
        seconds = sum(list(self._samples)[-len(self._units) :]) if self._units else 0.0
        return sum(self._units) / seconds if seconds > 0 else 0.0

    def state(self) -> dict[str, Any]:
        return {
            "window_size": self._window_size,
            "samples": list(self._samples),
            "units": list(self._units),
            "count": self.count,
            "total": self.total,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TimerStat:
        timer = cls(state["window_size"])
        timer._samples.extend(state["samples"])
        timer._units.extend(state["units"])
        timer.count = state["count"]
        timer.total = state["total"]
        return timer

    def __repr__(self) -> str:
        return f"TimerStat(count={self.count}, mean={self.mean:.6f})"


class OpStat:
    """Items in/out and seconds spent by one operator (on one shard, or on the driver).

    A fused chain of per-item operators keeps its counts in generator locals for speed;
    ``probe`` then reads them live.
    """

    __slots__ = ("items_in", "items_out", "time_s", "probe")

    def __init__(self) -> None:
        self.items_in = 0
        self.items_out = 0
        self.time_s = 0.0
        self.probe: Any = None

    def read(self) -> tuple[int, int, float]:
        if self.probe is not None:
            live = self.probe()
            if live is not None:
                return live
        return self.items_in, self.items_out, self.time_s


class MetricsContext:
    """Metrics shared by every operator of one running plan.

    Operators reach it only through ``LocalIterator.get_metrics()``.

    Attributes:
        counters: Named integer counters, e.g. ``counters["num_actor_restarts"]``.
        timers: Named ``TimerStat``s, created on first use.
        info: Free-form values (latest learner stats, ...).
        current_actor: The shard actor that produced the item being processed (set by
            gathers; a plain shard object in local mode).

    Examples:
        >>> metrics = MetricsContext()
        >>> metrics.counters["steps"] += 10
        >>> with metrics.timers["learn"]:
        ...     pass
        >>> restored = MetricsContext(); restored.restore(metrics.save())
        >>> restored.counters["steps"], restored.timers["learn"].count
        (10, 1)
    """

    def __init__(self) -> None:
        self.counters: collections.defaultdict[str, int] = collections.defaultdict(int)
        self.timers: collections.defaultdict[str, TimerStat] = collections.defaultdict(TimerStat)
        self.info: dict[str, Any] = {}
        self.current_actor: Any = None
        self.op_stats: dict[str, list[OpStat]] = {}
        self.shard_sets: list[Any] = []

    def op_stat(self, node_id: str) -> OpStat:
        """A fresh OpStat registered under ``node_id`` (one per build of the operator)."""
        stat = OpStat()
        self.op_stats.setdefault(node_id, []).append(stat)
        return stat

    @contextlib.contextmanager
    def activate(self) -> Iterator[MetricsContext]:
        """Makes this the context `LocalIterator.get_metrics()` returns, outside any plan.

        This is the imperative escape hatch: operators called as plain functions in your own
        loop read and write this context, exactly as they would inside a plan. Plans run inside
        the block keep their own context and restore this one afterwards.

        Examples:
            >>> from flowrl.iter import LocalIterator
            >>> metrics = MetricsContext()
            >>> with metrics.activate():
            ...     LocalIterator.get_metrics().counters["steps"] += 5
            >>> metrics.counters["steps"]
            5
        """
        previous = current.state
        current.state = (self, get_ident())
        try:
            yield self
        finally:
            current.state = previous

    def save(self) -> dict[str, Any]:
        """Counters, timers and info as plain data (picklable)."""
        return {
            "counters": dict(self.counters),
            "timers": {name: timer.state() for name, timer in self.timers.items()},
            "info": dict(self.info),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Replaces counters, timers and info with a ``save()``d state."""
        self.counters = collections.defaultdict(int, state["counters"])
        self.timers = collections.defaultdict(TimerStat)
        for name, timer_state in state["timers"].items():
            self.timers[name] = TimerStat.from_state(timer_state)
        self.info = dict(state["info"])


class SharedMetrics:
    """A handle to the MetricsContext of a plan; unions redirect their inputs' handles to one.

    Examples:
        >>> shared = SharedMetrics()
        >>> shared.get() is shared.get()
        True
    """

    def __init__(self) -> None:
        self._context: MetricsContext | None = None
        self._redirect: SharedMetrics | None = None

    def root(self) -> SharedMetrics:
        node = self
        while node._redirect is not None:
            node = node._redirect
        return node

    def get(self) -> MetricsContext:
        root = self.root()
        if root._context is None:
            root._context = MetricsContext()
        return root._context

    def merge_into(self, other: SharedMetrics) -> None:
        """Makes this handle (and everything redirected to it) resolve to ``other``'s context."""
        mine, theirs = self.root(), other.root()
        if mine is theirs:
            return
        if mine._context is not None and theirs._context is None:
            theirs._context = mine._context
        mine._redirect = theirs

    def __getstate__(self) -> dict[str, Any]:
        # A plan pickled before it runs carries no metrics; after, the context travels too.
        return {"_context": self.root()._context, "_redirect": None}


class _Current:
    """The metrics context of the operator running now, per thread (set by the plan's driver).

    A plain object is several times faster than ``threading.local`` for the per-item update;
    ``thread`` guards against reading another thread's context.
    """

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state: tuple[MetricsContext, int] | None = None


current = _Current()
get_ident = threading.get_ident


def get_current_metrics() -> MetricsContext:
    state = current.state
    if state is None or state[1] != get_ident():
        raise RuntimeError(
            "LocalIterator.get_metrics() can only be called inside an operator while a plan "
            "is running (e.g. in a function passed to for_each); outside one, read "
            "`it.shared_metrics.get()` on the iterator instead."
        )
    return state[0]
