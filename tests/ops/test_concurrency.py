"""Concurrently, Enqueue and Dequeue: several flows in one plan, queues that never hang it."""

from __future__ import annotations

import queue
import threading
import time

import pytest

import flowrl
import flowrl.iter as fi
from flowrl.iter import LocalIterator
from flowrl.ops import Concurrently, Dequeue, Enqueue, WatchedQueue


def numbers(n=6):
    """A flow served by a shard: a Ray actor, or a plain object in local mode."""
    return fi.from_range(n, num_shards=1).gather_sync()


def letters(text="xyz"):
    return LocalIterator(lambda: text, name="letters")


def test_round_robin_follows_the_weights(executor):
    plan = Concurrently([numbers(), letters()], round_robin_weights=[2, 1])
    assert plan.take(9) == [0, 1, "x", 2, 3, "y", 4, 5, "z"]
    assert Concurrently([numbers(2), letters()]).take(5) == [0, "x", 1, "y", "z"]


def test_round_robin_star_takes_what_is_ready(executor):
    plan = Concurrently([letters("abc"), numbers(3)], round_robin_weights=["*", 1])
    assert plan.take(6) == ["a", "b", "c", 0, 1, 2]


def test_async_delivers_every_item(executor):
    plan = Concurrently([fi.from_range(10, num_shards=2).gather_async(), letters()], mode="async")
    assert sorted(map(str, plan.take(20))) == sorted([str(i) for i in range(10)] + list("xyz"))


def test_output_indexes_hide_items_but_their_flows_still_run(executor):
    stored = []
    store = numbers(4).for_each(stored.append)
    plan = Concurrently([store, letters("abcd")], mode="round_robin", output_indexes=[1])
    assert plan.take(4) == ["a", "b", "c", "d"]
    assert stored == [0, 1, 2, 3]


def test_concurrently_is_one_node_joining_its_inputs(local_executor):
    plan = Concurrently(
        [numbers(), letters()], mode="round_robin", output_indexes=[1], round_robin_weights=[1, 2]
    )
    graph = plan.graph()
    joins = [n for n, data in graph.nodes(data=True) if data["kind"] == "concurrently"]
    assert len(joins) == 1 and graph.in_degree(joins[0]) == 2
    data = graph.nodes[joins[0]]
    assert data["op"] == "Concurrently"
    assert data["params"] == {
        "mode": "round_robin",
        "output_indexes": [1],
        "round_robin_weights": [1, 2],
    }
    assert repr(plan) == (
        "Concurrently([from_range[6, shards=1].gather_sync(), letters], mode='round_robin', "
        "output_indexes=[1], round_robin_weights=[1, 2])"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"iterators": []}, ValueError, "at least one flow"),
        ({"mode": "fastest"}, ValueError, "mode must be one of"),
        ({"mode": "async", "round_robin_weights": [1, 1]}, ValueError, "not allowed"),
        ({"round_robin_weights": [1]}, ValueError, "one weight per input: got 1 weights for 2"),
        ({"round_robin_weights": ["*", "*"]}, ValueError, "not every round_robin_weight"),
        ({"round_robin_weights": [0, 1]}, ValueError, "int >= 1 or '\\*'"),
        ({"output_indexes": [2]}, ValueError, "out of range: index=2"),
        ({"iterators": letters()}, TypeError, "takes a list of LocalIterators"),
    ],
)
def test_bad_arguments_say_what_is_wrong(kwargs, error, message):
    arguments = {"iterators": [letters(), letters()], **kwargs}
    with pytest.raises(error, match=message):
        Concurrently(**arguments)


def test_enqueue_on_a_full_queue_does_not_hang_the_plan(executor):
    box = queue.Queue(maxsize=2)
    produce = fi.from_range(20, num_shards=2).gather_async().for_each(Enqueue(box))
    for mode in ("async", "round_robin"):
        consume = Dequeue(box, timeout_s=30)
        plan = Concurrently([produce, consume], mode=mode, output_indexes=[1])
        assert sorted(plan.take(20)) == list(range(20))
        assert box.qsize() == 0


def test_enqueue_waits_for_a_slow_consumer_thread_without_spinning(local_executor):
    box: queue.Queue = queue.Queue(maxsize=1)
    taken = []

    def consumer():
        for _ in range(5):
            time.sleep(0.02)
            taken.append(box.get(timeout=5))

    thread = threading.Thread(target=consumer, daemon=True)
    thread.start()
    step = Enqueue(box)
    tries = []
    original = step.try_apply
    step.try_apply = lambda item: tries.append(item) or original(item)
    assert LocalIterator(lambda: range(5), name="src").for_each(step).take(5) == [0, 1, 2, 3, 4]
    thread.join(5)
    assert taken == [0, 1, 2, 3, 4]
    assert len(tries) < 100  # blocked on the queue between tries, not polling in a loop


def test_queue_fill_levels_appear_in_stats_and_graph(local_executor):
    box = queue.Queue(maxsize=8)
    box.put("waiting")
    plan = LocalIterator(lambda: [1, 2], name="src").for_each(Enqueue(box))
    assert plan.take(2) == [1, 2]
    entry = {s["label"]: s for s in plan.stats().values()}["for_each(Enqueue(Queue(maxsize=8)))"]
    assert (entry["queue_size"], entry["queue_maxsize"], entry["items_out"]) == (3, 8, 2)
    reader = Dequeue(box)
    assert reader.take(2) == ["waiting", 1]
    node = next(data for _, data in reader.graph().nodes(data=True))
    assert node["label"] == "Dequeue(Queue(maxsize=8))" and node["op"] == "Dequeue"
    assert (node["queue_size"], node["queue_maxsize"]) == (1, 8)


def test_dequeue_starvation_names_the_producer_side(executor):
    empty = WatchedQueue(4, name="results", timeout_s=0.2)
    plan = Concurrently([numbers(2), Dequeue(empty)], mode="async", output_indexes=[1])
    start = time.monotonic()
    with pytest.raises(flowrl.FlowError) as info:
        plan.take(1)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert message.startswith("Dequeue(results) failed on the driver: TimeoutError")
    assert "no item arrived on results" in message and "producer side is not producing" in message


def test_enqueue_starvation_names_the_consumer_side(local_executor):
    full = queue.Queue(maxsize=1)
    plan = LocalIterator(lambda: range(3), name="src").for_each(Enqueue(full, timeout_s=0.1))
    with pytest.raises(flowrl.FlowError) as info:
        plan.take(3)
    message = str(info.value)
    assert "stayed full (1/1)" in message and "consumer side is starving" in message
    assert "for_each(Enqueue(Queue(maxsize=1)))" in message


def test_dequeue_check_errors_fail_the_plan(executor):
    def check():
        raise RuntimeError("the learner thread died")

    plan = Concurrently([numbers(), Dequeue(queue.Queue(), check=check)], mode="async")
    with pytest.raises(flowrl.FlowError, match="the learner thread died"):
        plan.take(100)


def test_queue_arguments_are_checked():
    with pytest.raises(TypeError, match="needs a queue.Queue"):
        Enqueue([])
    with pytest.raises(ValueError, match="timeout_s > 0"):
        Dequeue(queue.Queue(), timeout_s=0)
    with pytest.raises(TypeError, match="zero-argument callable"):
        Dequeue(queue.Queue(), check=True)
