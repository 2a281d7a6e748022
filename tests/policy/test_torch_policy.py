"""TorchPolicy behaviour: acting, learning, state, seeding, schedules and error messages."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from flowrl.plans.pg import PG_POLICY
from flowrl.policy import PolicySpec, SampleBatch, pg_loss_torch

CARTPOLE_OBS = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
AC_CONFIG = {"use_critic": True, "use_gae": True, "gae_lambda": 0.95, "seed": 0}


TWO_ACTIONS = gym.spaces.Discrete(2)


def pg(obs_space=CARTPOLE_OBS, action_space=TWO_ACTIONS, **config):
    return PG_POLICY.build(obs_space, action_space, {"seed": 0, **config})


def rollout(policy, n=64, seed=0):
    obs = np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)
    actions, _, extras = policy.compute_actions(obs)
    batch = SampleBatch(obs=policy.preprocess(obs), new_obs=policy.preprocess(obs),
                        actions=actions, rewards=np.random.default_rng(seed).normal(size=n),
                        terminateds=np.zeros(n, bool), truncateds=np.zeros(n, bool), **extras)
    return policy.postprocess_trajectory(batch)


def test_compute_actions_types_and_extras():
    policy = pg(**AC_CONFIG)
    actions, state, extras = policy.compute_actions(np.zeros((5, 4), np.float32))
    assert state == [] and policy.initial_state() == []
    assert actions.shape == (5,) and actions.dtype == np.int64
    assert set(extras) == {"action_logp", "action_dist_inputs", "vf_preds"}
    assert extras["action_dist_inputs"].shape == (5, 2) and extras["vf_preds"].shape == (5,)
    action, _, single = policy.compute_single_action(np.zeros(4, np.float32), explore=False)
    assert action in (0, 1) and single["action_logp"].shape == ()
    assert policy.compute_values(np.zeros((3, 4), np.float32)).shape == (3,)
    # vanilla PG has no value branch: vf_preds are zeros
    assert not pg().compute_actions(np.ones((2, 4), np.float32))[2]["vf_preds"].any()


@pytest.mark.parametrize("space, shape, dtype", [
    (gym.spaces.MultiDiscrete([3, 2]), (4, 2), np.int64),
    (gym.spaces.Box(-1, 1, (2, 2), np.float32), (4, 2, 2), np.float32),
    (gym.spaces.Discrete(3, start=5), (4,), np.int64),
])
def test_action_spaces(space, shape, dtype):
    policy = pg(action_space=space, **AC_CONFIG)
    actions, _, _ = policy.compute_actions(np.zeros((4, 4), np.float32))
    assert actions.shape == shape and actions.dtype == dtype
    if not isinstance(space, gym.spaces.Box):
        assert all(space.contains(a) for a in actions)
    policy.learn_on_batch(rollout_for(policy))


def rollout_for(policy, n=8):
    obs = np.zeros((n, 4), np.float32)
    actions, _, extras = policy.compute_actions(obs)
    batch = SampleBatch(obs=obs, new_obs=obs, actions=actions, rewards=np.ones(n),
                        terminateds=np.zeros(n, bool), truncateds=np.zeros(n, bool), **extras)
    return policy.postprocess_trajectory(batch)


def test_dict_and_discrete_observations_and_image_cnn():
    space = gym.spaces.Dict({"pos": gym.spaces.Box(-1, 1, (3,)), "id": gym.spaces.Discrete(4)})
    policy = pg(obs_space=space)
    actions, _, _ = policy.compute_actions({"pos": np.zeros((2, 3)), "id": np.array([0, 3])})
    assert actions.shape == (2,) and policy.preprocessor.shape == (7,)
    assert pg(obs_space=gym.spaces.Discrete(5)).compute_actions(np.array([4]))[0].shape == (1,)
    image = gym.spaces.Box(0, 255, (36, 36, 3), np.uint8)
    cnn = pg(obs_space=image)
    assert "conv_2/kernel" in cnn.get_weights() and cnn.get_weights()["conv_0/kernel"].shape == (
        8, 8, 3, 32)
    assert cnn.compute_actions(np.zeros((2, 36, 36, 3), np.uint8))[0].shape == (2,)


def test_learn_on_batch_reduces_pg_loss():
    policy = pg(lr=1e-2)
    batch = rollout(policy)
    first = policy.learn_on_batch(batch)["policy_loss"]
    for _ in range(20):
        last = policy.learn_on_batch(batch)["policy_loss"]
    assert last < first - 0.1


def test_learn_on_minibatches_and_gradients():
    policy = pg(**AC_CONFIG)
    batch = rollout(policy, n=50)
    before = policy.get_weights()
    stats = policy.learn_on_minibatches(batch, num_sgd_iter=2, sgd_minibatch_size=16)
    assert {"policy_loss", "vf_loss", "entropy", "total_loss", "grad_gnorm"} <= set(stats)
    assert policy.optimizer.state[policy.model.parameters()[0]]["step"] == 8  # 2 epochs x 4
    assert not np.allclose(before["pi/fc_0/kernel"], policy.get_weights()["pi/fc_0/kernel"])
    grads, _ = policy.compute_gradients(batch)
    assert [g.shape for g in grads] == [w.shape for w in policy.get_weights().values()]
    policy.apply_gradients(grads)
    with pytest.raises(ValueError, match="one gradient per weight"):
        policy.apply_gradients(grads[:1])


def test_grad_clip_limits_applied_gradient():
    policy = pg(grad_clip=0.01)
    grads, stats = policy.compute_gradients(rollout(policy))
    assert stats["grad_gnorm"] > 0.01
    assert np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads)) == pytest.approx(
        0.01, rel=1e-3)


def test_state_round_trip_includes_optimizer():
    a, b = pg(**{**AC_CONFIG, "seed": 1}), pg(**{**AC_CONFIG, "seed": 2})
    batch = rollout(a)
    a.learn_on_batch(batch)
    a.set_coefficient("entropy_coeff", 0.02)
    a.on_global_var_update({"timestep": 123})
    b.set_state(a.get_state())
    assert b.global_timestep == 123 and b.get_coefficient("entropy_coeff") == 0.02
    a.learn_on_batch(batch)
    b.learn_on_batch(batch)
    for name, value in a.get_weights().items():
        np.testing.assert_array_equal(value, b.get_weights()[name])


def test_seeding_reproducible_and_independent():
    obs = np.zeros((200, 4), np.float32)
    a, b, c = pg(seed=7), pg(seed=7), pg(seed=8)
    assert np.array_equal(a.compute_actions(obs)[0], b.compute_actions(obs)[0])
    assert not np.array_equal(a.get_weights()["pi/fc_0/kernel"],
                              c.get_weights()["pi/fc_0/kernel"])


def test_lr_schedule_and_coefficients():
    policy = pg(lr_schedule=[[0, 1e-3], [100, 1e-4]])
    policy.on_global_var_update({"timestep": 50})
    assert policy.optimizer.param_groups[0]["lr"] == pytest.approx(5.5e-4)
    assert policy.learn_on_batch(rollout(policy))["cur_lr"] == pytest.approx(5.5e-4)
    # Only the fields the PolicySpec declares are mutable coefficients; no naming magic.
    assert policy.coefficient_names == ["entropy_coeff"]
    with pytest.raises(ValueError, match="unknown loss coefficient name='vf_loss_coeff'"):
        policy.get_coefficient("vf_loss_coeff")
    with pytest.raises(ValueError, match="kl_coeff"):
        pg(kl_coeff=0.2)


def test_error_messages():
    policy = pg()
    with pytest.raises(ValueError) as info:
        policy.compute_actions(np.zeros((2, 3), np.float32))
    assert "expected shape (batch_size, 4), got shape=(2, 3)" in str(info.value)
    batch = rollout(policy, n=4)
    batch["actions"] = np.array([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"actions outside action_space=Discrete\(2\).*max=2"):
        policy.learn_on_batch(batch)
    with pytest.raises(ValueError, match="unsupported observation_space=Text"):
        pg(obs_space=gym.spaces.Text(4))
    with pytest.raises(ValueError, match="model.fcnet_hidden.*Did you mean 'model.fcnet_hiddens'"):
        pg(model={"fcnet_hidden": [32]})
    with pytest.raises(ValueError, match=r"framework must be one of 'torch', 'tf'"):
        pg(framework="jax")
    with pytest.raises(TypeError, match=r"needs a typed config object"):
        PolicySpec(name="bare", torch_loss=pg_loss_torch).build(CARTPOLE_OBS, TWO_ACTIONS, {})
    with pytest.raises(ValueError, match="weight 'pi/out/bias' has shape"):
        policy.set_weights({**policy.get_weights(), "pi/out/bias": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"missing=\['pi/out/bias'\]"):
        policy.set_weights({k: v for k, v in policy.get_weights().items() if k != "pi/out/bias"})


def nan_loss(policy, batch):
    loss, stats = pg_loss_torch(policy, batch)
    return loss * float("nan"), stats


NAN_POLICY = dataclasses.replace(PG_POLICY, name="nan", torch_loss=nan_loss)


def test_nan_loss_raises_floating_point_error_without_updating():
    policy = NAN_POLICY.build(CARTPOLE_OBS, gym.spaces.Discrete(2),
                              {"seed": 0, "use_critic": False, "use_gae": False})
    before = policy.get_weights()
    with pytest.raises(FloatingPointError) as info:
        policy.learn_on_batch(rollout(policy, n=4))
    message = str(info.value)
    assert "grad_gnorm" in message and "policy_loss=" in message and "Lower lr" in message
    for name, value in before.items():
        np.testing.assert_array_equal(value, policy.get_weights()[name])


def test_import_is_cheap_and_ray_free():
    code = ("import sys, flowrl, flowrl.policy; flowrl.get_policy_class;"
            "print(sorted(m for m in ('torch', 'tensorflow', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = ("import sys, gymnasium as g; from flowrl.plans.pg import PG_POLICY;"
            "PG_POLICY.build(g.spaces.Box(-1, 1, (2,)), g.spaces.Discrete(2), {});"
            "print('ray' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_policy_and_spec_pickle_with_plain_pickle():
    policy = pg(**AC_CONFIG)
    policy.learn_on_batch(rollout(policy))
    clone = pickle.loads(pickle.dumps(policy))
    assert type(clone) is type(policy) and clone.config == policy.config
    obs = np.random.default_rng(3).normal(size=(8, 4)).astype(np.float32)
    np.testing.assert_array_equal(policy.compute_values(obs), clone.compute_values(obs))
    assert pickle.loads(pickle.dumps(PG_POLICY)).torch_loss is pg_loss_torch
