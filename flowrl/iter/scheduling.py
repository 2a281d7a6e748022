"""How a plan build is configured and how an idle scheduler waits without spinning.

``Build`` carries the settings of one build of a (sub)plan. ``Waits`` collects what
non-ready generators are waiting on (Ray futures, or callables that block on a queue), so a
union with nothing ready blocks in one batched wait instead of polling in a loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NoReturn

from flowrl.iter import executor
from flowrl.iter.errors import FlowError, operator_error
from flowrl.iter.metrics import MetricsContext

# The longest an idle scheduler blocks on queues (or on Ray futures while queues are also
# pending) before polling every input again; also how often a waiting queue runs its check().
IDLE_POLL_SECONDS = 0.02


class Waits:
    """What non-ready generators are waiting on, so a union can block instead of spinning.

    Attributes:
        refs: Futures a non-ready gather waits on (``executor.wait`` takes them in one call).
        waiters: ``wait(timeout_s)`` callables that block until their input may be ready
            (a queue with items, a queue with room) or the timeout passes.
        progress: Bumped by a generator that yielded NOT_READY after doing work (a filtered-out
            item, backpressure), meaning "poll again at once".
    """

    refs: list[Any] = []
    waiters: list[Callable[[float], None]] = []
    progress = 0


def wait_for_inputs(ref_mark: int, waiter_mark: int, progress: int) -> None:
    """Blocks until something registered in ``Waits`` since the marks may be ready.

    Called by a top-level union that got nothing from any input in a full round: with only Ray
    futures pending it blocks in one ``wait`` for the first of them; with queues pending it
    waits on them (and on the futures) for at most ``IDLE_POLL_SECONDS``, then returns so every
    input is polled again.
    """
    refs = list(dict.fromkeys(Waits.refs[ref_mark:]))
    del Waits.refs[ref_mark:]
    waiters = list(dict.fromkeys(Waits.waiters[waiter_mark:]))
    del Waits.waiters[waiter_mark:]
    if Waits.progress != progress:
        return
    if refs and not waiters:
        executor.wait(refs, num_returns=1, timeout=None)
    elif refs:
        executor.wait(refs, num_returns=1, timeout=IDLE_POLL_SECONDS)
    elif waiters:
        share = IDLE_POLL_SECONDS / len(waiters)
        for wait in waiters:
            wait(share)
    else:
        time.sleep(0.001)


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


def step_error(op: Any, build: Build, exc: BaseException) -> FlowError:
    """``exc`` raised inside operator ``op`` (a node or shard op) as a FlowError naming it."""
    return operator_error(exc, operator=op.label, lineage=op.lineage, shard=build.shard)


def raise_step_error(op: Any, build: Build, exc: BaseException) -> NoReturn:
    """Raises ``exc`` as a FlowError naming ``op``; a FlowError from deeper passes unchanged."""
    error = step_error(op, build, exc)
    if error is exc:
        raise exc
    raise error from exc
