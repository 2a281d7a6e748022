"""LearnerThread: trains in a thread fed by a queue; its death or starvation fails the plan."""

from __future__ import annotations

import math
import threading
import time
import types

import pytest

import flowrl
import flowrl.iter as fi
from flowrl.iter import LocalIterator
from flowrl.ops import (
    Concurrently,
    Dequeue,
    Enqueue,
    LearnerOutput,
    LearnerThread,
    MinibatchBuffer,
)


class FakePolicy:
    """Anything with `learn_on_batch`: records the batches it was trained on."""

    def __init__(self):
        self.batches = []

    def learn_on_batch(self, batch):
        self.batches.append(list(batch))
        return {"loss": float(sum(batch))}


def fake_workers(policy):
    """The only shape LearnerThread needs of a WorkerSet: `local_worker().policy`."""
    worker = types.SimpleNamespace(policy=policy)
    return types.SimpleNamespace(local_worker=lambda: worker)


@pytest.fixture
def started():
    """Starts learners and always stops them, even when a test fails."""
    learners = []

    def start(*args, **kwargs):
        learner = LearnerThread(*args, **kwargs)
        learner.start()
        learners.append(learner)
        return learner

    yield start
    for learner in learners:
        learner.stop()


def outputs(learner, n):
    return [learner.outqueue.get(timeout=10) for _ in range(n)]


def test_imperative_use_trains_the_local_worker_policy(started):
    policy = FakePolicy()
    learner = started(fake_workers(policy))
    learner.inqueue.put([1.0, 2.0])
    learner.inqueue.put(("worker-7", [3.0]))
    first, second = outputs(learner, 2)
    assert first == LearnerOutput(None, 2, {"loss": 3.0}, 1)
    assert second == LearnerOutput("worker-7", 1, {"loss": 3.0}, 2)
    assert policy.batches == [[1.0, 2.0], [3.0]]
    assert learner.name == "flowrl-learner-default_policy" and learner.daemon


def test_counters_and_queue_fill(started):
    learner = started(
        None, learn=lambda batch: {"loss": 0.0}, num_sgd_iter=2, in_queue_size=4, out_queue_size=16
    )
    for size in (3, 5):
        learner.inqueue.put([0] * size)
    results = outputs(learner, 4)
    assert [r.batch_count for r in results] == [3, 3, 5, 5]
    assert [r.learner_version for r in results] == [1, 2, 3, 4]
    stats = learner.stats()
    assert stats["num_batches_received"] == 2 and stats["num_updates"] == 4
    assert stats["num_steps_trained"] == 16 and stats["weights_version"] == 4
    assert stats["updates_per_s"] > 0 and stats["learn_time_ms"] >= 0 and stats["alive"]
    assert (stats["inqueue_size"], stats["inqueue_maxsize"]) == (0, 4)
    assert (stats["outqueue_size"], stats["outqueue_maxsize"]) == (0, 16)


def test_minibatch_buffer_replays_each_batch_num_sgd_iter_times_over_its_slots(started):
    seen = []
    learner = started(
        None,
        learn=lambda batch: seen.append(batch) or {},
        num_sgd_iter=2,
        minibatch_buffer_size=2,
    )
    learner.inqueue.put("a")
    learner.inqueue.put("b")
    outputs(learner, 4)
    assert seen == ["a", "b", "a", "b"]
    import queue

    inbox = queue.Queue()
    inbox.put("c")
    buffer = MinibatchBuffer(inbox, size=1, num_passes=3)
    assert [buffer.get(0.1) for _ in range(3)] == [("c", True), ("c", False), ("c", False)]
    assert buffer.get(0.01) is None and not buffer.holds_batches()


def bad_learn(batch):
    if batch[0] >= 2:
        raise ValueError(f"cannot learn on {batch}")
    return {"loss": 0.0}


def plan_feeding(learner, num_batches=50):
    """The IMPALA shape: batches from a shard into the learner, its outputs out of the plan."""
    batches = fi.from_range(num_batches, num_shards=1).gather_async().for_each(lambda x: [x])
    enqueue = batches.for_each(Enqueue(learner.inqueue))
    dequeue = Dequeue(learner.outqueue, check=learner.check)
    return Concurrently([enqueue, dequeue], mode="async", output_indexes=[1])


def test_plan_trains_through_the_learner_thread(executor, started):
    learner = started(None, learn=lambda batch: {"loss": float(batch[0])}, in_queue_size=2)
    results = plan_feeding(learner, 30).take(30)
    assert [r.stats["loss"] for r in results] == [float(i) for i in range(30)]
    assert learner.stats()["num_updates"] == 30


def test_dead_learner_fails_the_next_plan_step_naming_thread_policy_and_traceback(
    executor, started
):
    learner = started(None, policy_id="learner_policy", learn=bad_learn, in_queue_size=2)
    plan = plan_feeding(learner)
    start = time.monotonic()
    with pytest.raises(flowrl.FlowError) as info:
        plan.take(50)
    assert time.monotonic() - start < 20
    error = info.value
    message = str(error)
    assert message.startswith(
        "LearnerThread 'flowrl-learner-learner_policy' (policy_id='learner_policy') failed"
    )
    assert "ValueError: cannot learn on [2]" in message
    assert "in bad_learn" in error.remote_traceback and "Original traceback:" in message
    assert isinstance(error.__cause__, ValueError) and error.original_type == "ValueError"
    assert not learner.is_alive()
    with pytest.raises(flowrl.FlowError, match="learner_policy"):
        learner.check()  # every later check raises it again


def test_non_finite_loss_kills_the_learner_with_its_own_exception(local_executor, started):
    def learn(batch):
        loss = float("nan")
        if not math.isfinite(loss):
            raise FloatingPointError("loss is nan (policy_loss=nan)")
        return {"loss": loss}

    learner = started(None, learn=learn)
    with pytest.raises(flowrl.FlowError) as info:
        plan_feeding(learner).take(5)
    assert info.value.original_type == "FloatingPointError"
    assert "loss is nan" in str(info.value)


def test_starving_learner_says_no_batches_arrive(local_executor, started):
    learner = started(None, learn=lambda batch: {}, timeout_s=0.2)
    never = LocalIterator(lambda: iter(()), name="no batches").for_each(Enqueue(learner.inqueue))
    plan = Concurrently([never, Dequeue(learner.outqueue)], mode="async")
    with pytest.raises(flowrl.FlowError) as info:
        plan.take(1)
    message = str(info.value)
    assert "no item arrived on learner.outqueue" in message
    assert "No batches are arriving from the producer" in message


def test_stuck_learner_says_it_is_not_producing(local_executor, started):
    release = threading.Event()
    learner = started(None, learn=lambda batch: release.wait(10) and {}, timeout_s=0.3)
    try:
        with pytest.raises(flowrl.FlowError) as info:
            plan_feeding(learner, 5).take(5)
        assert "The learner is not producing: one update" in str(info.value)
        assert "has been running for" in str(info.value)
    finally:
        release.set()


def test_unread_outqueue_says_the_plan_does_not_read_it(local_executor, started):
    learner = started(
        None, learn=lambda batch: {}, in_queue_size=1, out_queue_size=1, timeout_s=0.3
    )
    plan = LocalIterator(lambda: range(10), name="src").for_each(Enqueue(learner.inqueue))
    with pytest.raises(flowrl.FlowError) as info:
        plan.take(10)
    message = str(info.value)
    assert "learner.inqueue stayed full" in message
    assert "waits on a full learner.outqueue (1/1): the plan does not read it" in message


def test_check_before_start_and_after_stop(local_executor):
    learner = LearnerThread(None, learn=lambda batch: {})
    with pytest.raises(RuntimeError, match="was never started.*call learner.start"):
        learner.check()
    learner.start()
    learner.check()
    learner.stop()
    assert not learner.is_alive()
    with pytest.raises(flowrl.FlowError, match="was stopped"):
        LocalIterator(lambda: [[1]], name="src").for_each(Enqueue(learner.inqueue)).take(1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="in_queue_size to be an int >= 1"):
        LearnerThread(None, learn=lambda batch: {}, in_queue_size=0)
    with pytest.raises(ValueError, match="timeout_s > 0"):
        LearnerThread(None, learn=lambda batch: {}, timeout_s=0)
    with pytest.raises(TypeError, match="local_worker\\(\\).policy.learn_on_batch"):
        LearnerThread(object())


# --- the locked learn step with several policies ---------------------------------------------


class RowsPolicy:
    """Records the rows it trained on and the timesteps it was told."""

    def __init__(self, weight):
        self.rows, self.timesteps, self.weight = [], [], weight

    def learn_on_batch(self, batch):
        self.rows.append(batch["x"].tolist())
        return {"loss": float(batch["x"].sum())}

    def on_global_var_update(self, global_vars):
        self.timesteps.append(global_vars["timestep"])

    def get_weights(self):
        return {"w": self.weight}


def multi_agent_learner(to_train=("p1", "p2")):
    policies = {"p1": RowsPolicy(1), "p2": RowsPolicy(2), "p3": RowsPolicy(3)}
    worker = types.SimpleNamespace(
        multi_agent=True, policy_map=policies, policies_to_train=tuple(to_train),
        get_policy=policies.__getitem__,
        get_weights=lambda ids: {pid: policies[pid].get_weights() for pid in ids})
    return policies, types.SimpleNamespace(local_worker=lambda: worker)


def ma_batch(**rows):
    import numpy as np

    from flowrl.policy import MultiAgentBatch, SampleBatch

    return MultiAgentBatch({pid: SampleBatch({"x": np.asarray(x, dtype=float)})
                            for pid, x in rows.items()}, env_steps=2)


def test_locked_learn_step_trains_each_trained_policy_on_its_own_rows():
    from flowrl.ops import LockedLearnStep
    from flowrl.ops.learner_thread import stats_by_policy

    policies, workers = multi_agent_learner(to_train=("p1", "p2"))
    step = LockedLearnStep(workers)
    step.timestep = 7
    stats = step(ma_batch(p1=[1, 2], p2=[3, 4], p3=[5, 6]))
    assert stats == {"p1": {"loss": 3.0}, "p2": {"loss": 7.0}} and step.version == 1
    assert policies["p1"].rows == [[1, 2]] and policies["p2"].rows == [[3, 4]]
    assert policies["p3"].rows == [] and policies["p3"].timesteps == []
    assert policies["p1"].timesteps == [7] == policies["p2"].timesteps
    assert stats_by_policy(stats) == stats
    assert set(step.trained_policies()) == {"p1", "p2"}
    assert step.get_weights() == {"p1": {"w": 1}, "p2": {"w": 2}}


def test_locked_learn_step_takes_a_shared_policy_batch_as_that_policys_rows():
    from flowrl.ops import LockedLearnStep
    from flowrl.ops.learner_thread import stats_by_policy

    policy = RowsPolicy(0)
    step = LockedLearnStep(fake_workers(policy))
    stats = step(ma_batch(default_policy=[1, 2, 3]))
    assert stats == {"loss": 6.0} and policy.rows == [[1, 2, 3]]
    assert stats_by_policy(stats) == {"default_policy": {"loss": 6.0}}


def test_a_custom_learn_function_gets_only_the_trained_policies_rows():
    from flowrl.ops import LockedLearnStep

    _, workers = multi_agent_learner(to_train=("p1", "p2"))
    seen = []
    step = LockedLearnStep(workers, learn=lambda batch: seen.append(batch) or {
        pid: {"rows": len(rows)} for pid, rows in batch.policy_batches.items()})
    assert step(ma_batch(p1=[1], p2=[2, 3], p3=[4])) == {"p1": {"rows": 1}, "p2": {"rows": 2}}
    assert set(seen[0].policy_batches) == {"p1", "p2"}


def test_learner_thread_counts_agent_steps_of_multi_agent_batches(started):
    from flowrl.ops import LockedLearnStep

    _, workers = multi_agent_learner()
    learner = started(workers, learn=LockedLearnStep(workers))
    learner.inqueue.put(ma_batch(p1=[1, 2], p2=[3, 4, 5]))
    output = learner.outqueue.get(timeout=10)
    assert output.batch_count == 5 and set(output.stats) == {"p1", "p2"}
