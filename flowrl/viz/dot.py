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
}


def _quote(text: str) -> str:
    """``text`` as a DOT string: quotes and backslashes escaped, each newline a line break."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


def to_dot(graph: Any, name: str = "plan") -> str:
    """DOT text for a plan graph: one node per operator, labelled, shaped by kind.

    Shard-side operators are filled grey; per-operator counts, time and throughput (items/s:
    ``items_per_s`` from ``flowrl.viz.live.annotate_rates`` when present, else the operator's
    own ``throughput``) appear when the plan has run.

    Examples:
        >>> import flowrl.iter
        >>> plan = flowrl.iter.from_range(4).for_each(abs)
        >>> print(to_dot(plan.graph()).splitlines()[0])
        digraph "plan" {
    """
    lines = [f"digraph {_quote(name)} {{", "  rankdir=TB;", "  node [fontname=Helvetica];"]
    for node_id, attrs in graph.nodes(data=True):
        label = attrs.get("label", node_id)
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
        shape = _SHAPES.get(attrs.get("kind", "transform"), "box")
        lines.append(f"  {_quote(node_id)} [label={_quote(label)}, shape={shape}{style}];")
    for source, target in graph.edges():
        lines.append(f"  {_quote(source)} -> {_quote(target)};")
    lines.append("}")
    return "\n".join(lines) + "\n"
