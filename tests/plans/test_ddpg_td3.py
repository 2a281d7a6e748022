"""DDPG and TD3: the delayed actor, target smoothing, Torch/TF loss parity, exploration and
target updates by optimizer updates, config checks and smoke runs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import flowrl
from flowrl.data import SampleBatch
from flowrl.iter import LocalIterator
from flowrl.iter.metrics import MetricsContext
from flowrl.ops import UpdateTargetNetwork
from flowrl.plans.actor_critic_replay import NEXT_ACTION_NOISE
from flowrl.plans.ddpg import DDPG_POLICY, DDPGConfig
from flowrl.plans.td3 import TD3_POLICY, TD3Config
from flowrl.policy.actor_exploration import ActorNoise
from flowrl.replay import WEIGHTS

OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
BOX = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
SMALL = {"seed": 0, "model": {"fcnet_hiddens": [16]}}


def replay_batch(size: int = 32, seed: int = 0) -> SampleBatch:
    rng = np.random.default_rng(seed)
    return SampleBatch(
        obs=rng.uniform(-1, 1, (size, 3)).astype(np.float32),
        new_obs=rng.uniform(-1, 1, (size, 3)).astype(np.float32),
        actions=rng.uniform(BOX.low, BOX.high, (size, 2)).astype(np.float32),
        rewards=rng.normal(size=size).astype(np.float32),
        terminateds=rng.random(size) < 0.2, truncateds=np.zeros(size, bool),
        **{NEXT_ACTION_NOISE: rng.standard_normal((size, 2)).astype(np.float32),
           WEIGHTS: rng.uniform(0.5, 1.0, size).astype(np.float32)})


class _LocalWorker:
    def __init__(self, policy):
        self.policy = policy


class _Workers:
    def __init__(self, policy):
        self._local = _LocalWorker(policy)

    def local_worker(self):
        return self._local


@pytest.mark.parametrize("framework", ["torch", pytest.param("tf", marks=pytest.mark.tf)])
def test_td3_steps_the_actor_on_every_second_update_and_the_critics_on_each(framework):
    policy = TD3_POLICY.build(OBS, BOX, {**SMALL, "framework": framework})
    actor = [n for n in policy.model_weights.names if n.startswith("pi/")]
    critics = [n for n in policy.model_weights.names if n.startswith(("q1/", "q2/"))]
    snapshots = [policy.get_weights()]
    for seed in range(4):
        policy.learn_on_batch(replay_batch(seed=seed))
        snapshots.append(policy.get_weights())
    for update in range(4):
        before, after = snapshots[update], snapshots[update + 1]
        actor_moved = any(not np.array_equal(before[n], after[n]) for n in actor)
        assert actor_moved == (update % 2 == 0), update
        assert all(not np.array_equal(before[n], after[n]) for n in critics), update
    assert policy.num_updates == 4


def test_the_target_network_moves_by_tau_every_k_optimizer_updates(local_executor):
    policy = TD3_POLICY.build(OBS, BOX, {**SMALL, "framework": "torch"})
    update = UpdateTargetNetwork(_Workers(policy), 2, by="updates", tau=0.5)
    with MetricsContext().activate():
        policy.learn_on_batch(replay_batch(seed=0))
        target = policy.get_target_weights()
        update(None)  # one update so far: not yet
        np.testing.assert_array_equal(policy.get_target_weights()["pi/out/bias"],
                                      target["pi/out/bias"])
        policy.learn_on_batch(replay_batch(seed=1))
        update(None)
        online = policy.get_weights()
        for name, value in policy.get_target_weights().items():
            np.testing.assert_allclose(value, 0.5 * (target[name] + online[name]), atol=1e-6)
        assert LocalIterator.get_metrics().counters["learner/target_updates"] == 1


@pytest.mark.tf
@pytest.mark.parametrize("spec, extra", [(TD3_POLICY, {}), (DDPG_POLICY, {"use_huber": True,
                                                                          "l2_reg": 1e-3})],
                         ids=["td3", "ddpg-huber-l2"])
def test_torch_and_tf_losses_and_gradients_agree(spec, extra):
    config = {**SMALL, "model": {"fcnet_hiddens": [16, 16]}, **extra}
    torch_policy = spec.build(OBS, BOX, {**config, "framework": "torch"})
    tf_policy = spec.build(OBS, BOX, {**config, "framework": "tf"})
    torch_policy.learn_on_batch(replay_batch(seed=1))
    tf_policy.set_weights(torch_policy.get_weights())
    tf_policy.target_weights.set_weights(torch_policy.get_target_weights())
    batch = replay_batch(seed=2)
    torch_grads, torch_stats = torch_policy.compute_gradients(batch)
    tf_grads, tf_stats = tf_policy.compute_gradients(batch)
    for key in ("actor_loss", "critic_loss", "mean_q", "max_q", "mean_td_error"):
        assert torch_stats[key] == pytest.approx(tf_stats[key], abs=1e-5, rel=1e-5), key
    for name, torch_grad, tf_grad in zip(torch_policy.model_weights.names, torch_grads,
                                         tf_grads):
        np.testing.assert_allclose(torch_grad, tf_grad, atol=1e-5, rtol=1e-4, err_msg=name)


def test_target_smoothing_changes_the_target_only_when_switched_on():
    batch = replay_batch(seed=3)
    smooth = TD3_POLICY.build(OBS, BOX, {**SMALL, "framework": "torch"})
    plain = TD3_POLICY.build(OBS, BOX, {**SMALL, "framework": "torch",
                                        "smooth_target_policy": False})
    from flowrl.plans.ddpg import compute_td_errors

    assert not np.allclose(compute_td_errors(smooth, batch), compute_td_errors(plain, batch))
    no_noise = SampleBatch({**batch, NEXT_ACTION_NOISE: np.zeros((len(batch), 2), np.float32)})
    np.testing.assert_allclose(compute_td_errors(smooth, no_noise),
                               compute_td_errors(plain, no_noise), atol=1e-6)


def test_exploration_is_uniform_first_then_noisy_and_greedy_is_the_actor():
    policy = DDPG_POLICY.build(OBS, BOX, {**SMALL, "framework": "torch",
                                          "random_timesteps": 100})
    obs = np.zeros((256, 3), np.float32)
    random, _, _ = policy.compute_actions(obs)
    assert random[:, 0].min() < -1.5 and random[:, 0].max() > 1.5  # spread over [-2, 2]
    policy.on_global_var_update({"timestep": 100})
    noisy, _, _ = policy.compute_actions(obs)
    greedy, _, _ = policy.compute_actions(obs, explore=False)
    assert np.all((noisy >= BOX.low) & (noisy <= BOX.high))
    assert np.allclose(greedy, greedy[0]) and not np.allclose(noisy, greedy)
    assert abs(float(np.mean(noisy - greedy))) < 0.1  # OU noise around the actor's action


def test_ou_noise_is_correlated_over_steps_and_gaussian_is_not():
    ou = ActorNoise(BOX, noise_type="ou", scale=1.0, seed=0)
    gaussian = ActorNoise(BOX, noise_type="gaussian", scale=1.0, seed=0)

    def lag_one_correlation(selector):
        draws = np.array([selector._noise((1, 2))[0, 0] for _ in range(4000)])
        return np.corrcoef(draws[:-1], draws[1:])[0, 1]

    assert lag_one_correlation(ou) > 0.7
    assert abs(lag_one_correlation(gaussian)) < 0.1


@pytest.mark.parametrize("algo", ["ddpg", "td3"])
def test_a_discrete_action_space_is_refused_naming_sac_and_dqn(algo, tiny_config,
                                                                local_executor):
    with pytest.raises(ValueError, match="SAC"):
        flowrl.Trainer(algo, env="corridor", config=tiny_config(algo))


@pytest.mark.parametrize("bad, match", [({"policy_delay": 0}, "policy_delay must be >= 1"),
                                        ({"ou_theta": 2.0}, "ou_theta"),
                                        ({"target_noise": -0.1}, "target_noise must be >= 0"),
                                        ({"exploration_noise_type": "pink"}, "ou")])
def test_bad_ddpg_settings_are_refused(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        flowrl.config.from_dict(DDPGConfig, bad)


@pytest.mark.parametrize("algo", ["ddpg", "td3"])
@pytest.mark.parametrize("framework", ["torch", pytest.param("tf", marks=pytest.mark.tf)])
def test_two_iterations_train_with_metrics(algo, framework, tiny_config, local_executor):
    trainer = flowrl.Trainer(algo, env="continuous_corridor", config=tiny_config(
        algo, framework=framework, min_steps_per_iteration=60))
    try:
        for _ in range(2):
            result = trainer.train()
        learner = result["info"]["learner"]["default_policy"]
        for key in ("actor_loss", "critic_loss", "mean_q", "max_q", "min_q"):
            assert np.isfinite(learner[key]), key
        assert result["info"]["counters"]["learner/target_updates"] > 0
        assert isinstance(trainer.config, TD3Config if algo == "td3" else DDPGConfig)
    finally:
        trainer.stop()


def test_apex_ddpg_trains_from_replay_actors_at_its_replay_ratio(tiny_config, ray_executor):
    trainer = flowrl.Trainer("apex_ddpg", env="continuous_corridor", config=tiny_config(
        "apex_ddpg", rollout_fragment_length=20, min_steps_per_iteration=400,
        training_intensity=4))
    try:
        for _ in range(3):
            result = trainer.train()
        learner = result["info"]["learner"]["default_policy"]
        for key in ("actor_loss", "critic_loss", "mean_q"):
            assert np.isfinite(learner[key]), key
        counters = result["info"]["counters"]
        assert counters["replay/priority_updates"] > 0 and counters["learner/target_updates"] > 0
        assert result["info"]["learner/replay_ratio"] == pytest.approx(4, rel=0.25)
        labels = [data["label"] for _, data in trainer.plan_graph().nodes(data=True)]
        assert any("WorkerSidePriorities" in label for label in labels)
    finally:
        trainer.stop()


def test_apex_ddpg_workers_explore_with_falling_noise_scales():
    from flowrl.plans.apex_ddpg import ApexDDPGConfig, per_worker_noise

    scales = [per_worker_noise(ApexDDPGConfig(), BOX, worker_index=i, num_workers=4).scale
              for i in (1, 2, 3, 4)]
    assert scales[0] == pytest.approx(0.4) and scales == sorted(scales, reverse=True)
    with pytest.raises(ValueError, match="Ape-X DDPG"):
        per_worker_noise(ApexDDPGConfig(), gym.spaces.Discrete(2))
