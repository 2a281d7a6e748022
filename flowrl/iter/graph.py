"""Plan nodes: the structured record every operator adds, and the networkx view of a plan."""

from __future__ import annotations

import itertools
import types
from typing import Any, Literal

Kind = Literal["source", "transform", "gather", "union", "concurrently", "duplicate", "sink"]
Where = Literal["shard", "driver"]

_ids = itertools.count()


class Node:
    """One operator of a plan: what it is, where it runs, and which nodes feed it.

    ``impl`` carries what the engine needs to run the operator (the user function and its
    settings); everything else is description. ``lineage`` is derived from the records.

    Examples:
        >>> src = Node(op="from_range", label="from_range[4, shards=2]", kind="source",
        ...            parents=(), where="shard", shards=2)
        >>> Node(op="for_each", label="for_each(f)", kind="transform", parents=(src,),
        ...      where="shard", shards=2).lineage
        'from_range[4, shards=2].for_each(f)'
    """

    __slots__ = (
        "id",
        "op",
        "label",
        "kind",
        "parents",
        "params",
        "where",
        "shards",
        "impl",
        "_lineage",
    )

    def __init__(
        self,
        *,
        op: str,
        label: str,
        kind: Kind,
        parents: tuple[Node, ...],
        where: Where,
        shards: int | None,
        params: dict[str, Any] | None = None,
        impl: Any = None,
        lineage: str | None = None,
    ) -> None:
        self.id = f"n{next(_ids)}"
        self.op = op
        self.label = label
        self.kind = kind
        self.parents = parents
        self.params = params or {}
        self.where = where
        self.shards = shards
        self.impl = impl
        self._lineage = lineage

    @property
    def lineage(self) -> str:
        """The plan up to this node as one expression, e.g. ``a.for_each(f).union(b)``."""
        if self._lineage is None:
            if not self.parents:
                self._lineage = self.label
            else:
                self._lineage = f"{self.parents[0].lineage}.{self.label}"
        return self._lineage

    def __getstate__(self) -> dict[str, Any]:
        return {slot: getattr(self, slot) for slot in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for slot, value in state.items():
            setattr(self, slot, value)

    def __repr__(self) -> str:
        return f"Node({self.id}, {self.label!r}, kind={self.kind})"


def callable_label(fn: Any) -> str:
    """How a user callable appears in labels: its name, or its repr if its class defines one.

    Examples:
        >>> def parse_row(x): return x
        >>> callable_label(parse_row), callable_label(lambda x: x)
        ('parse_row', '<lambda>')
    """
    if isinstance(fn, type | types.FunctionType | types.BuiltinFunctionType | types.MethodType):
        return fn.__name__
    if type(fn).__repr__ is not object.__repr__:
        return repr(fn)
    return getattr(fn, "__name__", type(fn).__name__)


def walk(node: Node) -> list[Node]:
    """All nodes feeding ``node`` (itself included), parents before children."""
    seen: dict[str, Node] = {}
    order: list[Node] = []

    def visit(current: Node) -> None:
        if current.id in seen:
            return
        seen[current.id] = current
        for parent in current.parents:
            visit(parent)
        order.append(current)

    visit(node)
    return order


def to_networkx(node: Node, stats: dict[str, dict[str, Any]] | None = None) -> Any:
    """The lineage of ``node`` as a ``networkx.DiGraph``; edges follow the data."""
    import networkx as nx

    graph = nx.DiGraph()
    for current in walk(node):
        attrs = {
            "op": current.op,
            "label": current.label,
            "kind": current.kind,
            "shards": current.shards,
            "where": current.where,
            "params": dict(current.params),
        }
        if stats and current.id in stats:
            attrs.update(stats[current.id])
        graph.add_node(current.id, **attrs)
        for parent in current.parents:
            graph.add_edge(parent.id, current.id)
    return graph
