"""``duplicate(n)``: several consumers of one upstream, with bounded buffering between them."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

from flowrl.iter.build import open_node
from flowrl.iter.not_ready import NOT_READY
from flowrl.iter.scheduling import Build, Waits


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
    """The source impl of child ``index`` of a ``duplicate``."""

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
