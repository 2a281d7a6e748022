"""ARS: smoke runs with Box and Discrete actions on both executors, the update by hand."""

from __future__ import annotations

import numpy as np
import pytest

import flowrl
from flowrl.ops.gradient_free import top_directions
from flowrl.plans.ars import ARSConfig, ARSGradient
from flowrl.policy.gradient_free import GradientFreePolicySpec

TINY_ARS = {"ars_num_directions": 4, "ars_top_directions": 2, "noise_size": 100_000,
            "eval_prob": 0.5, "seed": 4, "num_cpus_per_worker": 0}


@pytest.mark.parametrize("num_workers", [0, 1])
def test_box_actions_on_pendulum_on_both_executors(executor, num_workers):
    trainer = flowrl.Trainer("ars", env="Pendulum-v1",
                             config={**TINY_ARS, "num_workers": num_workers})
    try:
        first, second = trainer.train(), trainer.train()
        policy = trainer.get_policy()
        action, _, _ = policy.compute_single_action(np.zeros(3, np.float32))
    finally:
        trainer.stop()
    # 4 directions, two 200-step episodes each, per update (evaluation episodes come on top).
    assert second["num_steps_trained"] == 2 * first["num_steps_trained"] == 2 * 4 * 2 * 200
    assert second["timesteps_total"] >= 2 * 4 * 2 * 200
    assert policy.num_params == 3 * 1 + 1  # linear by default
    assert action.shape == (1,) and -2.0 <= float(action[0]) <= 2.0


def test_default_policy_is_linear_and_starts_at_zero():
    import gymnasium as gym

    policy = GradientFreePolicySpec(name="ars", optimizer="sgd", config_class=ARSConfig).build(
        gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2), ARSConfig())
    assert policy.num_params == 4 * 2 + 2
    assert not policy.flat_weights.any()
    assert policy.framework == "numpy"


def test_ars_update_by_hand():
    returns = np.array([[4.0, 0.0],    # max 4
                        [1.0, 2.0],    # max 2 (dropped with b=2)
                        [0.0, 6.0]])   # max 6
    noise = np.eye(3)
    loss_gradient, stats = ARSGradient(top_directions=2)(returns, noise, np.zeros(3))
    kept = returns[[2, 0]]
    std = np.std(kept)  # std of the four kept returns [0, 6, 4, 0]
    expected = np.array([4.0 - 0.0, 0.0, 0.0 - 6.0]) / (2 * std)
    np.testing.assert_allclose(-loss_gradient, expected)
    assert stats["kept_returns_std"] == pytest.approx(std)


def test_top_directions_rank_by_the_better_of_the_pair():
    returns = np.array([[1.0, 9.0], [5.0, 5.0], [8.0, 0.0]])
    assert top_directions(returns, 2).tolist() == [0, 2]
    assert top_directions(returns, 10).tolist() == [0, 2, 1]


def test_equal_returns_give_no_step():
    loss_gradient, _ = ARSGradient(top_directions=2)(np.ones((2, 2)), np.eye(2), np.zeros(2))
    assert not loss_gradient.any()


def test_top_directions_cannot_exceed_directions():
    with pytest.raises(ValueError, match="ars_top_directions must be in"):
        ARSConfig(ars_num_directions=4, ars_top_directions=8)


@pytest.mark.slow
def test_linear_policy_solves_cartpole_within_100k_steps(local_executor):
    from pathlib import Path

    import gymnasium as gym
    import yaml

    tuned = Path(__file__).resolve().parents[2] / "examples" / "tuned" / "ars-cartpole.yaml"
    config = {**yaml.safe_load(tuned.read_text()), "num_workers": 0, "seed": 1,
              "noise_size": 1_000_000, "num_cpus_per_worker": 0}
    trainer = flowrl.Trainer("ars", env="CartPole-v1", config=config)
    policy, env = trainer.get_policy(), gym.make("CartPole-v1")

    def noise_free_mean_return(episodes: int = 10) -> float:
        total = 0.0
        for episode in range(episodes):
            obs, _ = env.reset(seed=10_000 + episode)
            done = False
            while not done:
                action = policy.compute_actions_with(policy.flat_weights, obs[None])[0]
                obs, reward, terminated, truncated, _ = env.step(action)
                total, done = total + reward, terminated or truncated
        return total / episodes

    try:
        steps, score = 0, 0.0
        while steps < 100_000 and score < 475:
            steps = trainer.train()["timesteps_total"]
            score = noise_free_mean_return()
    finally:
        trainer.stop()
    assert score >= 475, (steps, score)
