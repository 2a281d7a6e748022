"""A2C: both plan variants and the microbatch config."""

from __future__ import annotations

import pytest

import flowrl
from flowrl.config import from_dict
from flowrl.plans.a2c import A2CConfig


def test_microbatch_plan_averages_gradients(tiny_config, local_executor):
    config = tiny_config("a2c", microbatch_size=20)
    trainer = flowrl.Trainer("a2c", env="corridor", config=config)
    try:
        text = repr(trainer.plan)
        result = trainer.train()
    finally:
        trainer.stop()
    assert "ComputeGradients()" in text and "AverageGradients()" in text
    assert "ApplyGradients(update='all')" in text
    assert result["num_steps_trained"] >= 40


def test_num_microbatches_is_derived():
    config = from_dict(A2CConfig, {"train_batch_size": 500, "microbatch_size": 200})
    assert config.num_microbatches == 3


def test_microbatch_larger_than_train_batch_is_rejected():
    with pytest.raises(ValueError, match="microbatch_size must be in"):
        from_dict(A2CConfig, {"train_batch_size": 100, "microbatch_size": 200})


@pytest.mark.slow
def test_a2c_learns_cartpole():
    result = flowrl.run("a2c", env="CartPole-v1", local_mode=True, config={"num_workers": 0,
                        "seed": 0}, stop={"episode_reward_mean": 150, "timesteps_total": 200_000},
                        verbose=0)
    assert result["episode_reward_mean"] >= 150
