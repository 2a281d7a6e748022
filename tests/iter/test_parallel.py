"""ParallelIterator semantics, run on both executors."""

from __future__ import annotations

import flowrl.iter as fi
from flowrl.iter import ParallelIteratorWorker, executor


def square(x):
    return x * x


class RunningSum:
    """Stateful: state must be kept per shard."""

    def __init__(self):
        self.total = 0

    def __call__(self, x):
        self.total += x
        return self.total

    def __repr__(self):
        return "RunningSum()"


def test_sources_and_gather_sync_order(executor):
    assert fi.from_range(6, num_shards=2).gather_sync().take(10) == [0, 3, 1, 4, 2, 5]
    assert fi.from_items([1, 2, 3, 4, 5], num_shards=2).gather_sync().take(10) == [1, 2, 3, 4, 5]
    generators = fi.from_iterators([lambda: iter("ab"), [1, 2, 3]], name="gens")
    assert generators.gather_sync().take(10) == ["a", 1, "b", 2, 3]
    assert fi.from_items([7], num_shards=1, repeat=True).gather_sync().take(3) == [7, 7, 7]


def test_transforms_on_shards(executor):
    it = fi.from_range(8, num_shards=2).for_each(square).filter(lambda x: x % 2 == 0)
    assert it.gather_sync().take(10) == [0, 16, 4, 36]
    assert fi.from_range(4, num_shards=2).batch(2).gather_sync().take(5) == [[0, 1], [2, 3]]
    flat = fi.from_items([[1, 2], [3]], num_shards=1).flatten()
    assert flat.gather_sync().take(5) == [1, 2, 3]
    combined = fi.from_range(2, num_shards=1).combine(lambda x: [x] * (x + 1))
    assert combined.gather_sync().take(5) == [0, 1, 1]


def test_stateful_callable_keeps_state_per_shard(executor):
    it = fi.from_range(6, num_shards=2).for_each(RunningSum())
    assert it.gather_sync().take(6) == [0, 3, 1, 7, 3, 12]


def test_batch_across_shards_is_a_barrier_that_drops_finished_shards(executor):
    it = fi.from_iterators([[1, 2, 3], [10]])
    assert it.batch_across_shards().take(5) == [[1, 10], [2], [3]]


def test_gather_async_yields_every_item(executor):
    items = fi.from_range(20, num_shards=2).for_each(square).gather_async(num_async=3).take(100)
    assert sorted(items) == [x * x for x in range(20)]


def test_union_select_shards_repartition(executor):
    a = fi.from_range(4, num_shards=2)
    b = fi.from_items(["x", "y"], num_shards=1)
    union = a.union(b)
    assert union.num_shards() == 3
    assert union.for_each(str).gather_sync().take(10) == ["0", "2", "x", "1", "3", "y"]
    assert a.select_shards([1]).gather_sync().take(5) == [2, 3]
    assert fi.from_range(6, num_shards=1).repartition(2).gather_sync().take(10) == [
        0,
        1,
        2,
        3,
        4,
        5,
    ]
    assert fi.from_range(4, num_shards=2).repartition(3).num_shards() == 3


def test_shards_get_shard_take_show(executor, capsys):
    it = fi.from_range(4, num_shards=2)
    assert [shard.take(5) for shard in it.shards()] == [[0, 1], [2, 3]]
    assert it.get_shard(1).take(1) == [2]
    assert it.take(3) == [0, 2, 1]
    it.show(2)
    assert capsys.readouterr().out == "0\n2\n"


def test_local_shuffle_is_seeded_and_identical_across_executors(executor):
    shuffled = fi.from_range(10, num_shards=1).local_shuffle(4, seed=3).gather_sync().take(10)
    assert sorted(shuffled) == list(range(10))
    assert shuffled == [1, 0, 2, 3, 4, 7, 6, 8, 5, 9] or shuffled != list(range(10))
    again = fi.from_range(10, num_shards=1).local_shuffle(4, seed=3).gather_sync().take(10)
    assert shuffled == again


class Sampler(ParallelIteratorWorker):
    """Yields its current weight; the driver updates it between items (weight sync)."""

    def __init__(self):
        self.weight = 0
        ParallelIteratorWorker.__init__(self, self._samples, repeat=False)

    def _samples(self):
        for _ in range(4):
            yield self.weight

    def set_weight(self, weight):
        self.weight = weight
        return weight


def test_fn_runs_before_next_item_is_requested_from_same_shard(executor):
    """Downstream of a gather, fn(x_i) completes before x_{i+1} is requested (num_async=1)."""
    from flowrl.iter import executor as ex

    workers = [ex.create_actor(Sampler, num_cpus=0) for _ in range(2)]

    def sync_weights(pair):
        actor, weight = pair
        ex.get(ex.call(actor, "set_weight", weight + 1))
        return weight

    for gather in ("gather_sync", "gather_async"):
        for worker in workers:
            ex.get(ex.call(worker, "set_weight", 0))
        it = getattr(fi.from_actors(workers), gather)().zip_with_source_actor()
        seen = it.for_each(sync_weights).take(100)
        assert sorted(seen) == [0, 0, 1, 1, 2, 2, 3, 3], gather


def test_zip_with_source_actor_names_shard_object(executor):
    workers = [executor_create(ParallelIteratorWorker, [1, 2], False) for _ in range(2)]
    pairs = fi.from_actors(workers).gather_async().zip_with_source_actor().take(10)
    assert sorted(item for _, item in pairs) == [1, 1, 2, 2]
    assert all(any(actor is w for w in workers) or executor == "ray" for actor, _ in pairs)


def executor_create(cls, *args):
    return executor.create_actor(cls, *args, num_cpus=0)


def test_for_each_with_max_concurrency_keeps_order(executor):
    it = fi.from_range(6, num_shards=1).for_each(square, max_concurrency=3)
    assert it.gather_sync().take(10) == [x * x for x in range(6)]
    local = fi.LocalIterator(lambda: range(5), name="src").for_each(square, max_concurrency=2)
    assert local.take(10) == [0, 1, 4, 9, 16]


def test_iterating_without_gather_says_how_to_fix(local_executor):
    import pytest

    with pytest.raises(TypeError, match=r"gather_sync\(\)"):
        iter(fi.from_range(4))
