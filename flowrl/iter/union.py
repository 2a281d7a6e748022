"""Merging driver-side iterators: ``LocalIterator.union`` and ``Concurrently`` run on this."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from flowrl.iter.build import open_node
from flowrl.iter.not_ready import NOT_READY
from flowrl.iter.scheduling import Build, Waits, wait_for_inputs


class Union:
    """Merges driver-side iterators; see ``LocalIterator.union``.

    Args:
        children: The LocalIterators to merge.
        deterministic: Strict rotation (blocking) instead of taking whatever is ready.
        weights: Items per round for each child (ints or ``"*"``); default one each.
        output_indexes: The children whose items leave the union; the others still run (for
            their side effects) and their items are dropped. None: every child's items.
    """

    def __init__(
        self,
        children: tuple[Any, ...],
        deterministic: bool,
        weights: list[Any] | None,
        output_indexes: list[int] | None = None,
    ) -> None:
        self.children = children
        self.deterministic = deterministic
        self.weights = weights or [1] * len(children)
        self.output_indexes = output_indexes

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
    shown = set(range(len(iterators)) if impl.output_indexes is None else impl.output_indexes)
    clock = time.perf_counter
    while active:
        found, progress = False, Waits.progress
        ref_mark, waiter_mark = len(Waits.refs), len(Waits.waiters)
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
                if index not in shown:
                    if build.cooperative:
                        Waits.progress += 1
                        yield NOT_READY  # let an enclosing union run its other inputs too
                    continue  # ran for its side effects only
                stat.items_out += 1
                yield item
        if found or not active:
            del Waits.refs[ref_mark:]  # everything is polled again next round
            del Waits.waiters[waiter_mark:]
            continue
        if build.cooperative:
            yield NOT_READY  # the enclosing scheduler decides how to wait
            continue
        wait_for_inputs(ref_mark, waiter_mark, progress)
