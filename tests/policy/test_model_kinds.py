"""Every model kind and action selection fits the policy layer without touching the base classes.

Two policies are defined here from plain functions only: a value-based one (Q-network, optional
dueling heads, a target network, epsilon-greedy) and a deterministic actor with twin critics
(the shape SAC/DDPG/TD3 need). Both run on Torch and TF, and the same weights give the same
outputs, losses and gradients (1e-5) in both frameworks.
"""

from __future__ import annotations

import dataclasses
import pickle

import gymnasium as gym
import numpy as np
import pytest

from flowrl.config import AlgorithmConfig
from flowrl.policy import (
    EpsilonGreedy,
    GaussianNoise,
    PolicySpec,
    SampleBatch,
    deterministic_actor_critic_model,
    q_model,
)

pytestmark = pytest.mark.tf


@dataclasses.dataclass(frozen=True, kw_only=True)
class ValueTestConfig(AlgorithmConfig):
    dueling: bool = False
    epsilon: float = 0.5


@dataclasses.dataclass(frozen=True, kw_only=True)
class ActorTestConfig(AlgorithmConfig):
    twin_q: bool = True
    noise: float = 0.2


# ---- a value-based policy: one-step TD with a target network ---------------------------------


def td_loss_torch(policy, batch):
    import torch

    q = policy.model(batch["obs"])
    chosen = q.gather(1, batch["actions"].long().unsqueeze(1)).squeeze(1)
    with torch.no_grad():
        next_q = policy.target_model(batch["new_obs"]).max(dim=1).values
    target = batch["rewards"] + policy.config.gamma * (1.0 - batch["terminateds"].float()) * next_q
    td_error = chosen - target
    loss = torch.nn.functional.huber_loss(chosen, target, delta=1.0)
    return loss, {"mean_q": chosen.mean(), "mean_td_error": td_error.abs().mean()}


def td_loss_tf(policy, batch):
    import tensorflow as tf

    q = policy.model(batch["obs"])
    chosen = tf.gather(q, tf.cast(batch["actions"], tf.int32), batch_dims=1)
    next_q = tf.stop_gradient(tf.reduce_max(policy.target_model(batch["new_obs"]), axis=1))
    target = batch["rewards"] + policy.config.gamma * (
        1.0 - tf.cast(batch["terminateds"], tf.float32)) * next_q
    td_error = chosen - target
    loss = tf.reduce_mean(tf.keras.losses.huber(target[:, None], chosen[:, None], delta=1.0))
    return loss, {"mean_q": tf.reduce_mean(chosen), "mean_td_error": tf.reduce_mean(
        tf.abs(td_error))}


def td_errors_torch(policy, batch):
    q = policy.model(batch["obs"])
    chosen = q.gather(1, batch["actions"].long().unsqueeze(1)).squeeze(1)
    return {"q": chosen}


def fixed_epsilon(config, action_space, *, worker_index=0, num_workers=0, seed=None):
    return EpsilonGreedy.fixed(config.epsilon, seed=seed)


VALUE_POLICY = PolicySpec(
    name="test_value", torch_loss=td_loss_torch, tf_loss=td_loss_tf, model=q_model,
    action_selection=fixed_epsilon, postprocess=None, target_network=True,
    config_class=ValueTestConfig)


# ---- a deterministic actor with twin critics (TD3-shaped) ------------------------------------


def actor_critic_loss_torch(policy, batch):
    import torch

    obs, actions = batch["obs"], batch["actions"]
    with torch.no_grad():
        next_actions = policy.target_model.actor(batch["new_obs"])
        next_q = torch.minimum(*policy.target_model.critics(batch["new_obs"], next_actions))
        target = batch["rewards"] + policy.config.gamma * (
            1.0 - batch["terminateds"].float()) * next_q
    critic_loss = sum(((q - target) ** 2).mean() for q in policy.model.critics(obs, actions))
    actor_loss = -policy.model.critics(obs, policy.model.actor(obs))[0].mean()
    return critic_loss + actor_loss, {"critic_loss": critic_loss, "actor_loss": actor_loss}


def actor_critic_loss_tf(policy, batch):
    import tensorflow as tf

    obs, actions = batch["obs"], batch["actions"]
    next_actions = policy.target_model.actor(batch["new_obs"])
    next_q = tf.minimum(*policy.target_model.critics(batch["new_obs"], next_actions))
    target = tf.stop_gradient(batch["rewards"] + policy.config.gamma * (
        1.0 - tf.cast(batch["terminateds"], tf.float32)) * next_q)
    critic_loss = tf.add_n([tf.reduce_mean(tf.square(q - target))
                            for q in policy.model.critics(obs, actions)])
    actor_loss = -tf.reduce_mean(policy.model.critics(obs, policy.model.actor(obs))[0])
    return critic_loss + actor_loss, {"critic_loss": critic_loss, "actor_loss": actor_loss}


def gaussian_noise(config, action_space, *, worker_index=0, num_workers=0, seed=None):
    return GaussianNoise(action_space, stddev=config.noise, seed=seed)


ACTOR_POLICY = PolicySpec(
    name="test_actor", torch_loss=actor_critic_loss_torch, tf_loss=actor_critic_loss_tf,
    model=deterministic_actor_critic_model, action_selection=gaussian_noise, postprocess=None,
    target_network=True, config_class=ActorTestConfig)


OBS = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
IMAGE_OBS = gym.spaces.Box(0, 255, (36, 36, 3), np.uint8)
BOX_ACTIONS = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
CASES = {
    "q": (VALUE_POLICY, OBS, gym.spaces.Discrete(3), {"model": {"fcnet_hiddens": [16, 16]}}),
    "q_dueling": (VALUE_POLICY, OBS, gym.spaces.Discrete(3),
                  {"dueling": True, "model": {"fcnet_hiddens": [16]}}),
    "q_dueling_cnn": (VALUE_POLICY, IMAGE_OBS, gym.spaces.Discrete(4), {"dueling": True}),
    "deterministic_twin_critics": (ACTOR_POLICY, OBS, BOX_ACTIONS,
                                   {"model": {"fcnet_hiddens": [16, 16]}}),
}


def _batch(policy, n=16, seed=0):
    rng = np.random.default_rng(seed)
    space = policy.observation_space
    if space.dtype == np.uint8:
        raw = rng.integers(0, 256, size=(2 * n, *space.shape), dtype=np.uint8)
    else:
        raw = rng.uniform(-1, 1, size=(2 * n, *space.shape)).astype(np.float32)
    actions, _, _ = policy.compute_actions(raw[:n])
    return SampleBatch(obs=policy.preprocess(raw[:n]), new_obs=policy.preprocess(raw[n:]),
                       actions=actions, rewards=rng.normal(size=n).astype(np.float32),
                       terminateds=rng.random(n) < 0.2, truncateds=np.zeros(n, bool))


@pytest.fixture(params=list(CASES))
def pair(request):
    spec, obs_space, action_space, overrides = CASES[request.param]
    torch_policy = spec.build(obs_space, action_space, {**overrides, "seed": 0, "lr": 1e-2})
    tf_policy = spec.build(obs_space, action_space,
                           {**overrides, "framework": "tf", "seed": 1, "lr": 1e-2})
    tf_policy.set_state(torch_policy.get_state())
    return request.param, torch_policy, tf_policy


def _forward(policy, obs_rows):
    if policy.model_spec.kind == "q":
        return policy.compute_q_values(obs_rows)
    return policy.compute_deterministic_actions(obs_rows)


def test_same_weights_give_same_outputs_losses_and_gradients(pair):
    name, torch_policy, tf_policy = pair
    batch = _batch(torch_policy)
    np.testing.assert_allclose(_forward(torch_policy, batch["obs"]),
                               _forward(tf_policy, batch["obs"]), atol=1e-5)
    for key, value in torch_policy.get_target_weights().items():
        np.testing.assert_allclose(value, tf_policy.get_target_weights()[key], atol=1e-6)
    torch_grads, torch_stats = torch_policy.compute_gradients(batch)
    tf_grads, tf_stats = tf_policy.compute_gradients(batch)
    for key in torch_stats:
        if key != "cur_lr":
            assert torch_stats[key] == pytest.approx(tf_stats[key], rel=1e-4, abs=1e-5), key
    for weight_name, a, b in zip(torch_policy.get_weights(), torch_grads, tf_grads):
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=f"{name}: {weight_name}")


def test_training_and_target_updates_agree_across_frameworks(pair):
    _, torch_policy, tf_policy = pair
    batch = _batch(torch_policy, seed=4)
    for _ in range(3):
        torch_policy.learn_on_batch(batch)
        tf_policy.learn_on_batch(batch)
    torch_policy.update_target(tau=0.5)
    tf_policy.update_target(tau=0.5)
    before = torch_policy.get_target_weights()
    for key, value in torch_policy.get_weights().items():
        # Adam's first steps move a weight by about lr * sign(gradient), so a gradient that is
        # ~1e-9 in both frameworks may flip sign; all but a handful of weights must agree.
        for ours, theirs in ((value, tf_policy.get_weights()[key]),
                             (before[key], tf_policy.get_target_weights()[key])):
            assert np.mean(np.abs(ours - theirs) > 1e-4) < 1e-3, key
    # tau=1 copies the model exactly; a target that moved halfway is not yet equal.
    torch_policy.update_target()
    for key, value in torch_policy.get_weights().items():
        np.testing.assert_array_equal(value, torch_policy.get_target_weights()[key])


def test_dueling_q_values_are_value_plus_centered_advantages():
    policy = VALUE_POLICY.build(OBS, gym.spaces.Discrete(3),
                                {"dueling": True, "seed": 2, "model": {"fcnet_hiddens": [8]}})
    weights = policy.get_weights()
    assert {"q/advantage/out/kernel", "q/value/out/kernel"} <= set(weights)
    obs = np.random.default_rng(0).uniform(-1, 1, (5, 4)).astype(np.float32)
    hidden = np.tanh(obs @ weights["q/fc_0/kernel"] + weights["q/fc_0/bias"])
    advantages = hidden @ weights["q/advantage/out/kernel"] + weights["q/advantage/out/bias"]
    value = hidden @ weights["q/value/out/kernel"] + weights["q/value/out/bias"]
    expected = value + advantages - advantages.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(policy.compute_q_values(obs), expected, atol=1e-5)


def test_epsilon_greedy_explores_at_its_rate_and_is_greedy_otherwise():
    policy = VALUE_POLICY.build(OBS, gym.spaces.Discrete(3), {"epsilon": 0.3, "seed": 3})
    obs = np.zeros((4000, 4), np.float32)
    greedy = int(np.argmax(policy.compute_q_values(obs[:1])[0]))
    explored, _, _ = policy.compute_actions(obs, explore=True)
    # A random action equals the greedy one a third of the time: P(other) = 0.3 * 2/3.
    assert np.mean(explored != greedy) == pytest.approx(0.2, abs=0.03)
    assert (policy.compute_actions(obs, explore=False)[0] == greedy).all()


def test_epsilon_schedule_follows_global_timestep():
    selector = EpsilonGreedy(initial_epsilon=1.0, final_epsilon=0.02, decay_timesteps=1000)
    for timestep, expected in ((0, 1.0), (500, 0.51), (1000, 0.02), (5000, 0.02)):
        selector.on_global_var_update(timestep)
        assert selector.epsilon == pytest.approx(expected)


def test_deterministic_actor_actions_stay_in_bounds_with_noise():
    policy = ACTOR_POLICY.build(OBS, BOX_ACTIONS, {"noise": 5.0, "seed": 0})
    obs = np.random.default_rng(1).uniform(-1, 1, (500, 4)).astype(np.float32)
    actions, _, _ = policy.compute_actions(obs, explore=True)
    assert actions.shape == (500, 2) and actions.dtype == np.float32
    assert (actions >= -2.0).all() and (actions <= 2.0).all()
    greedy, _, _ = policy.compute_actions(obs, explore=False)
    unit = policy.compute_deterministic_actions(obs)
    np.testing.assert_allclose(greedy, 2.0 * unit, atol=1e-5)


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_policies_of_every_kind_pickle_and_keep_their_target(framework):
    for spec, obs_space, action_space, overrides in CASES.values():
        policy = spec.build(obs_space, action_space, {**overrides, "framework": framework,
                                                      "seed": 5})
        policy.learn_on_batch(_batch(policy))
        clone = pickle.loads(pickle.dumps(policy))
        for key, value in policy.get_target_weights().items():
            np.testing.assert_array_equal(value, clone.get_target_weights()[key])
        batch = _batch(policy, seed=9)
        np.testing.assert_allclose(_forward(policy, batch["obs"]), _forward(clone, batch["obs"]),
                                   atol=1e-6)


def test_run_on_batch_returns_numpy_outputs():
    policy = VALUE_POLICY.build(OBS, gym.spaces.Discrete(3), {"seed": 0})
    batch = _batch(policy)
    outputs = policy.run_on_batch(td_errors_torch, batch)
    expected = policy.compute_q_values(batch["obs"])[np.arange(len(batch)), batch["actions"]]
    np.testing.assert_allclose(outputs["q"], expected, atol=1e-6)


def test_mismatched_model_and_action_selection_is_a_clear_error():
    spec = dataclasses.replace(VALUE_POLICY, name="bad", model=deterministic_actor_critic_model)
    with pytest.raises(ValueError, match="A deterministic actor needs a continuous"):
        spec.build(OBS, gym.spaces.Discrete(3), {})
    spec = dataclasses.replace(
        ACTOR_POLICY, name="bad",
        action_selection=lambda config, space, **_: EpsilonGreedy.fixed(0.1))
    policy = spec.build(OBS, BOX_ACTIONS, {"seed": 0})
    with pytest.raises(TypeError, match="cannot compute Q-values: its model contract is"):
        policy.compute_actions(np.zeros((2, 4), np.float32))
    no_target = dataclasses.replace(VALUE_POLICY, name="no_target", target_network=False)
    with pytest.raises(ValueError, match="has no target network"):
        no_target.build(OBS, gym.spaces.Discrete(3), {}).update_target()
