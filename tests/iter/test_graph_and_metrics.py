"""Plan records: golden reprs, graph shape, per-operator stats and metrics save/restore."""

from __future__ import annotations

import pytest

import flowrl.iter as fi
from flowrl.iter import LocalIterator, MetricsContext, TimerStat
from flowrl.viz import to_dot


def square(x):
    return x * x


class ConcatBatches:
    def __init__(self, min_batch_size):
        self.min_batch_size = min_batch_size

    def __call__(self, x):
        return [x]

    def __repr__(self):
        return f"ConcatBatches(min_batch_size={self.min_batch_size})"


def test_golden_reprs():
    src = fi.from_range(4, num_shards=2)
    assert repr(src.for_each(square)) == "from_range[4, shards=2].for_each(square)"
    chain = src.filter(lambda x: x).batch(2).flatten().combine(ConcatBatches(4000))
    assert repr(chain) == (
        "from_range[4, shards=2].filter(<lambda>).batch(2).flatten()"
        ".combine(ConcatBatches(min_batch_size=4000))"
    )
    assert repr(src.local_shuffle(3, seed=1).repartition(3).select_shards([0, 2])) == (
        "from_range[4, shards=2].local_shuffle(3, seed=1).repartition(3).select_shards([0, 2])"
    )
    items = fi.from_items([1, 2, 3], num_shards=1)
    assert repr(src.union(items)) == "from_range[4, shards=2].union(from_items[3, shards=1])"
    assert repr(src.gather_async(num_async=2).for_each(square, label="sq")) == (
        "from_range[4, shards=2].gather_async(num_async=2).sq"
    )
    assert repr(src.gather_sync().zip_with_source_actor()) == (
        "from_range[4, shards=2].gather_sync().zip_with_source_actor()"
    )
    assert repr(src.batch_across_shards()) == "from_range[4, shards=2].batch_across_shards()"
    assert repr(src.get_shard(1)) == "from_range[4, shards=2].get_shard(1)"
    assert repr(fi.from_actors([], name="Workers").for_each(square)) == ("Workers.for_each(square)")
    local = LocalIterator(lambda: [], name="ParallelRollouts(local)")
    a, b = local.duplicate(2)
    assert repr(a.shuffle(5)) == "ParallelRollouts(local).duplicate(2)[0].shuffle(5, seed=None)"
    assert repr(a.union(b, deterministic=True, round_robin_weights=[1, "*"])) == (
        "ParallelRollouts(local).duplicate(2)[0].union(ParallelRollouts(local).duplicate(2)[1], "
        "deterministic=True, round_robin_weights=[1, '*'])"
    )


def test_graph_of_parallel_plan():
    plan = fi.from_range(4, num_shards=2).for_each(ConcatBatches(4000)).gather_sync()
    graph = plan.for_each(square).graph()
    nodes = [graph.nodes[n] for n in graph.nodes]
    assert [(n["op"], n["kind"], n["where"], n["shards"]) for n in nodes] == [
        ("from_range", "source", "shard", 2),
        ("for_each", "transform", "shard", 2),
        ("gather_sync", "gather", "driver", 2),
        ("for_each", "transform", "driver", None),
    ]
    assert nodes[1]["label"] == "for_each(ConcatBatches(min_batch_size=4000))"
    assert len(graph.edges) == 3 and len(set(graph.nodes)) == 4


def test_union_and_duplicate_make_a_dag():
    import networkx as nx

    source = LocalIterator(lambda: range(4), name="src")
    store, replay = source.duplicate(2)
    plan = store.for_each(square).union(replay.filter(bool), deterministic=True)
    graph = plan.graph()
    assert nx.is_directed_acyclic_graph(graph)
    kinds = sorted(graph.nodes[n]["kind"] for n in graph.nodes)
    assert kinds == ["duplicate", "duplicate", "source", "transform", "transform", "union"]
    src_id = next(n for n in graph.nodes if graph.nodes[n]["kind"] == "source")
    union_id = next(n for n in graph.nodes if graph.nodes[n]["kind"] == "union")
    assert graph.out_degree(src_id) == 2 and graph.in_degree(union_id) == 2
    dot = to_dot(graph)
    assert dot.startswith('digraph "plan" {') and dot.count("->") == len(graph.edges)
    assert '"union(deterministic=True)' in dot


def test_stats_count_items_on_driver_and_shards(executor):
    plan = fi.from_range(200, num_shards=2).filter(lambda x: x % 2 == 0).gather_sync()
    plan = plan.for_each(square).batch(10)
    assert len(plan.take(1000)) == 10
    stats = {s["label"]: s for s in plan.stats().values()}
    assert stats["from_range[200, shards=2]"]["items_out"] == 200
    assert stats["filter(<lambda>)"]["items_in"] == 200
    assert stats["filter(<lambda>)"]["items_out"] == 100
    assert stats["gather_sync()"]["items_out"] == 100
    assert stats["for_each(square)"]["items_in"] == 100
    assert stats["batch(10)"]["items_out"] == 10
    assert stats["for_each(square)"]["time_s"] > 0
    assert stats["for_each(square)"]["throughput"] > 0
    graph = plan.graph()
    assert any(graph.nodes[n].get("items_out") == 10 for n in graph.nodes)


def test_stats_of_a_partly_consumed_fused_chain(local_executor):
    plan = LocalIterator(lambda: range(1000), name="src").for_each(square).filter(bool)
    plan.take(500)
    stats = {s["label"]: s for s in plan.stats().values()}
    assert stats["src"]["items_out"] == 501
    assert stats["for_each(square)"]["items_out"] == 501
    assert stats["filter(bool)"]["items_out"] == 500


def test_metrics_context_save_restore_round_trip():
    metrics = MetricsContext()
    metrics.counters["num_steps_sampled"] += 400
    metrics.timers["learn"].push(0.5)
    metrics.timers["learn"].push_units_processed(100)
    metrics.info["learner"] = {"loss": 1.0}
    restored = MetricsContext()
    restored.restore(metrics.save())
    assert restored.counters["num_steps_sampled"] == 400
    assert restored.timers["learn"].mean == 0.5 and restored.timers["learn"].count == 1
    assert restored.timers["learn"].mean_throughput == pytest.approx(200.0)
    assert restored.info == {"learner": {"loss": 1.0}}
    restored.counters["new"] += 1  # still a defaultdict


def test_timer_context_manager():
    timer = TimerStat()
    with timer:
        pass
    assert timer.count == 1 and timer.mean >= 0


def test_actor_restarts_are_counted_in_metrics(local_executor):
    from flowrl.iter import ParallelIteratorWorker, executor

    workers = [ParallelIteratorWorker([1, 2, 3], repeat=False) for _ in range(2)]
    executor.kill(workers[1])

    def replace(index, error):
        return ParallelIteratorWorker([7], repeat=False)

    plan = fi.from_actors(workers, on_actor_failure=replace).gather_sync()
    assert plan.take(10) == [1, 7, 2, 3]
    assert plan.shared_metrics.get().counters["num_actor_restarts"] == 1


class Doubler:
    """An operator that sends its items somewhere (a side link) as well."""

    def __init__(self, sink):
        self.sink = sink

    def __call__(self, x):
        return 2 * x

    def graph_links(self):
        return [fi.GraphLink(self.sink, "Sink", "sink", "to", "items")]


def six_numbers():
    return range(6)


def paired_source(name="numbers"):
    """A source built from two engine steps and read as one operator, `Pairs()`."""
    return LocalIterator(six_numbers, name=name).batch(2).as_operator("Pairs()")


def test_an_operator_built_from_several_steps_reads_as_the_call(local_executor):
    plan = paired_source().for_each(sum, label="for_each(sum)")
    assert repr(plan) == "Pairs().for_each(sum)"
    assert plan.take(3) == [1, 5, 9]
    graph = plan.graph()
    assert [a["label"] for _, a in graph.nodes(data=True)] == ["Pairs()", "for_each(sum)"]
    group = next(a for _, a in graph.nodes(data=True) if a["label"] == "Pairs()")
    assert group["kind"] == "source" and group["op"] == "operator"
    assert group["internals"] == ["numbers", "batch(2)"]
    assert group["items_out"] == 3  # the group's output: the pairs
    assert list(graph.edges) and all(graph.has_node(n) for e in graph.edges for n in e)
    inside = plan.graph(internals=True)
    assert [a["label"] for _, a in inside.nodes(data=True)] == ["numbers", "batch(2)",
                                                                 "for_each(sum)"]
    assert [a.get("group") for _, a in inside.nodes(data=True)] == ["Pairs()", "Pairs()", None]


def test_an_operator_inside_a_chain_keeps_what_feeds_it(local_executor):
    numbers = LocalIterator(lambda: range(4), name="numbers")
    doubled = numbers.for_each(abs).for_each(Doubler("out")).as_operator(
        "Doubled()", inputs=[numbers])
    assert repr(doubled.batch(2)) == "numbers.Doubled().batch(2)"
    graph = doubled.graph()
    labels = {n: a["label"] for n, a in graph.nodes(data=True)}
    assert sorted(labels.values()) == ["Doubled()", "Sink", "numbers"]
    # The side link of a step inside the operator starts at the operator's node.
    assert [(labels[u], labels[v]) for u, v, a in graph.edges(data=True) if a.get("side")] == [
        ("Doubled()", "Sink")]
    assert [(labels[u], labels[v]) for u, v, a in graph.edges(data=True)
            if not a.get("side")] == [("numbers", "Doubled()")]


def test_grouped_plans_pickle_and_keep_reading_as_written(local_executor):
    import pickle

    plan = pickle.loads(pickle.dumps(paired_source().for_each(sum, label="for_each(sum)")))
    assert repr(plan) == "Pairs().for_each(sum)" and plan.take(2) == [1, 5]
    with pytest.raises(ValueError, match="needs a label"):
        LocalIterator(lambda: [], name="x").as_operator("")

