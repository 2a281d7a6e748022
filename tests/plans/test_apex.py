"""Ape-X: per-worker epsilons, weight-sync cadence, plan shape and a smoke run."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import flowrl
from flowrl.config import from_dict
from flowrl.iter import LocalIterator
from flowrl.ops import (
    NUM_WEIGHT_BROADCASTS_COUNTER,
    STEPS_TRAINED_COUNTER,
    LockedLearnStep,
    UpdateTargetNetwork,
)
from flowrl.ops.distributed_replay import UpdateWorkerWeights
from flowrl.plans.apex import ApexConfig, apex_epsilon
from flowrl.policy import SampleBatch


def test_each_worker_gets_its_own_constant_epsilon():
    config = ApexConfig()
    epsilons = [apex_epsilon(config, None, worker_index=i, num_workers=4).epsilon
                for i in range(1, 5)]
    expected = [0.4 ** (1 + 7 * i / 3) for i in range(4)]
    assert epsilons == pytest.approx(expected)
    assert apex_epsilon(config, None, worker_index=1, num_workers=1).epsilon == pytest.approx(0.4)
    selector = apex_epsilon(config, None, worker_index=2, num_workers=4)
    selector.on_global_var_update(10**6)
    assert selector.epsilon == pytest.approx(expected[1])  # no schedule


def test_config_rejects_settings_that_do_not_apply():
    with pytest.raises(ValueError, match="training_intensity must be > 0"):
        from_dict(ApexConfig, {"training_intensity": 0})
    with pytest.raises(ValueError, match="worker_side_prioritization needs prioritized_replay"):
        from_dict(ApexConfig, {"prioritized_replay": False})
    with pytest.raises(ValueError, match="num_replay_buffer_shards must be at least 1"):
        from_dict(ApexConfig, {"num_replay_buffer_shards": 0})


class _Policy:
    def __init__(self, lock_of=None):
        self.reads = 0
        self.target_updates = 0
        self.lock_of = lock_of  # the LockedLearnStep whose lock must be held
        self.unlocked_calls = 0

    def _check_lock(self):
        if self.lock_of is not None and not self.lock_of.lock.locked():
            self.unlocked_calls += 1

    def get_weights(self):
        self._check_lock()
        self.reads += 1
        return {"w": np.zeros(1)}

    def update_target(self, tau=1.0):
        self._check_lock()
        self.target_updates += 1


class _Workers:
    def __init__(self):
        self.policy = _Policy()
        self.sent = []

    def local_worker(self):
        return self

    def set_weights_of(self, handle, weights_ref, global_vars=None):
        self.sent.append(handle)


def test_weights_go_to_a_worker_after_max_weight_sync_delay_steps(local_executor):
    workers = _Workers()
    learn_step = LockedLearnStep(workers)
    workers.policy.lock_of = learn_step
    op = UpdateWorkerWeights(learn_step, max_weight_sync_delay=25)
    items = [("a", SampleBatch(x=np.zeros(10))), ("b", SampleBatch(x=np.zeros(30)))] * 3
    plan = LocalIterator(lambda: items, name="samples").for_each(op)
    plan.take(6)
    # "b" is due after each of its batches (30 >= 25); "a" after its third (30 steps).
    assert workers.sent == ["b", "b", "a", "b"]
    # One learner version: the weights were read (and put) once for all four sends.
    assert workers.policy.reads == 1
    assert plan.shared_metrics.get().counters[NUM_WEIGHT_BROADCASTS_COUNTER] == 4
    # ... and read under the learner's lock, never in the middle of an update.
    assert workers.policy.unlocked_calls == 0


def test_weight_reads_and_target_updates_wait_for_the_learners_update(local_executor):
    workers = _Workers()
    learn_step = LockedLearnStep(workers)
    workers.policy.lock_of = learn_step
    update_target = UpdateTargetNetwork(workers, 1, by="trained", learn_step=learn_step)
    update_weights = UpdateWorkerWeights(learn_step, max_weight_sync_delay=1)
    learn_step.version = 1
    finished = []

    def read_and_update():
        plan = (LocalIterator(lambda: [("a", SampleBatch(x=np.zeros(2)))], name="samples")
                .for_each(update_weights))
        plan.shared_metrics.get().counters[STEPS_TRAINED_COUNTER] = 5
        plan = plan.for_each(update_target)
        plan.take(1)
        finished.append(True)

    with learn_step.lock:  # the learner thread is in the middle of an update
        thread = threading.Thread(target=read_and_update)
        thread.start()
        thread.join(0.3)
        assert not finished  # both wait for the update to finish
    thread.join(5)
    assert finished
    assert workers.policy.reads == 1 and workers.policy.target_updates == 1
    assert workers.policy.unlocked_calls == 0


def test_apex_needs_remote_workers(tiny_config, local_executor):
    with pytest.raises(ValueError, match="num_workers >= 1"):
        flowrl.Trainer("apex", env="corridor", config=tiny_config("apex", num_workers=0))


def test_plan_shows_three_flows_with_replay_actors_and_the_learner(tiny_config, local_executor):
    trainer = flowrl.Trainer("apex", env="corridor", config=tiny_config("apex"))
    try:
        text = repr(trainer.plan)
        labels = [data["label"] for _, data in trainer.plan_graph().nodes(data=True)]
    finally:
        trainer.stop()
    for stage in ("WorkerSidePriorities()", "StoreToReplay(replay_actors=2)",
                  "UpdateWorkerWeights(max_weight_sync_delay=20)", "ReplayActors[shards=2]",
                  "Enqueue(learner.inqueue)", "Dequeue(learner.outqueue)",
                  "UpdatePriorities(replay_actors=2)", "LearnerOutputToResult()",
                  "UpdateTargetNetwork(target_network_update_freq=16000, by='trained')",
                  # training_intensity's gates: 8 * 16 / 5 + 2 workers * 2 * 2 envs * 10 steps
                  "WaitForLearner(training_intensity=5.0, learning_starts=40, "
                  "max_steps_ahead=106)",
                  "WaitForSamples(training_intensity=5.0, learning_starts=40)",
                  "RecordReplayRatio(learning_starts=40)"):
        assert stage in text, (stage, text)
    assert text.index("WaitForLearner") < text.index("RecordSampledSteps")
    assert text.index("WaitForSamples") < text.index("Enqueue")
    assert any("Concurrently" in label for label in labels)
    assert any("ReplayActors" in label for label in labels)


def test_training_intensity_none_leaves_the_learner_free(tiny_config, local_executor):
    config = tiny_config("apex", training_intensity=None)
    assert from_dict(ApexConfig, config).training_intensity is None
    trainer = flowrl.Trainer("apex", env="corridor", config=config)
    try:
        text = repr(trainer.plan)
    finally:
        trainer.stop()
    assert "WaitFor" not in text and "RecordReplayRatio(learning_starts=40)" in text


@pytest.mark.parametrize("intensity", [0.5, 8.0])
def test_the_replay_ratio_holds_training_intensity(intensity, tiny_config, local_executor):
    # 0.5: the learner could train far more (WaitForSamples holds it); 8: sampling could
    # run far ahead (WaitForLearner holds it).
    config = tiny_config("apex", training_intensity=intensity, min_steps_per_iteration=500)
    trainer = flowrl.Trainer("apex", env="corridor", config=config)
    try:
        result = trainer.train()
        while result["timesteps_total"] < 2_500:
            result = trainer.train()
    finally:
        trainer.stop()
    counters = result["info"]["counters"]
    ratio = result["info"]["learner/replay_ratio"]
    assert ratio == pytest.approx(
        counters["learner/steps_trained"] / (counters["sampler/env_steps"] - 40))
    assert ratio == pytest.approx(intensity, rel=0.1), counters


@pytest.mark.parametrize("framework", ["torch", pytest.param("tf", marks=pytest.mark.tf)])
def test_apex_trains_and_updates_priorities(framework, tiny_config, executor):
    config = tiny_config("apex", framework=framework, min_steps_per_iteration=200,
                         target_network_update_freq=64)
    trainer = flowrl.Trainer("apex", env="corridor", config=config)
    try:
        result = trainer.train()
        while result["info"]["counters"].get("learner/target_updates", 0) < 1:
            result = trainer.train()
            assert result["training_iteration"] < 20, result["info"]["counters"]
    finally:
        trainer.stop()
    counters = result["info"]["counters"]
    assert trainer.workers.reported_worker_indexes == {2}  # the lower epsilon of two
    assert counters["learner/steps_trained"] >= 64
    assert counters["replay/priority_updates"] > 0
    assert counters["learner/weight_broadcasts"] > 0
    assert np.isfinite(result["info"]["learner"]["default_policy"]["total_loss"])
