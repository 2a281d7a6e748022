"""The HTML plan viewer: escaping, self-containment, embedded JSON, layout (local mode)."""

from __future__ import annotations

import doctest
import html
import itertools
import json
import math
import re
from pathlib import Path

import networkx as nx
import pytest

import flowrl.iter
import flowrl.viz
from flowrl.viz import html as viz_html

REPO = Path(__file__).resolve().parents[2]
DATA = re.compile(r'<script type="application/json" id="plan-data">(.*?)</script>', re.S)


class Named:
    """A callable whose label is its repr (as the algorithms' operators are)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __call__(self, item):
        return item

    def __repr__(self) -> str:
        return self.text


NASTY = "Odd(\"q\" & 'p' </script><script>alert(1)</script> <!-- x)"


@pytest.fixture
def branching_plan(local_executor):
    """from_range -> gather -> duplicate(2) -> (for_each, filter | combine) + source -> union."""
    source = flowrl.iter.from_range(40, num_shards=2).for_each(lambda x: x + 1)
    a, b = source.gather_async().duplicate(2)
    a = a.for_each(Named("ConcatBatches(min_batch_size=4000)")).filter(lambda x: x % 2 == 0)
    b = b.combine(lambda x: [x])
    other = flowrl.iter.from_range(5, num_shards=1).gather_sync().for_each(Named(NASTY))
    return a.union(b, other)


def embedded(page: str) -> dict:
    match = DATA.search(page)
    assert match, "no embedded plan data"
    return json.loads(match.group(1))


def assert_no_overlap(layout: dict) -> None:
    boxes = layout["nodes"]
    for (a, p), (b, q) in itertools.combinations(boxes.items(), 2):
        apart_x = abs(p["x"] - q["x"]) >= (p["w"] + q["w"]) / 2
        apart_y = abs(p["y"] - q["y"]) >= (p["h"] + q["h"]) / 2
        assert apart_x or apart_y, f"boxes {a} and {b} overlap: {p} {q}"


def test_every_label_is_escaped_and_round_trips(branching_plan):
    graph = branching_plan.graph()
    labels = {attrs["label"] for _, attrs in graph.nodes(data=True)}
    assert {"for_each(<lambda>)", "for_each(ConcatBatches(min_batch_size=4000))"} <= labels
    assert f"for_each({NASTY})" in labels
    page = flowrl.viz.to_html(graph, title='my <plan> & "co"')

    assert "<lambda>" not in page and "<script>alert(1)" not in page
    assert page.count("</script>") == page.count("<script")  # no label closes a script
    assert "<!-- x" not in page
    assert "<title>my &lt;plan&gt; &amp; &quot;co&quot;</title>" in page
    data = embedded(page)
    assert {node["label"] for node in data["graph"]["nodes"]} == labels
    for label in labels:  # as they appear in the page: JSON with <, >, & escaped
        text = json.dumps(label, ensure_ascii=False)[1:-1]
        for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
            text = text.replace(char, escape)
        assert text in page


def test_page_is_self_contained(branching_plan, tmp_path):
    for page in (flowrl.viz.to_html(branching_plan.graph()), viz_html.standalone_viewer()):
        assert "http://" not in page and "https://" not in page
        assert not re.search(r"""(src|href)\s*=|@import|url\((?!#)""", page)
        assert page.count("<script") == 2  # the plan data and the one inline script


def test_embedded_json_round_trips_to_the_same_graph(branching_plan, tmp_path):
    _ = branching_plan.take(20)  # with statistics
    graph = branching_plan.graph()
    out = tmp_path / "plan.html"
    page = flowrl.viz.to_html(graph, out)
    assert out.read_text(encoding="utf-8") == page
    data = embedded(page)
    assert data["format"] == "flowrl-plan"
    restored = nx.node_link_graph(data["graph"], directed=True, edges="edges")
    assert set(restored.nodes) == set(graph.nodes)
    assert set(restored.edges) == set(graph.edges)
    for node, attrs in graph.nodes(data=True):
        assert restored.nodes[node]["label"] == attrs["label"]
        assert restored.nodes[node]["items_out"] == attrs["items_out"]
    assert set(data["layout"]["nodes"]) == set(graph.nodes)


def test_to_json_round_trip(branching_plan):
    graph = branching_plan.graph()
    graph.nodes[next(iter(graph.nodes))]["params"] = {"odd": object(), "nan": math.nan, (1, 2): {3}}
    text = flowrl.viz.to_json(graph, title="t")
    restored = flowrl.viz.from_json(text)
    assert isinstance(restored, nx.DiGraph)
    assert set(restored.nodes) == set(graph.nodes) and set(restored.edges) == set(graph.edges)
    assert dict(restored.nodes(data="kind")) == dict(graph.nodes(data="kind"))
    json.loads(text, parse_constant=pytest.fail)  # no NaN/Infinity: JSON.parse must accept it
    with pytest.raises(ValueError, match="not a flowrl plan"):
        flowrl.viz.from_json('{"nodes": []}')


def test_union_duplicate_layout_has_no_overlaps_and_edges_follow_the_data(branching_plan):
    graph = branching_plan.graph()
    kinds = {attrs["kind"] for _, attrs in graph.nodes(data=True)}
    assert {"source", "gather", "duplicate", "union", "transform"} <= kinds
    layout = viz_html.layout(graph)
    positions = [(box["x"], box["y"]) for box in layout["nodes"].values()]
    assert len(set(positions)) == len(positions)
    assert_no_overlap(layout)
    boxes = layout["nodes"]
    assert {(e["source"], e["target"]) for e in layout["edges"]} == set(graph.edges)
    for edge in layout["edges"]:
        source, target = boxes[edge["source"]], boxes[edge["target"]]
        (x0, y0), (x1, y1) = edge["points"][0], edge["points"][-1]
        assert y0 == pytest.approx(source["y"] + source["h"] / 2, abs=0.2)
        assert y1 == pytest.approx(target["y"] - target["h"] / 2, abs=0.2)
        assert abs(x0 - source["x"]) <= source["w"] / 2 and abs(x1 - target["x"]) <= target["w"] / 2
        ys = [y for _, y in edge["points"]]
        assert ys == sorted(ys)  # top to bottom
        for x, y in edge["points"][1:-1]:  # long edges pass between boxes, not through them
            for box in boxes.values():
                inside = abs(x - box["x"]) < box["w"] / 2 and abs(y - box["y"]) < box["h"] / 2
                assert not inside
    for box in boxes.values():
        assert box["x"] - box["w"] / 2 >= 0 and box["x"] + box["w"] / 2 <= layout["width"]
        assert box["y"] + box["h"] / 2 <= layout["height"]


def test_wide_and_long_plans_lay_out_without_overlaps():
    graph = nx.DiGraph()
    for i in range(6):  # six sources feeding one union, one long chain beside them
        graph.add_node(
            f"s{i}", label=f"source_{i}" * (i + 1), kind="source", where="shard", shards=2
        )
        graph.add_edge(f"s{i}", "u")
    for i in range(5):
        graph.add_edge(f"c{i}", f"c{i + 1}")
    graph.add_edge("c5", "u")
    graph.add_edge("s0", "c3")
    for node in graph.nodes:
        graph.nodes[node].setdefault("label", node)
        graph.nodes[node].setdefault("kind", "transform")
    assert_no_overlap(viz_html.layout(graph))


def test_statistics_appear_only_once_the_plan_has_run(branching_plan):
    before = viz_html.layout(branching_plan.graph())
    assert not before["stats"] and all(box["stats"] is None for box in before["nodes"].values())
    _ = branching_plan.take(10)
    after = viz_html.layout(branching_plan.graph())
    assert after["stats"]
    assert all(" out" in box["stats"] for box in after["nodes"].values())


def test_long_labels_wrap_and_boxes_fit_them():
    label = "for_each(TrainOneStep(num_sgd_iter=8, sgd_minibatch_size=128, extra=" + "x" * 80 + "))"
    graph = nx.DiGraph()
    graph.add_node("a", label=label, kind="transform", where="driver")
    box = viz_html.layout(graph)["nodes"]["a"]
    assert 2 <= len(box["lines"]) <= 4  # wrapped, but not into a tall column
    assert all(len(line) <= 46 for line in box["lines"])
    assert box["w"] >= max(len(line) for line in box["lines"]) * 7


def test_cycles_are_rejected():
    graph = nx.DiGraph([("a", "b"), ("b", "a")])
    with pytest.raises(ValueError, match="acyclic"):
        viz_html.layout(graph)


def test_repository_viewer_page_is_the_generated_standalone_viewer():
    page = (REPO / "viz" / "index.html").read_text(encoding="utf-8")
    assert page == viz_html.standalone_viewer(), (
        "viz/index.html is out of date: run python -c "
        "'from flowrl.viz.html import write_standalone_viewer as w; w(\"viz/index.html\")'"
    )
    assert embedded(page.replace('id="plan-data"></script>', 'id="plan-data">{}</script>')) == {}
    assert "<title>flowrl plan viewer</title>" in page


def test_viewer_script_is_shared_not_copied(branching_plan):
    """to_html and the standalone page carry the same script and style, byte for byte."""
    page = flowrl.viz.to_html(branching_plan.graph())
    standalone = viz_html.standalone_viewer()
    script = re.compile(r"<script>\n(.*?)</script>", re.S)
    style = re.compile(r"<style>(.*?)</style>", re.S)
    assert script.search(page).group(1) == script.search(standalone).group(1)
    assert style.search(page).group(1) == style.search(standalone).group(1)
    assert html.escape("flowrl plan") in page


def test_docstring_examples(local_executor):
    for module in (viz_html, flowrl.viz):
        assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0
