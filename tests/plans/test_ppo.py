"""PPO: plan shape, adaptive KL, config validation, learning."""

from __future__ import annotations

import pytest

import flowrl
from flowrl.config import from_dict
from flowrl.ops import TrainResult, UpdateKL
from flowrl.plans.ppo import PPOConfig


def test_plan_repr_reads_as_the_dataflow(tiny_config, local_executor):
    trainer = flowrl.Trainer("ppo", env="corridor", config=tiny_config("ppo"))
    try:
        text = repr(trainer.plan)
    finally:
        trainer.stop()
    for stage in ("ParallelRollouts(mode='bulk_sync')", "ConcatBatches(min_batch_size=40)",
                  "StandardizeFields(fields=['advantages'])",
                  "TrainOneStep(num_sgd_iter=2, sgd_minibatch_size=20)", "BroadcastWeights()",
                  "UpdateKL(kl_target=0.01)"):
        assert stage in text, (stage, text)
    assert text.index("ConcatBatches") < text.index("TrainOneStep") < text.index("UpdateKL")


class _FakePolicy:
    def __init__(self):
        self.coeff = 0.2

    def get_coefficient(self, name):
        return self.coeff

    def set_coefficient(self, name, value):
        self.coeff = value


class _FakeWorkers:
    def __init__(self):
        self.policy = _FakePolicy()

    def local_worker(self):
        return self


@pytest.mark.parametrize(("kl", "expected"), [(0.05, 0.3), (0.001, 0.1), (0.01, 0.2)])
def test_update_kl_adapts_coefficient(kl, expected, local_executor):
    from flowrl.iter import LocalIterator

    workers = _FakeWorkers()
    op = UpdateKL(workers, kl_target=0.01)
    plan = LocalIterator(lambda: [TrainResult({"default_policy": {"kl": kl}}, 1)],
                         name="results").for_each(op)
    (result,) = plan.take(1)
    assert workers.policy.coeff == pytest.approx(expected)
    assert result.learner_stats["default_policy"]["kl_coeff"] == pytest.approx(expected)


def test_minibatch_larger_than_batch_is_rejected_with_both_numbers():
    with pytest.raises(ValueError, match=r"sgd_minibatch_size=600 > train_batch_size=500"):
        from_dict(PPOConfig, {"train_batch_size": 500, "sgd_minibatch_size": 600})


def test_misspelled_key_suggests_the_right_one():
    with pytest.raises(ValueError, match="clip_param"):
        from_dict(PPOConfig, {"clip_parm": 0.3})


def test_ppo_clears_150_on_cartpole_in_process(local_executor):
    result = flowrl.run("ppo", env="CartPole-v1", config={"num_workers": 0, "seed": 0},
                        stop={"episode_reward_mean": 150, "timesteps_total": 60_000}, verbose=0,
                        local_mode=True)
    assert result["episode_reward_mean"] >= 150, result["episode_reward_mean"]


def test_ppo_clears_150_on_cartpole_on_ray(ray_executor):
    result = flowrl.run("ppo", env="CartPole-v1", config={"seed": 0, "num_cpus_per_worker": 0.5},
                        stop={"episode_reward_mean": 150, "timesteps_total": 60_000}, verbose=0,
                        local_mode=False)
    assert result["episode_reward_mean"] >= 150, result["episode_reward_mean"]
    assert result["num_healthy_workers"] == 1


@pytest.mark.slow
def test_ppo_solves_cartpole_in_local_mode():
    result = flowrl.run("ppo", env="CartPole-v1", local_mode=True,
                        config={"num_workers": 0, "seed": 0},
                        stop={"episode_reward_mean": 450, "timesteps_total": 150_000}, verbose=0)
    assert result["episode_reward_mean"] >= 450, result["episode_reward_mean"]
