"""A3C: asynchronous gradients on remote workers."""

from __future__ import annotations

import pytest

import flowrl
from flowrl.config import from_dict
from flowrl.plans.a3c import A3CConfig


@pytest.mark.parametrize("framework", ["torch", pytest.param("tf", marks=pytest.mark.tf)])
def test_a3c_trains_on_both_executors(executor, framework, tiny_config):
    config = tiny_config("a3c", framework=framework, min_steps_per_iteration=40,
                         min_time_s_per_iteration=0)
    trainer = flowrl.Trainer("a3c", env="corridor", config=config)
    try:
        result = trainer.train()
    finally:
        trainer.stop()
    assert result["timesteps_total"] >= 40
    assert result["info"]["counters"]["learner/gradient_updates"] >= 2
    assert "AsyncGradients" in repr(trainer.plan) or "ComputeGradientsOnShard" in repr(trainer.plan)


def test_a3c_needs_remote_workers():
    with pytest.raises(ValueError, match="num_workers must be >= 1"):
        from_dict(A3CConfig, {"num_workers": 0})
