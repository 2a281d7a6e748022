"""Driver-side sources: a user iterable, and a polled source that may have nothing ready."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from flowrl.iter.build import apply_transforms
from flowrl.iter.not_ready import NOT_READY
from flowrl.iter.scheduling import IDLE_POLL_SECONDS, Build, Waits, raise_step_error, step_error


class IterSource:
    """A driver-side source from a zero-argument factory returning an iterable."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def open_raw(self, node: Any, chain: list[Any], build: Build) -> Iterator[Any]:
        """The factory's iterator under ``chain``; the first fused chain counts its items."""
        stat = build.context.op_stat(node.id)

        def wrap(exc: BaseException) -> BaseException:
            return step_error(node, build, exc)

        try:  # builds run on the plan's first next(), so this is not at construction time
            iterator = iter(self.factory())
        except Exception as exc:
            raise_step_error(node, build, exc)
        return apply_transforms(iterator, chain, build, (wrap, stat))


class PollingSource:
    """Base for a source that is polled, and may have nothing ready (an empty queue).

    Under a union (or ``Concurrently``) the engine runs the other inputs while this one has
    nothing; driven on its own, the plan blocks in ``wait`` between polls. Turn one into a
    ``LocalIterator`` with ``LocalIterator.from_polling_source``.

    Subclasses implement ``poll`` and usually ``wait``; ``extra_stats`` adds values to the
    operator's entry in ``stats()`` and ``graph()``.

    Examples:
        >>> from flowrl.iter import LocalIterator
        >>> class Countdown(PollingSource):
        ...     def __init__(self, n):
        ...         self.n = n
        ...     def poll(self):
        ...         if self.n == 0:
        ...             raise StopIteration
        ...         self.n -= 1
        ...         return True, self.n
        >>> LocalIterator.from_polling_source(Countdown(3), name="countdown").take(5)
        [2, 1, 0]
    """

    def poll(self) -> tuple[bool, Any]:
        """``(True, item)``, or ``(False, None)`` when nothing is ready; StopIteration ends."""
        raise NotImplementedError(f"{type(self).__name__} must implement poll()")

    def wait(self, timeout_s: float) -> None:
        """Blocks until a poll may succeed or ``timeout_s`` passes (default: sleeps)."""
        time.sleep(timeout_s)

    def extra_stats(self) -> dict[str, Any]:
        """Values added to this source's statistics (default: none)."""
        return {}


class PolledSource:
    """The impl of a node built from a ``PollingSource``."""

    def __init__(self, source: PollingSource) -> None:
        self.source = source

    def open(self, node: Any, build: Build) -> Iterator[Any]:
        return _poll(self.source, node, build, build.context.op_stat(node.id))

    def extra_stats(self) -> dict[str, Any]:
        return self.source.extra_stats()


def _poll(source, node, build, stat):
    clock = time.perf_counter
    while True:
        start = clock()
        try:
            ready, item = source.poll()
        except StopIteration:
            return
        except Exception as exc:
            raise_step_error(node, build, exc)
        finally:
            stat.time_s += clock() - start
        if ready:
            stat.items_out += 1
            yield item
        elif build.cooperative:
            Waits.waiters.append(source.wait)
            yield NOT_READY  # the enclosing union runs the other inputs meanwhile
        else:
            source.wait(IDLE_POLL_SECONDS)
