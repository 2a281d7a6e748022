"""Plan nodes: the structured record every operator adds, and the networkx view of a plan.

Besides the dataflow (each node's ``parents``), an operator may declare *side links* to
things outside the iterator chain that it talks to: the learner thread behind a queue, the
replay actors it stores into, the rollout workers it sends weights to. They are drawn in the
plan graph (dashed) and never change how the plan runs; see :class:`GraphLink`.
"""

from __future__ import annotations

import dataclasses
import itertools
import types
from collections.abc import Hashable
from typing import Any, Literal

Kind = Literal["source", "transform", "gather", "union", "concurrently", "duplicate", "sink"]
Where = Literal["shard", "driver"]
LinkDirection = Literal["to", "from", "is"]
RESOURCE_KIND = "resource"
"""The ``kind`` of a graph node that stands for a side-link resource (not an operator)."""

_ids = itertools.count()


@dataclasses.dataclass(frozen=True)
class GraphLink:
    """A side link of an operator to a resource outside the iterator chain (graph only).

    An operator object (the function given to ``for_each``, a ``PollingSource``, ...) declares
    its links with a method ``graph_links() -> list[GraphLink]``, called each time the plan
    graph is drawn; a source made by ``from_actors(..., graph_links=[...])`` carries them in
    its node. The graph gets one node per distinct resource (``kind="resource"``) and one
    dashed edge per link (edge attributes ``side=True``, ``label=data``). A link with
    ``direction="is"`` says that the operator's own node stands for the resource (a
    ``from_actors`` source *is* its actors): the other links to that resource end there and
    no separate node is drawn.

    Attributes:
        key: The resource's identity: links with the same key meet at one node. Any object
            (compared by identity, e.g. a LearnerThread or a WorkerSet), or a tuple of objects
            (e.g. the replay actors' handles); strings and numbers compare by value.
        label: The resource node's label, e.g. ``"LearnerThread(policy default_policy)"``.
        kind: What the resource is: ``"learner thread"``, ``"replay actors"``,
            ``"rollout workers"``, ...
        direction: ``"to"``: the operator sends ``data`` to the resource; ``"from"``: the
            resource sends ``data`` to the operator; ``"is"``: the operator's node is the
            resource.
        data: What flows, drawn on the edge: ``"batches"``, ``"results"``, ``"weights"``...

    Examples:
        >>> class Store:
        ...     def __init__(self, box): self.box = box
        ...     def __call__(self, item): self.box.append(item); return item
        ...     def graph_links(self):
        ...         return [GraphLink(self.box, "Box", "buffer", "to", "items")]
        >>> from flowrl.iter import LocalIterator
        >>> graph = LocalIterator(lambda: [1], name="src").for_each(Store([])).graph()
        >>> [(graph.nodes[a]["label"], graph.nodes[b]["label"], attrs["label"])
        ...  for a, b, attrs in graph.edges(data=True) if attrs.get("side")]
        [('for_each(Store)', 'Box', 'items')]
    """

    key: Any
    label: str
    kind: str
    direction: LinkDirection = "to"
    data: str = ""

    def __post_init__(self) -> None:
        if self.direction not in ("to", "from", "is"):
            raise ValueError(
                f"GraphLink direction must be 'to', 'from' or 'is'; got {self.direction!r}")


class Node:
    """One operator of a plan: what it is, where it runs, and which nodes feed it.

    ``impl`` carries what the engine needs to run the operator (the user function and its
    settings); everything else is description. ``lineage`` is derived from the records.
    ``links`` are side links the node declares itself (see :class:`GraphLink`); the engine
    never reads them.

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
        "links",
        "group",
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
        links: tuple[GraphLink, ...] = (),
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
        self.links = tuple(links)
        self.group: Any = None  # the OperatorGroup (flowrl.iter.groups) the node belongs to
        self._lineage = lineage

    @property
    def lineage(self) -> str:
        """The plan up to this node as one expression, e.g. ``a.for_each(f).union(b)``."""
        if self._lineage is None:
            if self.group is not None and self.group.output is self:
                self._lineage = self.group.lineage  # an operator call reads as itself
            elif not self.parents:
                self._lineage = self.label
            else:
                self._lineage = f"{self.parents[0].lineage}.{self.label}"
        return self._lineage

    def __getstate__(self) -> dict[str, Any]:
        return {slot: getattr(self, slot) for slot in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.links = ()  # nodes pickled before side links existed
        self.group = None  # ... or before operator groups
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
    """The lineage of ``node`` as a ``networkx.DiGraph``; edges follow the data.

    Every engine node is drawn; a node of an operator group (``flowrl.iter.groups``) carries
    its group's label as ``group`` (``collapse_groups`` draws each group as one node).

    Side links the operators declare (:class:`GraphLink`) add a node per resource
    (``kind="resource"``, ``resource_kind``) and edges with ``side=True`` and their ``label``;
    an operator node that stands for a resource gets ``resource_kind`` too. Side edges may
    point back up the dataflow (weights going back to the workers), so only the dataflow
    (:func:`dataflow_edges`) is guaranteed acyclic.
    """
    import networkx as nx

    graph = nx.DiGraph()
    nodes = walk(node)
    for current in nodes:
        attrs = {
            "op": current.op,
            "label": current.label,
            "kind": current.kind,
            "shards": current.shards,
            "where": current.where,
            "params": dict(current.params),
        }
        if current.group is not None:
            attrs["group"] = current.group.label
        if stats and current.id in stats:
            attrs.update(stats[current.id])
        graph.add_node(current.id, **attrs)
        for parent in current.parents:
            graph.add_edge(parent.id, current.id)
    _add_side_links(graph, [(current.id, link) for current in nodes
                            for link in node_links(current)])
    return graph


def node_operators(node: Node) -> list[Any]:
    """The objects behind one plan node, outermost first: its ``impl`` and what that wraps
    (the function of ``for_each``, ``filter`` and ``combine``: ``impl.fn``; the
    ``PollingSource`` of a polled source: ``impl.source``)."""
    impl = node.impl
    owners = (impl, getattr(impl, "fn", None), getattr(impl, "source", None))
    return [owner for owner in owners if owner is not None]


def node_links(node: Node) -> list[GraphLink]:
    """The side links of one plan node: its own ``links`` and its operator's ``graph_links()``.

    The operator is the node's ``impl`` or what it wraps: the function of ``for_each``,
    ``filter`` and ``combine`` (``impl.fn``), the ``PollingSource`` of a polled source
    (``impl.source``).
    """
    links = list(node.links)
    for owner in node_operators(node):
        declare = getattr(owner, "graph_links", None)
        if callable(declare):
            links.extend(declare())
            break
    for link in links:
        if not isinstance(link, GraphLink):
            raise TypeError(f"{node.label}: graph_links() must return GraphLink objects, got "
                            f"{link!r}")
    return links


def _identity(key: Any) -> Hashable:
    """What makes two links' keys the same resource: objects by identity, tuples by their
    items, strings, numbers and None by value."""
    if isinstance(key, tuple):
        return tuple(_identity(item) for item in key)
    if key is None or isinstance(key, str | int | float | bool):
        return (type(key).__name__, key)
    return ("object", id(key))


def _add_side_links(graph: Any, declared: list[tuple[str, GraphLink]]) -> None:
    owners: dict[Hashable, str] = {}
    resource_ids = (f"r{index}" for index in itertools.count())
    for node_id, link in declared:
        if link.direction == "is":
            owners.setdefault(_identity(link.key), node_id)
            graph.nodes[node_id]["resource_kind"] = link.kind
    for node_id, link in declared:
        if link.direction == "is":
            continue
        identity = _identity(link.key)
        resource = owners.get(identity)
        if resource is None:
            resource = owners[identity] = next(resource_ids)
            graph.add_node(resource, op=link.kind, label=link.label, kind=RESOURCE_KIND,
                           resource_kind=link.kind, shards=None, where=None, params={})
        source, target = (node_id, resource) if link.direction == "to" else (resource, node_id)
        if source == target:
            continue
        existing = graph.get_edge_data(source, target)
        if existing is None:
            graph.add_edge(source, target, side=True, label=link.data)
        elif existing.get("side") and link.data and link.data not in existing["label"]:
            existing["label"] = ", ".join(filter(None, (existing["label"], link.data)))


def dataflow_edges(graph: Any) -> list[tuple[Any, Any]]:
    """The edges of a plan graph that carry items (its side links left out); a DAG."""
    return [(u, v) for u, v, attrs in graph.edges(data=True) if not attrs.get("side")]


def back_edges(graph: Any) -> set[tuple[Any, Any]]:
    """The side edges that point back against the dataflow (adding them would close a cycle,
    e.g. weights going back to the workers that produced the samples); drawings route them
    upwards and do not rank nodes by them. The others (a queue into a learner thread and
    out of it, rows stored into the replay source) order their nodes like dataflow edges.

    Edges of resource nodes (a learner thread) are placed first, so the learner sits between
    the flow that feeds it and the flow that reads it.
    """
    import networkx as nx

    ranked = nx.DiGraph()
    ranked.add_nodes_from(graph.nodes)
    ranked.add_edges_from(dataflow_edges(graph))
    back = set()
    side = [(u, v) for u, v, attrs in graph.edges(data=True) if attrs.get("side")]

    def touches_resource(edge: tuple[Any, Any]) -> bool:
        return any(graph.nodes[n].get("kind") == RESOURCE_KIND for n in edge)

    for source, target in sorted(side, key=lambda edge: not touches_resource(edge)):
        if source == target or nx.has_path(ranked, target, source):
            back.add((source, target))
        else:
            ranked.add_edge(source, target)
    return back
