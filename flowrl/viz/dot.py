"""Renders a plan graph (``it.graph()``) as Graphviz DOT text."""

from __future__ import annotations

from typing import Any

_SHAPES = {
    "source": "invhouse",
    "gather": "trapezium",
    "union": "diamond",
    "concurrently": "diamond",
    "duplicate": "triangle",
    "sink": "house",
    "transform": "box",
    "resource": "box3d",
}
_SIDE_COLOR = "#8d6e14"  # the viewer's --resource-ink


def _quote(text: str) -> str:
    """``text`` as a DOT string: quotes and backslashes escaped, each newline a line break."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


def to_dot(graph: Any, name: str = "plan") -> str:
    """DOT text for a plan graph: one node per operator, labelled, shaped by kind.

    Shard-side operators are filled grey; per-operator counts, time and throughput (items/s:
    ``items_per_s`` from ``flowrl.viz.live.annotate_rates`` when present, else the operator's
    own ``throughput``) appear when the plan has run. Side links (a learner thread, replay
    actors, weights sent back to the workers) are dashed, labelled edges; a resource that is
    no operator (a learner thread) is a 3-D box. Edges back against the dataflow do not
    constrain the ranks, so the dataflow still reads top to bottom.

    Examples:
        >>> import flowrl.iter
        >>> plan = flowrl.iter.from_range(4).for_each(abs)
        >>> print(to_dot(plan.graph()).splitlines()[0])
        digraph "plan" {
    """
    from flowrl.iter.graph import back_edges

    lines = [f"digraph {_quote(name)} {{", "  rankdir=TB;", "  node [fontname=Helvetica];"]
    for node_id, attrs in graph.nodes(data=True):
        label = attrs.get("label", node_id)
        if attrs.get("kind") == "resource":
            label += f"\n({attrs.get('resource_kind', 'resource')})"
        if attrs.get("shards"):
            label += f"\n[{attrs['shards']} shard{'s' if attrs['shards'] != 1 else ''}]"
        if attrs.get("items_out"):
            label += f"\n{attrs['items_out']} items, {attrs.get('time_s', 0.0):.3g} s"
            rate = attrs.get("items_per_s", attrs.get("throughput"))
            if rate:
                label += f"\n{rate:.3g} items/s"
            if attrs.get("time_share") is not None:
                label += f", {100 * attrs['time_share']:.0f}% of time"
        style = ', style=filled, fillcolor="#e8e8e8"' if attrs.get("where") == "shard" else ""
        if attrs.get("kind") == "resource":
            style = f', style="filled,dashed", fillcolor="#f6efd9", color="{_SIDE_COLOR}"'
        shape = _SHAPES.get(attrs.get("kind", "transform"), "box")
        lines.append(f"  {_quote(node_id)} [label={_quote(label)}, shape={shape}{style}];")
    back = back_edges(graph)
    for source, target, attrs in graph.edges(data=True):
        if not attrs.get("side"):
            lines.append(f"  {_quote(source)} -> {_quote(target)};")
            continue
        extra = ", constraint=false" if (source, target) in back else ""
        lines.append(
            f"  {_quote(source)} -> {_quote(target)} [style=dashed, color=\"{_SIDE_COLOR}\", "
            f"fontcolor=\"{_SIDE_COLOR}\", label={_quote(attrs.get('label') or '')}{extra}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
