"""Overhead of the dataflow engine, each figure a ratio to a hand-written baseline in this run.

1. Five chained ``for_each`` over 10^6 ints on a LocalIterator vs five plain generators
   (time ratio; target <= 1.5).
2. ``gather_async`` over 2 Ray shards yielding 100 KB numpy arrays vs a hand-written
   ``ray.wait`` loop over the same kind of actors (throughput ratio; target >= 0.9).
3. ``gather_sync`` vs a hand-written ``ray.get`` round loop (throughput ratio; target >= 0.9).

Run: ``python benchmarks/iter_overhead.py [--items N] [--arrays M]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import flowrl
from flowrl.iter import LocalIterator, ParallelIteratorWorker, executor, from_actors


def add_one(x: int) -> int:
    return x + 1


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def local_chain(n: int) -> float:
    def plain() -> None:
        items = iter(range(n))
        for _ in range(5):
            items = (add_one(x) for x in items)
        for _ in items:
            pass

    def engine() -> None:
        it = LocalIterator(lambda: range(n), name="range")
        for _ in range(5):
            it = it.for_each(add_one)
        for _ in it:
            pass

    baseline = best_of(3, plain)
    ours = best_of(3, engine)
    print(
        f"[1] local for_each x5 over {n:,} ints: plain {baseline:.3f}s, flowrl {ours:.3f}s, "
        f"time ratio {ours / baseline:.2f}x (target <= 1.5)"
    )
    return ours / baseline


class ArrayWorker(ParallelIteratorWorker):
    """Yields ``count`` arrays of 100 KB."""

    def __init__(self, count: int) -> None:
        array = np.ones(100 * 1024 // 8, dtype=np.float64)
        ParallelIteratorWorker.__init__(self, lambda: (array for _ in range(count)), False)

    def next_array(self):
        return self.par_iter_next()


def ray_wait_loop(actors, count: int) -> None:
    import ray

    for actor in actors:
        ray.get(actor.par_iter_init.remote([], 0, None))
    pending = {actor.next_array.remote(): actor for actor in actors}
    received = 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            actor = pending.pop(ref)
            value = ray.get(ref)
            if isinstance(value, np.ndarray):
                received += 1
                pending[actor.next_array.remote()] = actor
    assert received == count * len(actors)


def ray_get_rounds(actors, count: int) -> None:
    import ray

    for actor in actors:
        ray.get(actor.par_iter_init.remote([], 0, None))
    received = 0
    live = list(actors)
    while live:
        values = ray.get([actor.next_array.remote() for actor in live])
        live = [a for a, v in zip(live, values, strict=True) if isinstance(v, np.ndarray)]
        received += len(live)
    assert received == count * len(actors)


def gathers(count: int) -> tuple[float, float]:
    flowrl.init(local_mode=False, num_cpus=2)
    actors = [executor.create_actor(ArrayWorker, count, num_cpus=0) for _ in range(2)]
    executor.get([executor.call(a, "par_iter_init", [], 0, None) for a in actors])
    total = count * len(actors)

    def engine_async() -> None:
        assert sum(1 for _ in from_actors(actors).gather_async()) == total

    def engine_sync() -> None:
        assert sum(1 for _ in from_actors(actors).gather_sync()) == total

    ratios = []
    for label, baseline_fn, engine_fn in [
        ("[2] gather_async vs ray.wait loop", lambda: ray_wait_loop(actors, count), engine_async),
        ("[3] gather_sync vs ray.get rounds", lambda: ray_get_rounds(actors, count), engine_sync),
    ]:
        baseline = best_of(3, baseline_fn)
        ours = best_of(3, engine_fn)
        ratio = (total / ours) / (total / baseline)
        print(
            f"{label}, {total} x 100 KB arrays: baseline {total / baseline:,.0f} items/s, "
            f"flowrl {total / ours:,.0f} items/s, throughput ratio {ratio:.2f}x "
            "(target >= 0.9)"
        )
        ratios.append(ratio)
    flowrl.shutdown()
    return ratios[0], ratios[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10**6)
    parser.add_argument("--arrays", type=int, default=1000, help="arrays per shard")
    args = parser.parse_args()
    local_chain(args.items)
    gathers(args.arrays)


if __name__ == "__main__":
    main()
