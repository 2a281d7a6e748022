"""Renders a plan graph (``it.graph()``) as a self-contained, interactive HTML page.

The layout (a layered DAG, top to bottom) is computed here in Python and embedded as JSON
next to the graph (``networkx.node_link_data``); the page's one small script only draws it.
That script and the page's CSS live in exactly one place, ``flowrl/viz/viewer.html``:
``to_html`` fills that template with a plan, ``write_standalone_viewer`` writes it empty (a
page that opens plan JSON files written by ``to_json``; the repository's ``viz/index.html``).

No external resources: the page works offline and from ``file://``.

Examples:
    >>> import flowrl.iter
    >>> graph = flowrl.iter.from_range(4).for_each(abs).graph()
    >>> page = to_html(graph, title="abs <demo>")
    >>> page.startswith("<!DOCTYPE html>"), "abs &lt;demo&gt;" in page
    (True, True)
    >>> sorted(from_json(to_json(graph)).nodes) == sorted(graph.nodes)
    True
"""

from __future__ import annotations

import html
import json
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

FORMAT = "flowrl-plan"
VERSION = 1

_TITLE_MARK = "__FLOWRL_TITLE__"
_DATA_MARK = "__FLOWRL_PLAN_DATA__"
_STANDALONE_TITLE = "flowrl plan viewer"

# Box geometry in SVG user units (px at 100%). Labels are set in a monospace font, so their
# width can be estimated from their length; these must agree with viewer.html's CSS.
_CHAR_W = 7.3  # 12px monospace
_SMALL_CHAR_W = 6.4  # 10.5-11px text (meta and stats lines)
_PAD_X = 12
_PAD_Y = 8
_META_H = 14
_LINE_H = 15
_STATS_H = 15
_MIN_W = 120
_MAX_CHARS = 46
_MAX_LINES = 4
_GAP_X = 28  # between boxes of one layer
_GAP_Y = 54  # between layers
_VIRTUAL_W = 16  # the slot a long edge takes in a layer it passes through
_MARGIN = 24
_PORT_GAP = 18  # between arrows entering or leaving one box
_STAT_KEYS = ("items_in", "items_out", "time_s", "throughput")


# -- public API ---------------------------------------------------------------------------------


def to_html(graph: Any, path: str | Path | None = None, title: str = "flowrl plan") -> str:
    """A self-contained HTML page drawing ``graph``; also written to ``path`` when given.

    Boxes are coloured by operator kind and outlined by where the operator runs (a stack of
    cards for shard-side operators, one card for the driver); hover or click a box to see all
    of its attributes. Per-operator statistics appear once the plan has run.

    Examples:
        >>> import flowrl.iter
        >>> page = to_html(flowrl.iter.from_range(2).for_each(abs).graph())
        >>> "http://" in page or "https://" in page
        False
    """
    page = _fill(_template(), title, _embed(plan_data(graph, title=title)))
    if path is not None:
        Path(path).write_text(page, encoding="utf-8")
    return page


def to_json(graph: Any, title: str = "flowrl plan") -> str:
    """The plan as JSON for the standalone viewer: ``node_link_data(graph)`` plus its layout.

    Examples:
        >>> import flowrl.iter
        >>> data = json.loads(to_json(flowrl.iter.from_range(2).graph()))
        >>> data["format"], [n["kind"] for n in data["graph"]["nodes"]]
        ('flowrl-plan', ['source'])
    """
    return json.dumps(plan_data(graph, title=title), indent=1, ensure_ascii=False)


def from_json(text: str) -> Any:
    """The ``networkx.DiGraph`` back from ``to_json`` text (attributes as JSON values)."""
    import networkx as nx

    data = json.loads(text)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"not a flowrl plan JSON document (expected format {FORMAT!r})")
    return nx.node_link_graph(data["graph"], directed=True, multigraph=False, edges="edges")


def plan_data(graph: Any, title: str = "flowrl plan") -> dict[str, Any]:
    """The document ``to_json`` and ``to_html`` embed: format, title, graph and layout."""
    import networkx as nx

    return {
        "format": FORMAT,
        "version": VERSION,
        "title": str(title),
        "graph": _jsonable(nx.node_link_data(graph, edges="edges")),
        "layout": layout(graph),
    }


def write_standalone_viewer(path: str | Path) -> str:
    """Writes the viewer page with no plan in it (it opens ``to_json`` files); returns it.

    The repository's ``viz/index.html`` is this page.
    """
    page = standalone_viewer()
    Path(path).write_text(page, encoding="utf-8")
    return page


def standalone_viewer() -> str:
    """The text of the standalone viewer page (see ``write_standalone_viewer``)."""
    return _fill(_template(), _STANDALONE_TITLE, "")


# -- layout -------------------------------------------------------------------------------------


def layout(graph: Any) -> dict[str, Any]:
    """Positions for a top-to-bottom layered drawing of ``graph``.

    Layers come from ``networkx.topological_generations`` (a source is then moved down to
    sit just above its first consumer); an edge spanning several layers gets a slot in each
    layer it crosses, so it never runs through a box. Within a layer, nodes are ordered by
    the barycentre of their neighbours and pulled towards them without overlapping.

    Side links (edges with ``side=True``: a learner thread between a queue's two ends,
    weights sent back to the rollout workers) are laid out like the dataflow, except those
    that point back against it (``flowrl.iter.graph.back_edges``): they are routed upwards,
    leaving the top of their source and entering the bottom of their target.

    Returns ``{"direction", "width", "height", "nodes": {id: box}, "edges": [...]}`` where a
    box has its centre ``x``, ``y``, size ``w``, ``h``, the wrapped label ``lines``, a ``meta``
    line and a ``stats`` line (None before the plan has run), and an edge its ``points``
    (from its source to its target); a side edge also has ``side``, its ``label``, where to
    write it (``label_at``) and ``back`` (drawn upwards).
    """
    import networkx as nx

    from flowrl.iter.graph import back_edges, dataflow_edges

    flow = nx.DiGraph()
    flow.add_nodes_from(graph.nodes)
    flow.add_edges_from(dataflow_edges(graph))
    if not nx.is_directed_acyclic_graph(flow):
        raise ValueError("a plan graph must be a directed acyclic graph")
    back = back_edges(graph)
    # every edge as it is laid out, top to bottom: (upper, lower, (source, target))
    oriented = [(v, u, (u, v)) if (u, v) in back else (u, v, (u, v))
                for u, v in graph.edges if u != v]
    ranking = nx.DiGraph()
    ranking.add_nodes_from(graph.nodes)
    ranking.add_edges_from((upper, lower) for upper, lower, _ in oriented)
    order = {node: index for index, node in enumerate(graph.nodes)}
    rank = _ranks(ranking)
    above: dict[Any, list[Any]] = {node: [] for node in graph.nodes}
    below: dict[Any, list[Any]] = {node: [] for node in graph.nodes}
    for upper, lower, _ in oriented:
        below[upper].append(lower)
        above[lower].append(upper)
    with_stats = _has_stats(graph)
    boxes: dict[Any, dict[str, Any]] = {}
    for node, attrs in graph.nodes(data=True):
        boxes[node] = box = _box(node, attrs, with_stats)
        ports = max(len(above[node]), len(below[node]))
        box["w"] = max(box["w"], _PORT_GAP * ports + 2 * _PAD_X)  # room for every arrow
    slots, up, down, chains = _slot_graph(oriented, boxes, rank, order)

    num_ranks = max((s["rank"] for s in slots.values()), default=-1) + 1
    layers: list[list[Any]] = [[] for _ in range(num_ranks)]
    for slot in sorted(slots, key=lambda s: (slots[s]["rank"], _slot_order(s, order))):
        layers[slots[slot]["rank"]].append(slot)
    _order_layers(layers, up, down)
    x = _place_x(layers, slots, up, down)

    heights, centre_y, bottom = _layer_rows(layers, slots)
    for node, box in boxes.items():
        box["x"], box["y"] = round(x[node], 1), round(centre_y[rank[node]], 1)
    edges = _edge_paths(graph, chains, x, boxes, slots, centre_y, heights, above, below, back)

    width = max((x[s] + slots[s]["w"] / 2 for s in slots), default=0) + _MARGIN
    height = bottom - _GAP_Y + _MARGIN if layers else 2 * _MARGIN
    return {
        "direction": "TB",
        "width": round(max(width, 2 * _MARGIN), 1),
        "height": round(height, 1),
        "stats": with_stats,
        "nodes": boxes,
        "edges": edges,
    }


def _ranks(graph: Any) -> dict[Any, int]:
    """Layer index per node: topological generations, sources moved down to their consumers."""
    import networkx as nx

    rank: dict[Any, int] = {}
    for index, generation in enumerate(nx.topological_generations(graph)):
        for node in generation:
            rank[node] = index
    for node in graph.nodes:  # sources sit just above their first consumer
        children = list(graph.successors(node))
        if graph.in_degree(node) == 0 and children:
            rank[node] = min(rank[child] for child in children) - 1
    return rank


def _slot_graph(oriented: list, boxes: dict, rank: dict, order: dict) -> tuple:
    """Slots (boxes plus one virtual slot per layer an edge crosses), their links, and chains.

    Each edge becomes a chain of slots through the layers it spans, top to bottom, so no edge
    runs through a box. Returns ``(slots, up, down, chains)``; a chain is
    ``(upper, lower, slots, (source, target))``.
    """
    slots: dict[Any, dict[str, Any]] = {
        node: {"w": box["w"], "h": box["h"], "rank": rank[node], "real": True}
        for node, box in boxes.items()
    }
    up: dict[Any, list[Any]] = {node: [] for node in slots}
    down: dict[Any, list[Any]] = {node: [] for node in slots}
    chains: list[tuple[Any, Any, list[Any], tuple[Any, Any]]] = []
    for upper, lower, edge in sorted(oriented, key=lambda e: (order[e[2][0]], order[e[2][1]])):
        chain = [upper]
        for r in range(rank[upper] + 1, rank[lower]):
            virtual = ("edge", edge[0], edge[1], r)
            slots[virtual] = {"w": _VIRTUAL_W, "h": 0, "rank": r, "real": False}
            up[virtual], down[virtual] = [], []
            chain.append(virtual)
        chain.append(lower)
        for a, b in zip(chain, chain[1:]):
            down[a].append(b)
            up[b].append(a)
        chains.append((upper, lower, chain, edge))
    return slots, up, down, chains


def _layer_rows(layers: list[list[Any]], slots: dict) -> tuple[list[float], list[float], float]:
    """Each layer as tall as its tallest box: (heights, centre y per layer, bottom edge)."""
    heights = [max((slots[s]["h"] for s in layer), default=0) for layer in layers]
    centre_y, top = [], float(_MARGIN)
    for height in heights:
        centre_y.append(top + height / 2)
        top += height + _GAP_Y
    return heights, centre_y, top


def _edge_paths(graph: Any, chains: list, x: dict, boxes: dict, slots: dict,
                centre_y: list[float], heights: list[float], above: dict, below: dict,
                back: set) -> list[dict[str, Any]]:
    """Polyline points per edge, from its source to its target: out of the upper box's
    bottom, down its slots, into the lower box's top (reversed for an edge drawn upwards)."""
    edges = []
    for upper, lower, chain, (source, target) in chains:
        start = (
            x[upper] + _port(upper, lower, out=True, x=x, boxes=boxes, others=below[upper]),
            boxes[upper]["y"] + boxes[upper]["h"] / 2,
        )
        end = (
            x[lower] + _port(upper, lower, out=False, x=x, boxes=boxes, others=above[lower]),
            boxes[lower]["y"] - boxes[lower]["h"] / 2,
        )
        middle = []  # through a layer it crosses: straight down its slot, top to bottom
        for v in chain[1:-1]:
            r = slots[v]["rank"]
            middle += [(x[v], centre_y[r] - heights[r] / 2), (x[v], centre_y[r] + heights[r] / 2)]
        points = [start, *middle, end]
        if (source, target) in back:
            points.reverse()
        edge: dict[str, Any] = {
            "source": source,
            "target": target,
            "points": [[round(px, 1), round(py, 1)] for px, py in points],
        }
        attrs = graph.edges[source, target]
        if attrs.get("side"):
            edge.update(side=True, label=str(attrs.get("label") or ""),
                        back=(source, target) in back, label_at=_halfway(points))
        edges.append(edge)
    return edges


def _halfway(points: list[tuple[float, float]]) -> list[float]:
    """Where a label of the drawn edge goes: the middle of the segment holding half its
    length (each segment is drawn as a symmetric curve through that point)."""
    lengths = [math.dist(a, b) for a, b in zip(points, points[1:])]
    remaining, index = sum(lengths) / 2, 0
    while index < len(lengths) - 1 and remaining > lengths[index]:
        remaining -= lengths[index]
        index += 1
    (x0, y0), (x1, y1) = points[index], points[index + 1]
    return [round((x0 + x1) / 2, 1), round((y0 + y1) / 2, 1)]


def _slot_order(slot: Any, order: dict[Any, int]) -> tuple[int, int]:
    if isinstance(slot, tuple) and len(slot) == 4 and slot[0] == "edge" and slot not in order:
        return (order[slot[1]], order[slot[2]])
    return (order[slot], -1)


def _order_layers(layers: list[list[Any]], up: dict, down: dict) -> None:
    """Barycentre ordering, a few sweeps down and up (fewer crossings)."""

    def sweep(index_range: range, neighbours: dict) -> None:
        for r in index_range:
            reference = layers[r - 1] if neighbours is up else layers[r + 1]
            position = {slot: i for i, slot in enumerate(reference)}
            current = {slot: i for i, slot in enumerate(layers[r])}

            keys = {}
            for slot in layers[r]:
                linked = [position[n] for n in neighbours[slot] if n in position]
                barycentre = sum(linked) / len(linked) if linked else current[slot]
                keys[slot] = (barycentre, current[slot])
            layers[r].sort(key=keys.__getitem__)

    for _ in range(4):
        sweep(range(1, len(layers)), up)
        sweep(range(len(layers) - 2, -1, -1), down)
    sweep(range(1, len(layers)), up)


def _place_x(layers: list[list[Any]], slots: dict, up: dict, down: dict) -> dict[Any, float]:
    """Centre x of every slot: pulled towards its neighbours, never overlapping."""
    x: dict[Any, float] = {}
    for layer in layers:  # start packed
        left = 0.0
        for slot in layer:
            x[slot] = left + slots[slot]["w"] / 2
            left += slots[slot]["w"] + _GAP_X

    def settle(layer: list[Any], neighbours: dict) -> None:
        desired = []
        for slot in layer:
            linked = [x[n] for n in neighbours[slot]]
            desired.append(sum(linked) / len(linked) if linked else x[slot])
        if not layer:
            return
        gap = [(slots[a]["w"] + slots[b]["w"]) / 2 + _GAP_X for a, b in zip(layer, layer[1:])]
        left = list(desired)
        for i in range(1, len(layer)):
            left[i] = max(desired[i], left[i - 1] + gap[i - 1])
        right = list(desired)
        for i in range(len(layer) - 2, -1, -1):
            right[i] = min(desired[i], right[i + 1] - gap[i])
        for i, slot in enumerate(layer):
            x[slot] = (left[i] + right[i]) / 2

    for _ in range(3):
        for layer in layers[1:]:
            settle(layer, up)
        for layer in reversed(layers[:-1]):
            settle(layer, down)
    for layer in layers[1:]:
        settle(layer, up)

    shift = _MARGIN - min((x[s] - slots[s]["w"] / 2 for s in x), default=0.0)
    return {slot: value + shift for slot, value in x.items()}


def _port(upper: Any, lower: Any, *, out: bool, x: dict, boxes: dict,
          others: list[Any]) -> float:
    """Offset from a box's centre where an edge leaves the upper box's bottom (out) or enters
    the lower box's top: spread when several edges share that side."""
    node = upper if out else lower
    if len(others) < 2:
        return 0.0
    others = sorted(others, key=lambda n: x[n])
    index = others.index(lower if out else upper)
    span = min(boxes[node]["w"] - 2 * _PAD_X, _PORT_GAP * (len(others) - 1))
    return -span / 2 + span * index / (len(others) - 1)


# -- boxes --------------------------------------------------------------------------------------


def _has_stats(graph: Any) -> bool:
    """Whether the plan has run: some operator has counted an item or a second."""
    return any(
        isinstance(attrs.get(key), int | float) and attrs.get(key)
        for _, attrs in graph.nodes(data=True)
        for key in ("items_in", "items_out", "time_s")
    )


def _box(node: Any, attrs: dict[str, Any], with_stats: bool) -> dict[str, Any]:
    label = str(attrs.get("label", node))
    lines = wrap_label(label)
    meta = str(attrs.get("kind", "operator"))
    if attrs.get("shards"):
        meta += f" \u00b7 {attrs['shards']} shard{'s' if attrs['shards'] != 1 else ''}"
    elif attrs.get("where"):
        meta += f" \u00b7 {attrs['where']}"
    if attrs.get("resource_kind"):  # a side-link resource, or the operator standing for one
        meta = (str(attrs["resource_kind"]) if attrs.get("kind") == "resource"
                else f"{meta} \u00b7 {attrs['resource_kind']}")
    stats = _stats_line(attrs) if with_stats else None
    chars = max([len(line) for line in lines] + [0])
    width = max(
        _MIN_W,
        chars * _CHAR_W + 2 * _PAD_X,
        len(meta) * _SMALL_CHAR_W + 2 * _PAD_X,
        len(stats or "") * _SMALL_CHAR_W + 2 * _PAD_X,
    )
    height = 2 * _PAD_Y + _META_H + len(lines) * _LINE_H + (_STATS_H if stats else 0)
    return {"w": round(width, 1), "h": height, "lines": lines, "meta": meta, "stats": stats}


def _stats_line(attrs: dict[str, Any]) -> str | None:
    if isinstance(attrs.get("items_per_s"), int | float):
        return _live_stats_line(attrs)
    if not any(key in attrs for key in _STAT_KEYS):
        return None
    parts = [f"{_si(attrs.get('items_out', 0))} out"]
    if attrs.get("time_s"):
        parts.append(_seconds(float(attrs["time_s"])))
    if attrs.get("throughput"):
        parts.append(f"{_si(float(attrs['throughput']))}/s")
    return " \u00b7 ".join(parts)


def _live_stats_line(attrs: dict[str, Any]) -> str:
    """Rates of a running plan (``flowrl.viz.live.annotate_rates``): items/s, the operator's
    own time per item, its share of the iteration, and a queue's fill."""
    parts = [f"{_si(float(attrs['items_per_s']))} items/s"]
    if isinstance(attrs.get("seconds_per_item"), int | float):
        parts.append(f"{_seconds(float(attrs['seconds_per_item']))} each")
    if isinstance(attrs.get("time_share"), int | float):
        parts.append(f"{100 * float(attrs['time_share']):.0f}% of iter")
    if isinstance(attrs.get("queue_size"), int):
        capacity = f"/{attrs['queue_maxsize']}" if attrs.get("queue_maxsize") else ""
        parts.append(f"queue {attrs['queue_size']}{capacity}")
    return " \u00b7 ".join(parts)


def _si(value: float) -> str:
    value = float(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}" if value != int(value) else str(int(value))


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.3g} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} \u00b5s"


_BREAKS = re.compile(r"(?<=[(,.])|(?<=\s)")


def wrap_label(label: str, width: int = _MAX_CHARS, max_lines: int = _MAX_LINES) -> list[str]:
    """Splits a label into lines of at most ``width`` characters, after ``(``, ``,``, spaces...

    Examples:
        >>> wrap_label("for_each(TrainOneStep(num_sgd_iter=8, sgd_minibatch_size=128))")
        ['for_each(TrainOneStep(num_sgd_iter=8, ', 'sgd_minibatch_size=128))']
        >>> wrap_label("for_each(StandardizeFields(fields=['advantages', 'value_targets']))")
        ['for_each(StandardizeFields(', "fields=['advantages', 'value_targets']))"]
    """
    pieces = [p for p in _BREAKS.split(label) if p]
    lines: list[str] = []
    current = ""
    for piece in pieces:
        while len(piece) > width:  # no break inside: cut it
            room = width - len(current)
            if room <= 0:
                lines.append(current)
                current, room = "", width
            current += piece[:room]
            piece = piece[room:]
        if len(current) + len(piece) > width and current:
            lines.append(current)
            current = piece.lstrip() if current else piece
        else:
            current += piece
    if current or not lines:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 1] + "\u2026"
    return lines


# -- page ---------------------------------------------------------------------------------------


def _template() -> str:
    return resources.files("flowrl.viz").joinpath("viewer.html").read_text(encoding="utf-8")


def _fill(template: str, title: str, data: str) -> str:
    """The template with its title marks and its one plan-data mark replaced."""
    if template.count(_DATA_MARK) != 1 or _TITLE_MARK not in template:
        raise RuntimeError(f"viewer.html must contain {_DATA_MARK} once and {_TITLE_MARK}")
    values = {_TITLE_MARK: html.escape(str(title)), _DATA_MARK: data}
    return re.sub(f"{_TITLE_MARK}|{_DATA_MARK}", lambda m: values[m.group(0)], template)


def _embed(data: dict[str, Any]) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&``."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


def _jsonable(value: Any) -> Any:
    """Plain JSON values (JavaScript's JSON.parse rejects NaN; unknown objects become repr)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(item) for item in value]
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return _jsonable(item())
        except (TypeError, ValueError):
            pass
    return repr(value)


__all__ = [
    "from_json",
    "layout",
    "plan_data",
    "standalone_viewer",
    "to_html",
    "to_json",
    "wrap_label",
    "write_standalone_viewer",
]
