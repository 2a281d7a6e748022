"""TFPolicy, and Torch <-> TF interchangeability: same weights give the same numbers (1e-5)."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest

from flowrl.plans.pg import PG_POLICY
from flowrl.policy import SampleBatch, pg_loss_tf

pytestmark = pytest.mark.tf

AC = {
    "use_critic": True,
    "use_gae": True,
    "gae_lambda": 0.95,
    "vf_loss_coeff": 0.5,
    "entropy_coeff": 0.01,
}
CASES = {
    "discrete_fc": (
        gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
        gym.spaces.Discrete(2),
        {**AC},
    ),
    "continuous_fc": (
        gym.spaces.Box(-1, 1, (3,), np.float32),
        gym.spaces.Box(-2, 2, (2,), np.float32),
        {**AC, "model": {"fcnet_hiddens": [32, 16], "fcnet_activation": "relu"}},
    ),
    "continuous_free_log_std_shared": (
        gym.spaces.Box(-1, 1, (3,), np.float32),
        gym.spaces.Box(-2, 2, (2,), np.float32),
        {
            **AC,
            "model": {"free_log_std": True, "vf_share_layers": True, "fcnet_activation": "swish"},
        },
    ),
    "cnn": (gym.spaces.Box(0, 255, (36, 36, 3), np.uint8), gym.spaces.Discrete(3), {**AC}),
}


@pytest.fixture(scope="module", params=list(CASES))
def pair(request):
    obs_space, action_space, config = CASES[request.param]
    torch_policy = PG_POLICY.build(
        obs_space, action_space, {"framework": "torch", **config, "seed": 0}
    )
    tf_policy = PG_POLICY.build(obs_space, action_space, {"framework": "tf", **config, "seed": 99})
    return request.param, torch_policy, tf_policy


def make_batch(policy, n=32, seed=0):
    rng = np.random.default_rng(seed)
    space = policy.observation_space
    if space.dtype == np.uint8:
        raw = rng.integers(0, 256, size=(n, *space.shape), dtype=np.uint8)
    else:
        raw = rng.normal(size=(n, *space.shape)).astype(np.float32)
    actions, _, extras = policy.compute_actions(raw)
    batch = SampleBatch(
        obs=policy.preprocess(raw),
        new_obs=policy.preprocess(raw),
        actions=actions,
        rewards=rng.normal(size=n).astype(np.float32),
        terminateds=np.zeros(n, bool),
        truncateds=np.zeros(n, bool),
        **extras,
    )
    return policy.postprocess_trajectory(batch)


def model_outputs(policy, batch):
    """logits, values, logp(actions), entropy via the policy's own framework."""
    arrays = policy._training_arrays(batch)
    if policy.framework == "torch":
        import torch

        with torch.no_grad():
            inputs, values = policy.model(torch.from_numpy(arrays["obs"]))
            dist = policy.dist_class(inputs)
            out = inputs, values, dist.logp(torch.from_numpy(arrays["actions"])), dist.entropy()
    else:
        inputs, values = policy.model(arrays["obs"])
        dist = policy.dist_class(inputs)
        out = inputs, values, dist.logp(arrays["actions"]), dist.entropy()
    return [x.numpy() for x in out]


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_same_seed_gives_same_initial_weights():
    obs_space, action_space, config = CASES["discrete_fc"]
    a = PG_POLICY.build(obs_space, action_space, {"framework": "torch", **config, "seed": 5})
    b = PG_POLICY.build(obs_space, action_space, {"framework": "tf", **config, "seed": 5})
    for name, value in a.get_weights().items():
        np.testing.assert_array_equal(value, b.get_weights()[name])


def test_torch_weights_in_tf_give_same_outputs_loss_and_gradients(pair):
    name, torch_policy, tf_policy = pair
    assert list(torch_policy.get_weights()) == list(tf_policy.get_weights())
    tf_policy.set_weights(torch_policy.get_weights())
    batch = make_batch(torch_policy)
    for a, b in zip(model_outputs(torch_policy, batch), model_outputs(tf_policy, batch)):
        close(a, b)
    _, _, extras_torch = torch_policy.compute_actions(_raw(torch_policy, batch), explore=False)
    _, _, extras_tf = tf_policy.compute_actions(_raw(tf_policy, batch), explore=False)
    for key in extras_torch:
        close(extras_torch[key], extras_tf[key])
    grads_torch, stats_torch = torch_policy.compute_gradients(batch)
    grads_tf, stats_tf = tf_policy.compute_gradients(batch)
    for key in ("policy_loss", "vf_loss", "entropy", "total_loss", "grad_gnorm"):
        assert stats_torch[key] == pytest.approx(stats_tf[key], rel=1e-5, abs=1e-5), key
    for weight_name, a, b in zip(torch_policy.get_weights(), grads_torch, grads_tf):
        assert a.shape == b.shape, weight_name
        close(a, b)


def test_tf_weights_load_back_into_torch(pair):
    _, torch_policy, tf_policy = pair
    perturbed = {
        k: v + 0.01 * np.random.default_rng(1).normal(size=v.shape).astype(np.float32)
        for k, v in tf_policy.get_weights().items()
    }
    tf_policy.set_weights(perturbed)
    torch_policy.set_weights(tf_policy.get_weights())
    batch = make_batch(tf_policy, seed=3)
    for a, b in zip(model_outputs(torch_policy, batch), model_outputs(tf_policy, batch)):
        close(a, b)


def _raw(policy, batch):
    return batch["obs"]  # Box observations: preprocessing is the identity


def test_tf_learns_and_state_crosses_frameworks():
    obs_space, action_space, config = CASES["discrete_fc"]
    torch_policy = PG_POLICY.build(
        obs_space, action_space, {"framework": "torch", **config, "seed": 3}
    )
    tf_policy = PG_POLICY.build(
        obs_space, action_space, {"framework": "tf", **config, "seed": 3, "lr": 1e-2}
    )
    batch = make_batch(tf_policy, n=64)
    first = tf_policy.learn_on_batch(batch)["policy_loss"]
    for _ in range(15):
        last = tf_policy.learn_on_batch(batch)["policy_loss"]
    assert last < first - 0.05
    stats = tf_policy.learn_on_minibatches(batch, num_sgd_iter=2, sgd_minibatch_size=20)
    assert stats["grad_gnorm"] > 0
    # TF state (weights + Adam moments + timestep + coefficients) -> Torch, then one step each.
    tf_policy.set_coefficient("entropy_coeff", 0.05)
    tf_policy.on_global_var_update({"timestep": 77})
    torch_policy.set_state(tf_policy.get_state())
    assert torch_policy.get_coefficient("entropy_coeff") == pytest.approx(0.05)
    assert torch_policy.global_timestep == 77
    torch_policy.learn_on_batch(batch)
    tf_policy.learn_on_batch(batch)
    for name, value in torch_policy.get_weights().items():
        np.testing.assert_allclose(value, tf_policy.get_weights()[name], rtol=1e-5, atol=1e-6)
    # ... and back, round trip within TF.
    state = tf_policy.get_state()
    tf_policy.learn_on_batch(batch)
    tf_policy.set_state(state)
    for name, value in state["weights"].items():
        np.testing.assert_array_equal(value, tf_policy.get_weights()[name])


def test_tf_coefficient_update_does_not_retrace():
    obs_space, action_space, config = CASES["discrete_fc"]
    policy = PG_POLICY.build(obs_space, action_space, {"framework": "tf", **config, "seed": 0})
    batch = make_batch(policy)
    policy.learn_on_batch(batch)
    policy.learn_on_batch(batch[:10])
    policy.set_coefficient("entropy_coeff", 0.5)
    stats = policy.learn_on_batch(batch)
    (fn,) = policy._train_fns.values()
    assert fn.experimental_get_tracing_count() == 1
    assert stats["total_loss"] == pytest.approx(
        stats["policy_loss"] - 0.5 * stats["entropy"] + 0.5 * stats["vf_loss"], rel=1e-4
    )
    policy.compute_actions(np.zeros((3, 4), np.float32))
    policy.compute_actions(np.zeros((7, 4), np.float32), explore=False)
    assert policy._actions_fn.experimental_get_tracing_count() == 1
    with pytest.raises(ValueError, match=r"actions outside action_space=Discrete\(2\)"):
        policy.learn_on_batch(SampleBatch({**batch, "actions": np.full(len(batch), 5)}))


def nan_loss_tf(policy, batch):
    loss, stats = pg_loss_tf(policy, batch)
    return loss * float("nan"), stats


def test_tf_nan_loss_raises_without_updating():
    spec = dataclasses.replace(PG_POLICY, name="nan", tf_loss=nan_loss_tf)
    obs_space, action_space, _ = CASES["discrete_fc"]
    policy = spec.build(
        obs_space,
        action_space,
        {"framework": "tf", "seed": 0, "use_critic": False, "use_gae": False},
    )
    before = policy.get_weights()
    with pytest.raises(FloatingPointError, match="non-finite loss or gradient.*Lower lr"):
        policy.learn_on_batch(make_batch(policy, n=8))
    for name, value in before.items():
        np.testing.assert_array_equal(value, policy.get_weights()[name])
