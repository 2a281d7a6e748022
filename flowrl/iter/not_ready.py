"""``NOT_READY``: the engine-internal "nothing available now" value.

Non-blocking scheduling (``union(deterministic=False)``, ``gather_async`` under a union,
``duplicate`` backpressure, filtered-out items under a union, full or empty queues) passes this
value between engine generators so that a scheduler can move on to another input. User functions
never receive it and the iterator a user drives never yields it.
"""

from __future__ import annotations


class _NotReady:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_READY"

    def __reduce__(self) -> str:
        return "NOT_READY"


NOT_READY = _NotReady()
