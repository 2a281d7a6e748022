"""The replay-ratio gates: WaitForSamples holds the learner, WaitForLearner holds sampling."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from flowrl.data import MultiAgentBatch, SampleBatch
from flowrl.iter import LocalIterator, PollingSource
from flowrl.iter.metrics import MetricsContext
from flowrl.ops import (
    STEPS_SAMPLED_COUNTER,
    STEPS_TRAINED_COUNTER,
    Concurrently,
    Dequeue,
    Enqueue,
    LearnerThread,
    RecordSampledSteps,
    StartLearnerThread,
)
from flowrl.ops.distributed_replay import LearnerOutputToResult
from flowrl.ops.replay_ratio import (
    REPLAY_RATIO_INFO,
    ROWS_RELEASED_COUNTER,
    RecordReplayRatio,
    WaitForLearner,
    WaitForSamples,
    replay_ratio,
)


def rows(n: int) -> SampleBatch:
    return SampleBatch(obs=np.zeros(n))


def test_wait_for_samples_spends_training_intensity_rows_per_step_after_learning_starts():
    gate = WaitForSamples(training_intensity=2.0, learning_starts=10)
    metrics = MetricsContext()
    counters = metrics.counters
    with metrics.activate():
        counters[STEPS_SAMPLED_COUNTER] = 10  # learning_starts: no budget yet
        assert gate.try_apply(rows(16)) == (False, None)
        counters[STEPS_SAMPLED_COUNTER] = 11  # budget 2 rows: one batch may overshoot it
        done, item = gate.try_apply(("shard", rows(16)))
        assert done and item[0] == "shard"
        assert counters[ROWS_RELEASED_COUNTER] == 16
        counters[STEPS_SAMPLED_COUNTER] = 18  # budget 16: spent
        assert gate.try_apply(rows(16)) == (False, None)
        counters[STEPS_SAMPLED_COUNTER] = 19  # budget 18 > 16
        assert gate.try_apply(rows(16))[0]
        assert counters[ROWS_RELEASED_COUNTER] == 32
    assert gate.num_holds == 2 and not gate.extra_stats()["holding"]


def test_wait_for_samples_counts_agent_steps_and_trusts_the_trained_counter():
    gate = WaitForSamples(training_intensity=1.0, learning_starts=0)
    metrics = MetricsContext()
    counters = metrics.counters
    batch = MultiAgentBatch({"p1": rows(3), "p2": rows(5)}, env_steps=5)
    with metrics.activate():
        counters[STEPS_SAMPLED_COUNTER] = 100
        counters[STEPS_TRAINED_COUNTER] = 99  # e.g. restored from a checkpoint without it
        assert gate.try_apply(batch)[0]
        assert counters[ROWS_RELEASED_COUNTER] == 99 + 8
        assert gate.try_apply(batch) == (False, None)


def test_wait_for_learner_never_waits_on_a_learner_that_has_nothing_yet():
    gate = WaitForLearner(training_intensity=4.0, learning_starts=100, max_steps_ahead=20)
    metrics = MetricsContext()
    counters = metrics.counters
    with metrics.activate():
        counters[STEPS_SAMPLED_COUNTER] = 10_000  # far ahead, but nothing given to the learner
        assert gate.try_apply(rows(5))[0]
        counters[ROWS_RELEASED_COUNTER] = 64  # the learner got rows: now it counts
        assert gate.try_apply(rows(5)) == (False, None)
        counters[STEPS_SAMPLED_COUNTER] = 120  # 20 ahead of 0 / 4 trained: at the limit
        assert gate.try_apply(rows(5))[0]
        counters[STEPS_SAMPLED_COUNTER] = 121
        assert gate.try_apply(rows(5)) == (False, None)
        counters[STEPS_TRAINED_COUNTER] = 4  # one step's worth trained
        assert gate.try_apply(rows(5))[0]
    assert not metrics.info  # it writes no metrics


def test_replay_ratio_is_reported_from_learning_starts():
    assert replay_ratio(500, 300, 200) == 5.0
    assert replay_ratio(10, 200, 200) == 0.0
    metrics = MetricsContext()
    metrics.counters[STEPS_SAMPLED_COUNTER] = 1_200
    metrics.counters[STEPS_TRAINED_COUNTER] = 3_000
    with metrics.activate():
        assert RecordReplayRatio(learning_starts=200)("result") == "result"
    assert metrics.info[REPLAY_RATIO_INFO] == 3.0


@pytest.mark.parametrize("make", [
    lambda: WaitForSamples(training_intensity=0, learning_starts=0),
    lambda: WaitForSamples(training_intensity=1, learning_starts=-1),
    lambda: WaitForLearner(training_intensity=1, learning_starts=0, max_steps_ahead=-1),
    lambda: WaitForLearner(training_intensity=1, learning_starts=0, max_steps_ahead=0,
                           timeout_s=0),
    lambda: RecordReplayRatio(learning_starts=-5),
])
def test_bad_settings_are_refused(make):
    with pytest.raises(ValueError, match="needs"):
        make()


def test_a_gate_that_stays_shut_fails_the_plan_instead_of_hanging(local_executor):
    gate = WaitForSamples(training_intensity=1.0, learning_starts=10, timeout_s=0.05)
    plan = LocalIterator(lambda: itertools.repeat(rows(4)), name="replayed").for_each(gate)
    with pytest.raises(Exception, match=r"WaitForSamples.*stayed shut.*no env steps were sampled"):
        plan.take(1)


# A simulated Ape-X: instant rollouts and replay, a learner thread on its own, and the gates.
INTENSITY, LEARNING_STARTS, LEAD, FRAGMENT, BATCH = 3.0, 40, 24, 8, 16


class Rollouts(PollingSource):
    """A fragment every `every_s` seconds, "not ready" in between (as remote workers are)."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.next_at = 0.0

    def poll(self):
        now = time.monotonic()
        if now < self.next_at:
            return False, None
        self.next_at = now + self.every_s
        return True, rows(FRAGMENT)

    def wait(self, timeout_s: float) -> None:
        time.sleep(max(0.0, min(timeout_s, self.next_at - time.monotonic())))


def run_gated_plan(*, learn_s: float, sample_s: float, outputs: int):
    """Runs the three flows until `outputs` learner results; returns (counters, info, gates)."""
    learner = LearnerThread(None, learn=lambda batch: time.sleep(learn_s) or {},
                            in_queue_size=4, timeout_s=30)
    start = StartLearnerThread(learner)
    sample_gate = WaitForLearner(training_intensity=INTENSITY, learning_starts=LEARNING_STARTS,
                                 max_steps_ahead=LEAD, timeout_s=30)
    replay_gate = WaitForSamples(training_intensity=INTENSITY, learning_starts=LEARNING_STARTS,
                                 timeout_s=30)

    store = (LocalIterator.from_polling_source(Rollouts(sample_s), name="rollouts")
             .for_each(sample_gate).for_each(RecordSampledSteps()))
    replay = (LocalIterator(lambda: itertools.repeat(rows(BATCH)), name="replayed")
              .for_each(replay_gate).for_each(Enqueue(learner.inqueue, check=start)))
    train = (Dequeue(learner.outqueue, check=start).for_each(LearnerOutputToResult())
             .for_each(RecordReplayRatio(learning_starts=LEARNING_STARTS)))
    plan = Concurrently([store, replay, train], mode="async", output_indexes=[2])
    try:
        plan.take(outputs)
    finally:
        learner.stop()
    metrics = plan.shared_metrics.get()
    return metrics.counters, metrics.info, (sample_gate, replay_gate)


@pytest.mark.parametrize("slow_side", ["learner", "sampler"])
def test_the_gates_hold_the_ratio_whichever_side_is_slow(slow_side, local_executor):
    counters, info, (sample_gate, replay_gate) = run_gated_plan(
        learn_s=0.002 if slow_side == "learner" else 0.0,
        sample_s=0.005 if slow_side == "sampler" else 0.0, outputs=150)
    sampled = counters[STEPS_SAMPLED_COUNTER] - LEARNING_STARTS
    trained = counters[STEPS_TRAINED_COUNTER]
    # The learner gets at most one batch beyond its budget; sampling leads by at most LEAD
    # plus the fragment that passed at the limit (and the results still in the queues).
    assert trained <= INTENSITY * sampled + BATCH
    assert counters[ROWS_RELEASED_COUNTER] <= INTENSITY * sampled + BATCH
    assert sampled <= trained / INTENSITY + LEAD + FRAGMENT
    assert info[REPLAY_RATIO_INFO] == pytest.approx(trained / sampled)
    # The gate in front of the fast side is the one that held it back.
    held = sample_gate if slow_side == "learner" else replay_gate
    assert held.num_holds > 0, held.extra_stats()


def test_docstring_examples():
    import doctest

    import flowrl.ops.replay_ratio as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
