"""Actor primitives and actor-failure handling on both executors."""

from __future__ import annotations

import time

import pytest

import flowrl
import flowrl.iter as fi
from flowrl.iter import ActorDiedError, ParallelIteratorWorker


class Counter:
    def __init__(self, start):
        self.value = start

    def add(self, n):
        self.value += n
        return self.value

    def fail(self):
        raise ValueError("nope")


def test_actor_primitives(executor):
    from flowrl.iter import executor as ex

    counter = ex.create_actor(Counter, 10, num_cpus=0)
    future = ex.call(counter, "add", 5)
    ready, pending = ex.wait([future], num_returns=1, timeout=10)
    assert ready == [future] and pending == []
    assert ex.get(future) == 15
    assert ex.get([ex.call(counter, "add", 1), ex.call(counter, "add", 1)]) == [16, 17]
    assert ex.get(ex.call(counter, "add", ex.put(3))) == 20
    with pytest.raises(ValueError, match="nope"):
        ex.get(ex.call(counter, "fail"))
    ex.kill(counter)
    with pytest.raises(ActorDiedError):
        for _ in range(50):  # a Ray kill takes effect asynchronously
            ex.get(ex.call(counter, "add", 1))
            time.sleep(0.1)
    assert flowrl.is_local_mode() == (executor == "local")


def test_init_is_idempotent_and_local_mode_keeps_ray(ray_session):
    flowrl.init(local_mode=False)
    flowrl.init(local_mode=False)
    flowrl.init(local_mode=True)
    assert ray_session.is_initialized() and flowrl.is_local_mode()
    flowrl.init(local_mode=False)
    assert not flowrl.is_local_mode()


class Slow(ParallelIteratorWorker):
    def __init__(self, tag):
        ParallelIteratorWorker.__init__(self, lambda: (f"{tag}{i}" for i in range(1000)), False)

    def ready(self):
        return True


@pytest.mark.parametrize("gather", ["gather_sync", "gather_async"])
def test_dead_actor_is_replaced_or_dropped(executor, gather):
    from flowrl.iter import executor as ex

    for replacement_tag in ("r", None):
        workers = [ex.create_actor(Slow, tag, num_cpus=0) for tag in ("a", "b")]
        # Both actors must be up, or under load gather_async may serve only the first one.
        ex.get([ex.call(w, "ready") for w in workers])
        calls = []

        def on_failure(index, error, tag=replacement_tag, calls=calls):
            calls.append((index, type(error).__name__))
            return None if tag is None else ex.create_actor(Slow, tag, num_cpus=0)

        plan = getattr(fi.from_actors(workers, on_actor_failure=on_failure), gather)()
        plan = plan.for_each(str.upper)
        first = plan.take(4)
        assert {"A0", "B0"} <= set(first)
        ex.kill(workers[1])
        # A kill takes effect asynchronously: read on (bounded by time, not by an item count,
        # since the live actor may deliver many items first) until the failure was handled
        # and, with a replacement, the replacement has produced.
        after_failure, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline:
            item = next(plan)
            if calls:
                after_failure.append(item)
            if len(after_failure) >= 10 and (not replacement_tag or item.startswith("R")):
                break
        assert calls == [(1, "ActorDiedError")]
        if replacement_tag:
            assert any(item.startswith("R") for item in after_failure)
            assert plan.shared_metrics.get().counters["num_actor_restarts"] == 1
        else:
            assert all(item.startswith("A") for item in after_failure)


def test_dead_actor_without_callback_raises_flow_error_naming_shard(executor):
    from flowrl.iter import executor as ex

    workers = [ex.create_actor(Slow, tag, num_cpus=0) for tag in ("a", "b")]
    plan = fi.from_actors(workers, name="Workers").gather_sync()
    plan.take(2)
    ex.kill(workers[0])
    with pytest.raises(flowrl.FlowError, match="gather_sync\\(\\) failed on shard 0") as info:
        plan.take(10)
    assert "died" in str(info.value)
    assert isinstance(info.value.__cause__, ActorDiedError)
