"""The imperative escape hatch: operators as plain functions, and training_step plans."""

from __future__ import annotations

import numpy as np
import pytest

import flowrl
from flowrl.iter import LocalIterator, MetricsContext
from flowrl.ops import (
    STEPS_SAMPLED_COUNTER,
    STEPS_TRAINED_COUNTER,
    BroadcastWeights,
    RecordSampledSteps,
    StandardizeFields,
    TrainOneStep,
    training_step_plan,
)
from flowrl.testing import CorridorEnv


def test_operators_work_as_plain_functions_in_an_active_context(two_workers):
    metrics = MetricsContext()
    train = TrainOneStep(two_workers, num_sgd_iter=2, sgd_minibatch_size=10)
    broadcast = BroadcastWeights(two_workers)
    with metrics.activate():
        for _ in range(2):
            batch = RecordSampledSteps()(two_workers.local_worker().sample())
            broadcast(train(StandardizeFields(["advantages"])(batch)))
    assert metrics.counters[STEPS_SAMPLED_COUNTER] == 20
    assert metrics.counters[STEPS_TRAINED_COUNTER] == 20
    assert metrics.timers["timers/learn"].count == 2


def test_outside_any_context_the_error_says_what_to_do():
    with pytest.raises(RuntimeError, match="inside an operator"):
        LocalIterator.get_metrics()


def test_a_plan_inside_an_active_context_restores_it(local_executor):
    metrics = MetricsContext()
    with metrics.activate():
        assert LocalIterator(lambda: iter(range(3)), name="r").take(3) == [0, 1, 2]
        assert LocalIterator.get_metrics() is metrics


def my_training_step(workers, config):
    batch = RecordSampledSteps()(workers.local_worker().sample())
    return TrainOneStep(workers, num_sgd_iter=2, sgd_minibatch_size=10)(batch)


def test_training_step_plan_gets_reports_and_checkpoints(local_executor, tmp_path):
    flowrl.register_env("imperative_corridor", CorridorEnv)
    config = {"num_workers": 0, "num_envs_per_worker": 2, "rollout_fragment_length": 10,
              "train_batch_size": 20, "sgd_minibatch_size": 10, "seed": 1}
    trainer = flowrl.Trainer("ppo", env="imperative_corridor", config=config,
                             plan=training_step_plan(my_training_step))
    try:
        result = trainer.train()
        assert result["timesteps_total"] == 20 and result["num_steps_trained"] == 20
        assert "total_loss" in result["info"]["learner"]["default_policy"]
        assert repr(trainer.plan) == "training_step(my_training_step)"
        path = trainer.save(str(tmp_path))
        weights = trainer.get_policy().get_weights()
    finally:
        trainer.stop()
    restored = flowrl.Trainer("ppo", env="imperative_corridor", config=config,
                              plan=training_step_plan(my_training_step))
    try:
        restored.restore(path)
        assert restored.metrics.counters[STEPS_SAMPLED_COUNTER] == 20
        for name, value in restored.get_policy().get_weights().items():
            np.testing.assert_array_equal(value, weights[name])
    finally:
        restored.stop()
