"""Building a plan into nested generators, and driving it with its metrics context.

A plan is built on its first ``next()``: ``open_node`` walks from the final node up through
its per-item operators to the nearest source (a user iterable, a gather, a union, a duplicate,
a polled source), opens that source and stacks the per-item operators on top of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flowrl.iter.fused import fuse
from flowrl.iter.metrics import MetricsContext, current, get_ident
from flowrl.iter.scheduling import Build
from flowrl.iter.transforms import is_transform


def apply_transforms(
    upstream: Iterator[Any], ops: list[Any], build: Build, source: Any = None
) -> Iterator[Any]:
    """Applies per-item operators (records with ``id``, ``label``, ``lineage``, ``impl``).

    ``source`` is ``(wrap_error, stat)`` when ``upstream`` is a raw user iterator: the first
    fused chain then counts its items and attributes its errors (saving a generator layer).
    """
    pending: list[Any] = []
    for op in ops:
        if op.impl.fusable is not None:
            pending.append(op)
            continue
        upstream, source = fuse(upstream, pending, build, source), None
        pending = []
        upstream = op.impl.wrap(upstream, op, build)
    if pending or source is not None:
        upstream = fuse(upstream, pending, build, source)
    return upstream


def open_node(node: Any, build: Build) -> Iterator[Any]:
    """Builds the generator chain that produces ``node``'s items.

    A source impl has ``open(node, build)`` returning its items, or ``open_raw(node, chain,
    build)`` when it applies the per-item operators itself (to count a raw iterator's items).
    """
    chain = []
    while is_transform(node.impl):
        chain.append(node)
        node = node.parents[0]
    chain.reverse()
    if hasattr(node.impl, "open_raw"):
        return node.impl.open_raw(node, chain, build)
    return apply_transforms(node.impl.open(node, build), chain, build)


def drive(iterator: Iterator[Any], context: MetricsContext) -> Iterator[Any]:
    """Runs ``iterator`` with ``context`` as the current metrics while it computes each item."""
    now = current
    mine = (context, get_ident())
    saved = now.state
    now.state = mine
    inside = True
    try:
        for item in iterator:
            now.state = saved
            inside = False
            yield item
            saved = now.state
            now.state = mine
            inside = True
    finally:
        if inside:
            now.state = saved
