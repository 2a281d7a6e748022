"""LocalIterator semantics, run on both executors."""

from __future__ import annotations

import pytest

import flowrl.iter as fi
from flowrl.iter import LocalIterator


def numbers(n=6, name="numbers"):
    return LocalIterator(lambda: iter(range(n)), name=name)


def test_transforms(executor):
    assert numbers().for_each(lambda x: x + 1).filter(lambda x: x % 2).take(10) == [1, 3, 5]
    assert numbers(5).batch(2).take(10) == [[0, 1], [2, 3], [4]]
    assert numbers(4).batch(2).flatten().take(10) == [0, 1, 2, 3]
    assert numbers(3).combine(lambda x: [x] * x).take(10) == [1, 2, 2]
    shuffled = numbers(20).shuffle(5, seed=1).take(20)
    assert sorted(shuffled) == list(range(20)) and shuffled == numbers(20).shuffle(5, 1).take(20)


def test_lazy_until_first_next(executor):
    calls = []
    it = LocalIterator(lambda: calls.append("started") or iter([1]), name="src")
    plan = it.for_each(lambda x: calls.append(x) or x)
    assert calls == []
    assert next(plan) == 1
    assert calls == ["started", 1]


def test_duplicate_yields_everything_to_every_child(executor):
    a, b = numbers(4).duplicate(2)
    assert a.union(b, deterministic=True).take(10) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_duplicate_is_bounded(executor):
    a, b = numbers(10).duplicate(2, max_ahead=3)
    assert a.take(3) == [0, 1, 2]
    with pytest.raises(RuntimeError, match="max_ahead=3"):
        next(a)
    assert b.take(20) == list(range(10))  # the sibling still gets every item


def test_duplicate_under_async_union_applies_backpressure(executor):
    a, b = numbers(50).duplicate(2, max_ahead=2)
    merged = a.union(b.filter(lambda x: True)).take(200)
    assert sorted(merged) == sorted(list(range(50)) * 2)


def test_union_deterministic_weights_and_star(executor):
    a, b = numbers(6, "a"), LocalIterator(lambda: iter("wxyz"), name="b")
    weighted = a.union(b, deterministic=True, round_robin_weights=[2, 1])
    assert weighted.take(12) == [0, 1, "w", 2, 3, "x", 4, 5, "y", "z"]
    starred = numbers(4, "a").union(
        LocalIterator(lambda: iter("xy"), name="b"),
        deterministic=True,
        round_robin_weights=[1, "*"],
    )
    assert starred.take(10) == [0, "x", "y", 1, 2, 3]


def test_union_filtered_item_takes_its_turn(executor):
    replay = numbers(6, "replay").filter(lambda x: x >= 4)  # "not ready" until 4
    store = LocalIterator(lambda: iter("abcdef"), name="store")
    merged = store.union(replay, deterministic=True).take(20)
    assert merged == ["a", "b", "c", "d", "e", 4, "f", 5]


def test_union_async_contains_all_items(executor):
    gathered = fi.from_range(10, num_shards=2).gather_async()
    merged = gathered.union(numbers(5, "local")).take(100)
    assert sorted(merged) == sorted(list(range(10)) + list(range(5)))


def test_union_weight_validation(local_executor):
    with pytest.raises(ValueError, match="one weight per input"):
        numbers().union(numbers(), round_robin_weights=[1])
    with pytest.raises(ValueError, match="not every round_robin_weight"):
        numbers().union(numbers(), round_robin_weights=["*", "*"])
    with pytest.raises(ValueError, match="weight=0"):
        numbers().union(numbers(), round_robin_weights=[0, 1])


def test_get_metrics_inside_and_outside_an_operator(executor):
    def count(x):
        metrics = LocalIterator.get_metrics()
        metrics.counters["items"] += 1
        with metrics.timers["work"]:
            pass
        return x

    it = numbers(3).for_each(count)
    assert it.take(3) == [0, 1, 2]
    context = it.shared_metrics.get()
    assert context.counters["items"] == 3 and context.timers["work"].count == 3
    with pytest.raises(RuntimeError, match="only be called inside an operator"):
        LocalIterator.get_metrics()


def test_union_shares_one_metrics_context(executor):
    def bump(x):
        LocalIterator.get_metrics().counters["n"] += 1
        return x

    a, b = numbers(2, "a").for_each(bump), numbers(3, "b").for_each(bump)
    merged = a.union(b, deterministic=True)
    assert len(merged.take(10)) == 5
    assert merged.shared_metrics.get().counters["n"] == 5
    assert a.shared_metrics.get() is merged.shared_metrics.get()


def test_zip_with_source_actor_needs_a_gather(local_executor):
    with pytest.raises(fi.FlowError, match="needs a source actor"):
        numbers().zip_with_source_actor().take(1)


def test_public_constructor_validates(local_executor):
    with pytest.raises(TypeError, match="zero-argument callable"):
        LocalIterator([1, 2], name="bad")
    with pytest.raises(ValueError, match="max_concurrency"):
        numbers().for_each(abs, max_concurrency=0)
