"""SAC: the squashed Gaussian, Torch/TF loss parity, temperature, config checks, smoke runs."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import flowrl
from flowrl.data import SampleBatch
from flowrl.plans.actor_critic_replay import ACTION_NOISE, NEXT_ACTION_NOISE
from flowrl.plans.sac import SAC_POLICY, SACConfig, _squashed_sample_torch, target_entropy
from flowrl.policy.actor_exploration import from_unit_actions, to_unit_actions
from flowrl.replay import WEIGHTS

OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
BOX = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))


def replay_batch(action_space: gym.Space, size: int = 32, seed: int = 0) -> SampleBatch:
    """A batch as the replay buffer hands it out, with the loss's noise columns given."""
    rng = np.random.default_rng(seed)
    if isinstance(action_space, gym.spaces.Discrete):
        actions = rng.integers(0, action_space.n, size)
        noise_shape = (size, 1)
    else:
        actions = rng.uniform(action_space.low, action_space.high,
                              (size, *action_space.shape)).astype(np.float32)
        noise_shape = (size, action_space.shape[0])
    terminateds = rng.random(size) < 0.2
    return SampleBatch(
        obs=rng.uniform(-1, 1, (size, 3)).astype(np.float32),
        new_obs=rng.uniform(-1, 1, (size, 3)).astype(np.float32), actions=actions,
        rewards=rng.normal(size=size).astype(np.float32), terminateds=terminateds,
        truncateds=np.zeros(size, bool),
        **{ACTION_NOISE: rng.standard_normal(noise_shape).astype(np.float32),
           NEXT_ACTION_NOISE: rng.standard_normal(noise_shape).astype(np.float32),
           WEIGHTS: rng.uniform(0.5, 1.0, size).astype(np.float32)})


def test_the_squashed_log_prob_equals_torchs_transformed_distribution_and_stays_finite():
    import torch
    from torch.distributions import Normal, TanhTransform, TransformedDistribution

    torch.manual_seed(0)
    inputs = torch.randn(64, 4)
    noise = torch.randn(64, 2)
    action, logp = _squashed_sample_torch(inputs, noise)
    mean, log_std = inputs.chunk(2, dim=-1)
    reference = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()])
    pre_squash = mean + log_std.exp() * noise
    expected = reference.log_prob(torch.tanh(pre_squash).clamp(-0.999999, 0.999999)).sum(-1)
    mask = pre_squash.abs().max(dim=-1).values < 3  # away from where atanh loses precision
    torch.testing.assert_close(logp[mask], expected[mask], atol=1e-3, rtol=1e-4)
    # At the bounds (|u| = 40: tanh(u) rounds to exactly +-1) the log-prob stays finite.
    extreme = torch.tensor([[40.0, -40.0, -20.0, -20.0]])
    action, logp = _squashed_sample_torch(extreme, torch.zeros(1, 2))
    assert torch.isfinite(logp).all() and action.abs().max() == 1.0


def test_unit_actions_round_trip_through_the_env_bounds():
    low, high = BOX.low, BOX.high
    unit = np.array([[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0]], np.float32)
    env = from_unit_actions(unit, low, high, normalize_actions=True, clip_actions=True)
    np.testing.assert_allclose(env, [[-2.0, 0.0], [0.0, 0.5], [2.0, 1.0]])
    np.testing.assert_allclose(to_unit_actions(env, low, high, normalize_actions=True), unit,
                               atol=1e-6)
    raw = from_unit_actions(unit, low, high, normalize_actions=False, clip_actions=True)
    np.testing.assert_allclose(raw, [[-1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])


def test_target_entropy_auto_and_its_discrete_scale():
    assert target_entropy(SACConfig(), BOX) == -2.0
    assert target_entropy(SACConfig(), gym.spaces.Discrete(2)) == pytest.approx(
        0.6 * math.log(2))
    assert target_entropy(SACConfig(target_entropy=-0.5), BOX) == -0.5


@pytest.mark.parametrize("bad, match", [
    ({"target_entropy_scale": 0.99999 + 1}, "target_entropy_scale must be in"),
    ({"initial_alpha": 0.0}, "initial_alpha must be > 0"),
    ({"tau": 0.0}, "tau must be in"),
    ({"actor_lr": -1.0}, "actor_lr must be > 0"),
    ({"random_timesteps": -1}, "random_timesteps must be >= 0"),
])
def test_bad_sac_settings_are_refused_with_the_field_named(bad, match):
    with pytest.raises(ValueError, match=match):
        SACConfig(**bad)


def test_an_unbounded_box_with_normalized_actions_is_refused_naming_the_fix():
    unbounded = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    with pytest.raises(ValueError, match="normalize_actions=False"):
        SAC_POLICY.build(OBS, unbounded, SACConfig(seed=0))
    policy = SAC_POLICY.build(OBS, unbounded, SACConfig(seed=0, normalize_actions=False))
    actions, _, _ = policy.compute_actions(np.zeros((4, 3), np.float32))
    assert np.all(np.abs(actions) <= 1.0)


@pytest.mark.tf
@pytest.mark.parametrize("action_space", [BOX, gym.spaces.Discrete(3)], ids=["box", "discrete"])
def test_torch_and_tf_sac_losses_and_gradients_agree(action_space):
    config = {"seed": 3, "model": {"fcnet_hiddens": [16, 16]}, "prioritized_replay": True}
    torch_policy = SAC_POLICY.build(OBS, action_space, {**config, "framework": "torch"})
    tf_policy = SAC_POLICY.build(OBS, action_space, {**config, "framework": "tf"})
    for name, value in torch_policy.get_weights().items():
        np.testing.assert_array_equal(value, tf_policy.get_weights()[name])
    torch_policy.learn_on_batch(replay_batch(action_space, seed=1))  # online != target
    tf_policy.set_weights(torch_policy.get_weights())
    tf_policy.target_weights.set_weights(torch_policy.get_target_weights())
    batch = replay_batch(action_space, seed=2)
    torch_grads, torch_stats = torch_policy.compute_gradients(batch)
    tf_grads, tf_stats = tf_policy.compute_gradients(batch)
    for key in ("actor_loss", "critic_loss", "alpha_loss", "alpha", "entropy", "mean_q"):
        assert torch_stats[key] == pytest.approx(tf_stats[key], abs=1e-5, rel=1e-5), key
    for name, torch_grad, tf_grad in zip(torch_policy.model_weights.names, torch_grads,
                                         tf_grads):
        np.testing.assert_allclose(torch_grad, tf_grad, atol=1e-5, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("framework", ["torch", pytest.param("tf", marks=pytest.mark.tf)])
def test_each_group_moves_only_its_weights_and_alpha_follows_the_entropy(framework):
    policy = SAC_POLICY.build(OBS, BOX, {"framework": framework, "seed": 0,
                                         "model": {"fcnet_hiddens": [16]},
                                         "target_entropy": 5.0, "entropy_lr": 0.1})
    before = policy.get_weights()
    # Far above any reachable entropy: the temperature must rise.
    for seed in range(3):
        stats = policy.learn_on_batch(replay_batch(BOX, seed=seed))
    after = policy.get_weights()
    assert after["log_alpha"][0] > before["log_alpha"][0]
    assert 1.0 < stats["alpha"] < math.exp(after["log_alpha"][0])  # alpha before the step
    for prefix in ("pi/", "q1/", "q2/"):
        assert any(not np.array_equal(before[n], after[n]) for n in before if n.startswith(prefix))
    for key in ("actor_loss", "critic_loss", "alpha_loss", "entropy", "target_entropy"):
        assert np.isfinite(stats[key]), key


@pytest.mark.parametrize("framework", ["torch", pytest.param("tf", marks=pytest.mark.tf)])
def test_sac_trains_on_a_box_corridor_with_actions_inside_the_bounds(framework, tiny_config,
                                                                     local_executor):
    trainer = flowrl.Trainer("sac", env="continuous_corridor", config=tiny_config(
        "sac", framework=framework, min_steps_per_iteration=60))
    try:
        for _ in range(2):
            result = trainer.train()
        learner = result["info"]["learner"]["default_policy"]
        for key in ("actor_loss", "critic_loss", "alpha", "entropy", "mean_q", "max_q"):
            assert np.isfinite(learner[key]), key
        assert result["info"]["counters"]["learner/target_updates"] > 0
        policy = trainer.get_policy()
        actions, _, _ = policy.compute_actions(np.random.default_rng(0).random((64, 2)))
        assert actions.shape == (64, 1) and np.all(np.abs(actions) <= 2.0)
    finally:
        trainer.stop()


def test_discrete_sac_learns_the_corridor(tiny_config, local_executor):
    # The corridor pays 1 for walking right 5 cells within 20 steps: a random walk gets there
    # about half the time, the learned policy (greedy) every time. The temperature starts and
    # stays small: the entropy bonus is paid on every step, and with a large one staying in
    # the corridor (truncated episodes bootstrap) is worth more than the terminal reward.
    trainer = flowrl.Trainer("sac", env="corridor", config=tiny_config(
        "sac", min_steps_per_iteration=200, training_intensity=32,
        model={"fcnet_hiddens": [32]}, actor_lr=3e-3, critic_lr=3e-3, initial_alpha=0.01,
        target_entropy_scale=0.1))
    try:
        for _ in range(6):
            trainer.train()
        evaluation = trainer.evaluate()["evaluation"]
        assert evaluation["episode_reward_mean"] == 1.0
    finally:
        trainer.stop()


def test_sac_plan_reads_as_a_store_flow_and_a_replay_train_flow(tiny_config, local_executor):
    trainer = flowrl.Trainer("sac", env="corridor", config=tiny_config("sac"))
    try:
        labels = [data["label"] for _, data in trainer.plan_graph().nodes(data=True)]
        for operator in ("StoreToReplay(", "Replay(", "TrainOneStep(", "UpdateTargetNetwork(",
                         "Concurrently"):
            assert any(operator in label for label in labels), (operator, labels)
    finally:
        trainer.stop()


def test_independent_sac_policies_each_train_from_their_own_buffer(local_executor):
    config = {"num_workers": 0, "num_envs_per_worker": 2, "rollout_fragment_length": 10,
              "num_cpus_per_worker": 0, "seed": 7, "model": {"fcnet_hiddens": [16]},
              "env_config": {"width": 4, "height": 4, "timestep_limit": 10},
              "min_steps_per_iteration": 60, "learning_starts": 40, "train_batch_size": 16,
              "random_timesteps": 20, "training_intensity": 8,
              "policies": {"p1": {}, "p2": {"config": {"target_entropy_scale": 0.3}}},
              "policy_mapping": {"agent1": "p1", "agent2": "p2"}}
    trainer = flowrl.Trainer("sac", env="MultiAgentArena-v0", config=config)
    try:
        learner = {}
        for _ in range(3):
            learner.update(trainer.train()["info"]["learner"])
    finally:
        trainer.stop()
    assert set(learner) == {"p1", "p2"}
    assert learner["p1"]["target_entropy"] == pytest.approx(0.6 * math.log(4))
    assert learner["p2"]["target_entropy"] == pytest.approx(0.3 * math.log(4))


@pytest.mark.parametrize("framework", ["torch", pytest.param("tf", marks=pytest.mark.tf)])
def test_a_restored_sac_run_continues_with_its_weights_targets_and_update_count(
        framework, tiny_config, tmp_path, local_executor):
    trainer = flowrl.Trainer("sac", env="continuous_corridor", config=tiny_config(
        "sac", framework=framework, min_steps_per_iteration=100))
    try:
        saved_at = trainer.train()["timesteps_total"]
        path = trainer.save(str(tmp_path))
        policy = trainer.get_policy()
        restored = flowrl.Trainer.from_checkpoint(path)
        try:
            again = restored.get_policy()
            assert again.num_updates == policy.num_updates > 0
            for name, value in policy.get_weights().items():
                np.testing.assert_array_equal(value, again.get_weights()[name])
            for name, value in policy.get_target_weights().items():
                np.testing.assert_array_equal(value, again.get_target_weights()[name])
            assert restored.train()["timesteps_total"] >= saved_at + 100  # counts resume
        finally:
            restored.stop()
    finally:
        trainer.stop()
