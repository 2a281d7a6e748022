"""APPO: IMPALA's dataflow with a clipped surrogate, a target network and an adaptive KL."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import flowrl
from flowrl.config import from_dict
from flowrl.iter.metrics import MetricsContext
from flowrl.ops import AdaptKLCoefficient, LearnerOutput, LockedLearnStep, UpdateTargetNetwork
from flowrl.plans.appo import APPO_POLICY, APPOConfig
from flowrl.policy import SampleBatch

FRAMEWORKS = ["torch", pytest.param("tf", marks=pytest.mark.tf)]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_appo_trains_on_both_executors(executor, framework, tiny_config):
    config = tiny_config("appo", framework=framework, num_workers=1, min_steps_per_iteration=120,
                         use_kl_loss=True, target_update_frequency=1)
    trainer = flowrl.Trainer("appo", env="corridor", config=config)
    try:
        result = trainer.train()
        result = trainer.train()
    finally:
        trainer.stop()
    stats = result["info"]["learner"]["default_policy"]
    assert np.isfinite(stats["total_loss"]) and stats["kl"] >= 0 and stats["kl_coeff"] > 0
    assert result["num_steps_trained"] >= 40
    assert result["info"]["counters"]["learner/target_updates"] >= 1
    assert result["info"]["counters"]["learner/weight_broadcasts"] >= 1


class OneWorker:
    def __init__(self, policy):
        self.policy = policy

    def local_worker(self):
        return self


def appo_policy(framework="torch", **overrides):
    config = APPOConfig(framework=framework, seed=3, rollout_fragment_length=4,
                        num_envs_per_worker=2, train_batch_size=8, **overrides)
    return APPO_POLICY.build(gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Discrete(2),
                             config)


def fragment_batch(rows=8, seed=0):
    rng = np.random.default_rng(seed)
    return SampleBatch({
        "obs": rng.normal(size=(rows, 3)).astype(np.float32),
        "new_obs": rng.normal(size=(rows, 3)).astype(np.float32),
        "actions": rng.integers(0, 2, size=rows), "rewards": np.ones(rows, np.float32),
        "terminateds": np.zeros(rows, bool), "truncateds": np.zeros(rows, bool),
        "action_logp": np.full(rows, np.log(0.5), np.float32),
    })


def output(version, kl=0.0):
    return LearnerOutput(None, 8, {"kl": kl}, version)


def test_target_network_follows_the_learner_every_target_update_frequency_updates():
    policy = appo_policy()
    learn_step = LockedLearnStep(OneWorker(policy))
    update = UpdateTargetNetwork(OneWorker(policy), 2, by="updates", learn_step=learn_step)
    metrics = MetricsContext()
    batch = fragment_batch()
    with metrics.activate():
        for version in range(1, 5):
            learn_step(batch)
            before = policy.get_target_weights()
            update(output(version))
            after = policy.get_target_weights()
            moved = any(not np.array_equal(before[name], after[name]) for name in before)
            assert moved == (version % 2 == 0), version
            if moved:
                for name, value in policy.get_weights().items():
                    np.testing.assert_array_equal(after[name], value)
    assert metrics.counters["learner/target_updates"] == 2


def test_kl_coefficient_adapts_toward_the_target_at_each_target_update():
    policy = appo_policy(use_kl_loss=True, kl_coeff=1.0)
    learn_step = LockedLearnStep(OneWorker(policy))
    update = AdaptKLCoefficient(learn_step, kl_target=0.01, every_updates=1)
    with MetricsContext().activate():
        assert update(output(1, kl=0.5)).stats["kl_coeff"] == pytest.approx(1.5)
        assert update(output(2, kl=0.01)).stats["kl_coeff"] == pytest.approx(1.5)
        assert update(output(3, kl=0.0001)).stats["kl_coeff"] == pytest.approx(0.75)
    # Every second update, from the mean KL of both; without adapt only reported.
    every_other = AdaptKLCoefficient(learn_step, kl_target=0.01, every_updates=2)
    fixed = AdaptKLCoefficient(learn_step, kl_target=0.01, every_updates=1, adapt=False)
    with MetricsContext().activate():
        assert every_other(output(1, kl=0.5)).stats["kl_coeff"] == pytest.approx(0.75)
        # mean KL (0.5 + 0.001) / 2 is above twice the target
        assert every_other(output(2, kl=0.001)).stats["kl_coeff"] == pytest.approx(1.125)
        assert fixed(output(3, kl=9.0)).stats["kl_coeff"] == pytest.approx(1.125)


def behaviour_logp(policy, batch):
    def logp(policy, tensors):
        dist_inputs, _ = policy.model(tensors["obs"])
        return {"logp": policy.dist_class(dist_inputs).logp(tensors["actions"])}
    return policy.run_on_batch(logp, batch)["logp"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_ratio_and_kl_are_measured_against_the_target_policy(framework):
    policy = appo_policy(framework, lr=0.05, clip_param=0.1)
    batch = fragment_batch()
    batch = SampleBatch({**batch, "action_logp": behaviour_logp(policy, batch)})  # on-policy
    # Updates without a target refresh: the ratio new / target drifts away from 1.
    ratios = [policy.learn_on_batch(batch)["mean_ratio"] for _ in range(30)]
    assert ratios[0] == pytest.approx(1.0, abs=1e-5)
    assert max(abs(r - 1.0) for r in ratios) > 0.05
    assert policy.learn_on_batch(batch)["kl"] > 0
    policy.update_target()
    assert policy.learn_on_batch(batch)["kl"] == pytest.approx(0.0, abs=1e-6)


def test_appo_config_checks():
    with pytest.raises(ValueError, match="clip_param must be positive"):
        from_dict(APPOConfig, {"clip_param": 0})
    with pytest.raises(ValueError, match="target_update_frequency"):
        from_dict(APPOConfig, {"target_update_frequency": 0})
