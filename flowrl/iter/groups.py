"""Operator groups: the chain one user-level operator builds, shown as that operator.

A source such as ``ParallelRollouts(workers, mode="bulk_sync")`` builds several engine nodes
(the actors' shards, a gather, a concatenation, a counter). The plan reads as the call the user
wrote, so the chain is marked as one group: the group's output node takes the group's label in
its lineage, and ``graph()`` draws the group as one node. ``graph(internals=True)`` draws every
engine node, each with the ``group`` it belongs to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flowrl.iter.graph import RESOURCE_KIND, Node, to_networkx, walk


class OperatorGroup:
    """The nodes one operator call built: their label, what feeds them, and their output.

    Attributes:
        label: how the call reads in the plan, e.g. ``"ParallelRollouts(mode='bulk_sync')"``.
        entry: the node feeding the group (its lineage prefixes the label); None for a source.
        output: the group's last node, whose items leave it.

    Examples:
        >>> from flowrl.iter import LocalIterator
        >>> rows = LocalIterator(lambda: range(3), name="range3").for_each(abs).as_operator(
        ...     "Rows()")
        >>> repr(rows.for_each(str))
        'Rows().for_each(str)'
        >>> [data["label"] for _, data in rows.graph().nodes(data=True)]
        ['Rows()']
        >>> [data["label"] for _, data in rows.graph(internals=True).nodes(data=True)]
        ['range3', 'for_each(abs)']
    """

    __slots__ = ("label", "entry", "output")

    def __init__(self, label: str, entry: Node | None, output: Node) -> None:
        self.label = label
        self.entry = entry
        self.output = output

    @property
    def lineage(self) -> str:
        """The plan up to the group's output, the group read as one operator."""
        return self.label if self.entry is None else f"{self.entry.lineage}.{self.label}"

    def __repr__(self) -> str:
        return f"OperatorGroup({self.label!r})"


def mark_group(output: Node, label: str, inputs: Sequence[Node] = ()) -> OperatorGroup:
    """Marks the nodes between ``inputs`` (excluded) and ``output`` as one operator.

    A node already in a group joins the new, outer one: an operator built from other
    operators reads as itself.

    Raises:
        ValueError: an empty label.
    """
    if not label:
        raise ValueError("An operator group needs a label (how the call reads in the plan).")
    outside = {node.id for source in inputs for node in walk(source)}
    group = OperatorGroup(label, inputs[0] if inputs else None, output)
    for node in walk(output):
        if node.id not in outside:
            node.group = group
    output._lineage = None  # read as the group from now on
    return group


def plan_graph(node: Node, stats: dict[str, dict[str, Any]] | None = None, *,
               internals: bool = False) -> Any:
    """The plan ending at ``node`` as a ``networkx.DiGraph``: every operator group one node
    (as the plan reads), or every engine node with ``internals=True``."""
    graph = to_networkx(node, stats)
    return graph if internals else collapse_groups(graph, walk(node))


def collapse_groups(graph: Any, nodes: Sequence[Node]) -> Any:
    """``graph`` (of the plan ``nodes``) with every operator group drawn as one node.

    The group's node keeps its output node's id, takes the group's label and ``op``
    ``"operator"``, lists its members' labels in ``internals``, and sums their time; items in
    are the first member's, items out the output's. Edges between members disappear; edges
    into or out of the group, side links included, now end at the group's node.
    """
    import networkx as nx

    representative = {node.id: node.group.output.id for node in nodes if node.group is not None}
    if not representative:
        return graph
    collapsed = nx.DiGraph()
    members: dict[str, list[str]] = {}
    for node_id, attrs in graph.nodes(data=True):
        target = representative.get(node_id, node_id)
        members.setdefault(target, []).append(node_id)
        if target == node_id:
            collapsed.add_node(node_id, **attrs)
        elif not collapsed.has_node(target):
            collapsed.add_node(target)
    for source, target, attrs in graph.edges(data=True):
        source, target = representative.get(source, source), representative.get(target, target)
        if source != target and not collapsed.has_edge(source, target):
            collapsed.add_edge(source, target, **attrs)
    by_id = {node.id: node for node in nodes}
    for target, ids in members.items():
        if target in by_id and by_id[target].group is not None and len(ids) > 1:
            collapsed.nodes[target].update(
                _group_attributes(by_id[target].group, [graph.nodes[i] for i in ids]))
    return collapsed


def _group_attributes(group: OperatorGroup, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Node attributes of a collapsed group, from its members' (parents before children)."""
    output = parts[-1]
    attrs = dict(output)
    attrs.update(op="operator", label=group.label, params={},
                 internals=[part.get("label") for part in parts])
    if group.entry is None:
        attrs["kind"] = "source"
    if "time_s" in output:
        seconds = sum(part.get("time_s", 0.0) for part in parts)
        attrs["time_s"] = seconds
        attrs["items_in"] = parts[0].get("items_in", 0)
        attrs["throughput"] = attrs.get("items_out", 0) / seconds if seconds > 0 else 0.0
    kinds = [part["resource_kind"] for part in parts if part.get("resource_kind")
             and part.get("kind") != RESOURCE_KIND]
    if kinds:
        attrs["resource_kind"] = kinds[0]
    return attrs


def group_internals(node: Node) -> list[tuple[str, str]]:
    """(label, engine steps) of every operator group in the plan ending at ``node``, the
    steps written as a lineage, e.g. ``("ParallelRollouts(mode='bulk_sync')",
    "RolloutWorkers.batch_across_shards().for_each(concat_samples)...")``."""
    described: dict[int, tuple[str, str]] = {}
    for current in walk(node):
        group = current.group
        if group is not None and id(group) not in described:
            described[id(group)] = (group.label, _steps(group.output, group))
    return list(described.values())


def _steps(node: Node, group: OperatorGroup) -> str:
    """The lineage of ``node`` inside ``group``, each member by its own label."""
    parent = node.parents[0] if node.parents else None
    if parent is None or parent.group is not group:
        return node.label
    return f"{_steps(parent, group)}.{node.label}"
