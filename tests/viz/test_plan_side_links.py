"""Side links in the plan graph: the learner thread, replay actors and weight broadcasts.

Operators declare links to resources outside the iterator chain (`GraphLink`); the graph
draws them as dashed edges (DOT, the HTML viewer) without changing the dataflow or lineage.
"""

from __future__ import annotations

import itertools
import json
import pickle
import re
import shutil
import subprocess
from html.parser import HTMLParser

import networkx as nx
import pytest

import flowrl
import flowrl.iter as fi
from flowrl.iter import GraphLink, LocalIterator, ParallelIteratorWorker
from flowrl.iter.graph import back_edges, dataflow_edges
from flowrl.testing import CorridorEnv
from flowrl.viz import from_json, to_dot, to_html, to_json
from flowrl.viz import html as viz_html
from flowrl.viz.live import annotate_rates

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SMALL = {"num_envs_per_worker": 1, "rollout_fragment_length": 10, "num_cpus_per_worker": 0,
         "seed": 3, "model": {"fcnet_hiddens": [8]}}


@pytest.fixture(scope="module", autouse=True)
def corridor():
    flowrl.register_env("side_links_corridor", CorridorEnv)


def plan_of(algo: str, **overrides):
    """The algorithm's plan (built, never run) and its graph; the trainer is stopped."""
    trainer = trainer_of(algo, **overrides)
    try:
        return trainer.plan, trainer.plan_graph()
    finally:
        trainer.stop()


def trainer_of(algo: str, **overrides):
    config = {**SMALL, "num_workers": 2, **overrides}
    if algo == "apex":
        config.update(learning_starts=10, buffer_size=1000, max_weight_sync_delay=20)
    if algo == "ppo":
        config.update(train_batch_size=40, sgd_minibatch_size=20)
    if algo == "impala":
        config.update(train_batch_size=40)
    return flowrl.Trainer(algo, env="side_links_corridor", config=config)


def node_labelled(graph, text: str):
    matches = [n for n, attrs in graph.nodes(data=True) if text in attrs["label"]]
    assert len(matches) == 1, (text, [graph.nodes[n]["label"] for n in graph.nodes])
    return matches[0]


def side_edges(graph) -> dict[tuple[str, str], str]:
    """{(source label, target label): edge label} of the side links."""
    return {(graph.nodes[u]["label"], graph.nodes[v]["label"]): attrs["label"]
            for u, v, attrs in graph.edges(data=True) if attrs.get("side")}


def assert_dataflow_unchanged(plan, graph) -> None:
    """The side links add no dataflow: the data edges are the plan's parents, and acyclic,
    in the plan as written and with every engine node (internals)."""
    internal = plan.graph(internals=True)
    operators = [n for n, attrs in internal.nodes(data=True) if attrs["kind"] != "resource"]
    assert sorted(operators) == sorted(plan.stats())
    for drawn in (graph, internal):
        flow = nx.DiGraph(dataflow_edges(drawn))
        assert nx.is_directed_acyclic_graph(flow)
        assert set(flow.edges) == {(u, v) for u, v, a in drawn.edges(data=True)
                                   if not a.get("side")}


def test_impala_graph_has_the_learner_thread_and_weights_back_to_the_workers(local_executor):
    plan, graph = plan_of("impala")
    learner = node_labelled(graph, "LearnerThread(policy default_policy)")
    assert graph.nodes[learner]["kind"] == "resource"
    assert graph.nodes[learner]["resource_kind"] == "learner thread"
    enqueue = node_labelled(graph, "Enqueue(learner.inqueue)")
    dequeue = node_labelled(graph, "Dequeue(learner.outqueue)")
    broadcast = node_labelled(graph, "BroadcastToSourceWorkers")
    # The rollouts read as the plan calls them, and stand for the workers they sample on.
    workers = node_labelled(graph, "ParallelRollouts(mode='async', num_async=2)")
    assert graph.nodes[workers]["kind"] == "source"
    assert graph.nodes[workers]["resource_kind"] == "rollout workers"
    assert graph.edges[enqueue, learner] == {"side": True, "label": "batches"}
    assert graph.edges[learner, dequeue] == {"side": True, "label": "results"}
    assert graph.edges[broadcast, workers] == {"side": True, "label": "weights"}
    assert len(side_edges(graph)) == 3
    assert back_edges(graph) == {(broadcast, workers)}  # the only edge against the flow
    assert_dataflow_unchanged(plan, graph)
    assert "LearnerThread" not in repr(plan)  # the lineage is the dataflow's alone


def test_apex_graph_joins_the_three_flows_through_replay_actors_and_the_learner(
        local_executor):
    plan, graph = plan_of("apex")
    replay = node_labelled(graph, "ReplayActors[shards=2]")
    assert graph.nodes[replay]["resource_kind"] == "replay actors"
    learner = node_labelled(graph, "LearnerThread(policy default_policy)")
    assert [n for n, a in graph.nodes(data=True) if a["kind"] == "resource"] == [learner]
    assert side_edges(graph) == {
        ("for_each(StoreToReplay(replay_actors=2))", "ReplayActors[shards=2]"): "rows",
        ("for_each(UpdatePriorities(replay_actors=2))", "ReplayActors[shards=2]"): "priorities",
        ("for_each(UpdateWorkerWeights(max_weight_sync_delay=20))", "RolloutWorkers"): "weights",
        ("for_each(Enqueue(learner.inqueue))", "LearnerThread(policy default_policy)"):
            "batches",
        ("LearnerThread(policy default_policy)", "Dequeue(learner.outqueue)"): "results",
    }
    # Without the Concurrently node the store, replay and train flows hang together only by
    # their side links: store -> replay actors -> replay -> learner -> train.
    join = node_labelled(graph, "Concurrently")
    assert nx.is_weakly_connected(graph.subgraph(n for n in graph.nodes if n != join))
    assert not nx.is_weakly_connected(nx.DiGraph(dataflow_edges(graph)).subgraph(
        n for n in graph.nodes if n not in (join, learner)))
    assert_dataflow_unchanged(plan, graph)


def test_sync_plans_draw_weights_back_only_when_there_are_remote_workers(local_executor):
    plan, graph = plan_of("ppo")
    assert side_edges(graph) == {
        ("for_each(BroadcastWeights())", "ParallelRollouts(mode='bulk_sync')"): "weights"}
    _, alone = plan_of("ppo", num_workers=0)
    assert side_edges(alone) == {}
    assert all(attrs["kind"] != "resource" for _, attrs in alone.nodes(data=True))
    _, impala_alone = plan_of("impala", num_workers=0)
    assert set(side_edges(impala_alone).values()) == {"batches", "results"}


@pytest.mark.parametrize("algo", ["impala", "apex"])
def test_a_pickled_plan_draws_the_same_side_links(local_executor, algo):
    trainer = trainer_of(algo)
    try:
        graph = trainer.plan_graph()
        restored = pickle.loads(pickle.dumps(trainer.plan)).graph()
    finally:
        trainer.stop()
    assert side_edges(restored) == side_edges(graph)
    assert len(restored.nodes) == len(graph.nodes)


# ---- the mechanism, on a toy plan -------------------------------------------------------------


class StoreInto:
    """An operator that writes into a box outside the plan and says so."""

    def __init__(self, box: list) -> None:
        self.box = box

    def __call__(self, item):
        self.box.append(item)
        return item

    def graph_links(self):
        return [GraphLink(self.box, "Box", "box", "to", "items")]

    def __repr__(self) -> str:
        return "StoreInto()"


class ReadFrom(StoreInto):
    def graph_links(self):
        return [GraphLink(self.box, "Box", "box", "from", "counts")]

    def __repr__(self) -> str:
        return "ReadFrom()"


def test_links_with_one_key_meet_at_one_resource_node_and_is_links_reuse_an_operator(
        local_executor):
    box, other = [], []
    first = LocalIterator(lambda: [1, 2], name="first").for_each(StoreInto(box))
    second = LocalIterator(lambda: [3], name="second").for_each(ReadFrom(box))
    third = LocalIterator(lambda: [4], name="third").for_each(StoreInto(other))
    plan = first.union(second, third, deterministic=True)
    graph = plan.graph()
    resources = [n for n, a in graph.nodes(data=True) if a["kind"] == "resource"]
    assert [graph.nodes[n]["label"] for n in resources] == ["Box", "Box"]  # keyed by identity
    store = next(iter(graph.successors(node_labelled(graph, "first"))))
    read = node_labelled(graph, "ReadFrom")
    assert graph.edges[store, resources[0]]["label"] == "items"
    assert graph.edges[resources[0], read]["label"] == "counts"  # the same box
    assert graph.in_degree(resources[1]) == 1 and graph.out_degree(resources[1]) == 0
    assert plan.take(4) == [1, 3, 4, 2]  # the engine ignores the links

    # a from_actors source that stands for its actors takes the links to them
    actors = [ParallelIteratorWorker([5, 6], repeat=False)]
    key = tuple(actors)
    source = fi.from_actors(actors, name="Boxes",
                            graph_links=[GraphLink(key, "unused", "box actors", "is")])

    class Feed(StoreInto):
        def graph_links(self):
            return [GraphLink(tuple(actors), "unused", "box actors", "to", "feed")]

        def __repr__(self) -> str:
            return "Feed()"

    feeding = LocalIterator(lambda: [0], name="feeder").for_each(Feed([]))
    joined = source.gather_sync().union(feeding, deterministic=True)
    graph = joined.graph()
    boxes = node_labelled(graph, "Boxes")
    assert graph.nodes[boxes]["resource_kind"] == "box actors"
    assert side_edges(graph) == {("for_each(Feed())", "Boxes"): "feed"}
    assert all(a["kind"] != "resource" for _, a in graph.nodes(data=True))
    assert sorted(joined.take(3)) == [0, 5, 6]


def test_graph_link_checks_its_direction_and_graph_links_its_items():
    with pytest.raises(ValueError, match="'to', 'from' or 'is'"):
        GraphLink("k", "K", "thing", "sideways")

    class Wrong:
        def __call__(self, item):
            return item

        def graph_links(self):
            return ["not a link"]

    with pytest.raises(TypeError, match="GraphLink objects"):
        LocalIterator(lambda: [], name="src").for_each(Wrong()).graph()


# ---- drawings -----------------------------------------------------------------------------------


def test_dot_draws_side_links_dashed_and_back_edges_unconstrained(local_executor):
    _, graph = plan_of("impala")
    dot = to_dot(graph)
    assert dot.count("->") == len(graph.edges)
    assert dot.count("style=dashed") == 3
    assert re.search(r'label="weights", constraint=false\]', dot)
    assert re.search(r'label="batches"\]', dot) and re.search(r'label="results"\]', dot)
    assert '"LearnerThread(policy default_policy)\\n(learner thread)", shape=box3d' in dot


def test_layout_routes_back_edges_upwards_and_keeps_boxes_apart(local_executor):
    _, graph = plan_of("apex")
    layout = viz_html.layout(graph)
    boxes = layout["nodes"]
    for (a, p), (b, q) in itertools.combinations(boxes.items(), 2):
        assert (abs(p["x"] - q["x"]) >= (p["w"] + q["w"]) / 2
                or abs(p["y"] - q["y"]) >= (p["h"] + q["h"]) / 2), (a, b)
    assert {(e["source"], e["target"]) for e in layout["edges"]} == set(graph.edges)
    back = back_edges(graph)
    assert len(back) == 2  # priorities to the replay actors, weights to the workers
    for edge in layout["edges"]:
        source, target = boxes[edge["source"]], boxes[edge["target"]]
        ys = [y for _, y in edge["points"]]
        if (edge["source"], edge["target"]) in back:
            assert edge["side"] and edge["back"]
            assert ys == sorted(ys, reverse=True)  # drawn upwards, from the source's top
            assert ys[0] == pytest.approx(source["y"] - source["h"] / 2, abs=0.2)
            assert ys[-1] == pytest.approx(target["y"] + target["h"] / 2, abs=0.2)
        else:
            assert ys == sorted(ys)
        if edge.get("side"):
            assert edge["label"] and len(edge["label_at"]) == 2
        else:
            assert "side" not in edge
    learner = node_labelled(graph, "LearnerThread")
    enqueue, dequeue = node_labelled(graph, "Enqueue"), node_labelled(graph, "Dequeue")
    assert boxes[enqueue]["y"] < boxes[learner]["y"] < boxes[dequeue]["y"]
    assert boxes[learner]["meta"] == "learner thread"


def test_json_and_live_rates_keep_side_links_apart_from_operators(local_executor):
    _, graph = plan_of("impala")
    restored = from_json(to_json(graph))
    assert side_edges(restored) == side_edges(graph)
    result = {"time_total_s": 2.0, "time_this_iter_s": 1.0}
    annotated = annotate_rates(graph, result)
    for _, attrs in annotated.nodes(data=True):
        assert ("items_per_s" in attrs) == (attrs["kind"] != "resource")
    page = to_html(graph, title="impala")
    data = json.loads(re.search(r'id="plan-data">(.*?)</script>', page, re.S).group(1))
    assert sum(1 for e in data["layout"]["edges"] if e.get("side")) == 3


class DrawnEdges(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.side: list[str] = []
        self.plain = 0
        self.edge_labels: list[str] = []
        self.resources: list[str] = []
        self._in_label = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "path" and "edge" in classes:
            if "side" in classes:
                self.side.append(attributes.get("data-label", ""))
            else:
                self.plain += 1
        elif tag == "g" and "kind-resource" in classes:
            self.resources.append(attributes["data-label"])
        self._in_label = tag == "text" and "edge-label" in classes

    def handle_endtag(self, tag):
        self._in_label = False

    def handle_data(self, data):
        if self._in_label:
            self.edge_labels.append(data)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y "
                    "chromium; .ci/run installs it)")
def test_the_viewer_draws_side_links_dashed_in_a_browser(local_executor, tmp_path):
    _, graph = plan_of("impala")
    page = tmp_path / "impala.html"
    to_html(graph, page, title="impala")
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
               "--virtual-time-budget=2000", "--dump-dom", page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    drawn = DrawnEdges()
    drawn.feed(done.stdout)
    assert sorted(drawn.side) == ["batches", "results", "weights"]
    assert sorted(drawn.edge_labels) == ["batches", "results", "weights"]
    assert drawn.plain == len(dataflow_edges(graph))
    assert drawn.resources == ["LearnerThread(policy default_policy)"]
    assert "9 operators, 8 edges, 3 side links" in done.stdout
