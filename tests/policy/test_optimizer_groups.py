"""Optimizer groups: a two-optimizer policy written from plain functions, on Torch and TF.

The actor (`pi/` weights) trains with Adam on its policy-gradient loss, clipped to its own norm;
the critic (`vf/` weights) with plain SGD on its value loss, at a learning rate read from a config
field. The same weights give the same losses, gradients and updated weights in both frameworks
(1e-5); a group with update_period=2 steps on every second update only; the optimizer state of
every group survives get_state / set_state.
"""

from __future__ import annotations

import dataclasses
import pickle

import gymnasium as gym
import numpy as np
import pytest

from flowrl.checkpoint import flatten_state, unflatten_state
from flowrl.config import AlgorithmConfig
from flowrl.policy import OptimizerGroup, PolicySpec, SampleBatch

pytestmark = pytest.mark.tf

OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
ACTIONS = gym.spaces.Discrete(3)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TwoGroupConfig(AlgorithmConfig):
    critic_lr: float = 0.05
    """The critic group's SGD learning rate."""
    critic_period: int = 1
    """The critic group's update period."""


def two_group_loss_torch(policy, batch):
    dist_inputs, values = policy.model(batch["obs"])
    logp = policy.dist_class(dist_inputs).logp(batch["actions"])
    actor_loss = -(logp * batch["advantages"]).mean()
    critic_loss = ((values - batch["value_targets"]) ** 2).mean()
    return {"actor": actor_loss, "critic": critic_loss}, {"mean_value": values.mean()}


def two_group_loss_tf(policy, batch):
    import tensorflow as tf

    dist_inputs, values = policy.model(batch["obs"])
    logp = policy.dist_class(dist_inputs).logp(batch["actions"])
    actor_loss = -tf.reduce_mean(logp * batch["advantages"])
    critic_loss = tf.reduce_mean(tf.square(values - batch["value_targets"]))
    return {"actor": actor_loss, "critic": critic_loss}, {"mean_value": tf.reduce_mean(values)}


TWO_GROUPS = PolicySpec(
    name="two_groups", torch_loss=two_group_loss_torch, tf_loss=two_group_loss_tf,
    postprocess=None, config_class=TwoGroupConfig,
    optimizer_groups=(
        OptimizerGroup("actor", weights=("pi/",), lr=0.01, grad_clip=0.1),
        OptimizerGroup("critic", weights=("vf/",), optimizer="sgd", lr="critic_lr",
                       grad_clip=None, update_period="critic_period"),
    ))
CONFIG = {"seed": 0, "model": {"fcnet_hiddens": [8, 8]}}


def make_batch(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return SampleBatch(obs=rng.uniform(-1, 1, (n, 3)).astype(np.float32),
                       actions=rng.integers(0, 3, n),
                       advantages=rng.normal(size=n).astype(np.float32),
                       value_targets=rng.normal(size=n).astype(np.float32))


def build(framework, **overrides):
    return TWO_GROUPS.build(OBS, ACTIONS, {**CONFIG, "framework": framework, **overrides})


def critic_and_actor(policy):
    weights = policy.get_weights()
    return ({k: v for k, v in weights.items() if k.startswith("vf/")},
            {k: v for k, v in weights.items() if k.startswith("pi/")})


def test_the_groups_own_the_weights_their_prefixes_name():
    policy = build("torch")
    actor, critic = policy.optimizer_groups
    assert actor.name == "actor" and all(n.startswith("pi/") for n in actor.weight_names)
    assert critic.weight_names == [n for n in policy.get_weights() if n.startswith("vf/")]
    assert (critic.optimizer, critic.lr, critic.grad_clip) == ("sgd", 0.05, None)
    assert [type(o).__name__ for o in policy.optimizers] == ["Adam", "SGD"]


def test_torch_and_tf_agree_on_losses_gradients_and_updated_weights():
    torch_policy, tf_policy = build("torch"), build("tf", seed=7)
    tf_policy.set_state(torch_policy.get_state())
    batch = make_batch()
    torch_grads, torch_stats = torch_policy.compute_gradients(batch)
    tf_grads, tf_stats = tf_policy.compute_gradients(batch)
    assert set(torch_stats) == set(tf_stats) >= {
        "actor_loss", "critic_loss", "actor_grad_gnorm", "critic_grad_gnorm", "actor_cur_lr",
        "critic_cur_lr", "total_loss", "grad_gnorm", "mean_value"}
    for key, value in torch_stats.items():
        assert value == pytest.approx(tf_stats[key], rel=1e-5, abs=1e-5), key
    assert torch_stats["actor_grad_gnorm"] > 0.1  # so the actor's clipping is exercised
    for name, a, b in zip(torch_policy.get_weights(), torch_grads, tf_grads):
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=name)
    for step in range(3):
        torch_policy.learn_on_batch(make_batch(seed=step))
        tf_policy.learn_on_batch(make_batch(seed=step))
    for name, value in torch_policy.get_weights().items():
        np.testing.assert_allclose(value, tf_policy.get_weights()[name], atol=1e-5,
                                   err_msg=name)
    assert torch_policy.num_updates == tf_policy.num_updates == 3


def test_each_group_moves_only_by_its_own_loss():
    policy = build("torch")
    batch = make_batch()
    grads, _ = policy.compute_gradients(batch)
    by_name = dict(zip(policy.get_weights(), grads))
    # The critic's SGD step: its weights move by exactly lr * the critic loss's gradient.
    before_critic, before_actor = critic_and_actor(policy)
    policy.learn_on_batch(batch)
    after_critic, after_actor = critic_and_actor(policy)
    for name, value in before_critic.items():
        np.testing.assert_allclose(after_critic[name], value - 0.05 * by_name[name], atol=1e-6)
    assert all(not np.allclose(after_actor[n], v) for n, v in before_actor.items()
               if n.endswith("kernel"))


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_a_period_two_group_steps_on_every_second_update_only(framework):
    policy = build(framework, critic_period=2)
    moved = []
    for step in range(5):
        critic_before, actor_before = critic_and_actor(policy)
        policy.learn_on_batch(make_batch(seed=step))
        critic_after, actor_after = critic_and_actor(policy)
        moved.append((
            not np.allclose(critic_after["vf/out/kernel"], critic_before["vf/out/kernel"]),
            not np.allclose(actor_after["pi/out/kernel"], actor_before["pi/out/kernel"])))
    assert moved == [(True, True), (False, True), (True, True), (False, True), (True, True)]
    # learn_on_minibatches counts every minibatch step as an update.
    policy.learn_on_minibatches(make_batch(n=32), num_sgd_iter=1, sgd_minibatch_size=8)
    assert policy.num_updates == 9


@pytest.mark.parametrize("source, target", [("torch", "torch"), ("tf", "tf"), ("torch", "tf"),
                                            ("tf", "torch")])
def test_get_state_carries_every_groups_optimizer_state(source, target):
    trained = build(source, critic_period=2)
    for step in range(3):
        trained.learn_on_batch(make_batch(seed=step))
    state = trained.get_state()
    assert set(state["optimizer"]["groups"]) == {"actor", "critic"}
    assert state["optimizer"]["num_updates"] == 3
    assert state["optimizer"]["groups"]["actor"]["step"] == 3
    assert set(state["optimizer"]["groups"]["actor"]["exp_avg"]) == {
        n for n in trained.get_weights() if n.startswith("pi/")}
    restored = build(target, seed=11, critic_period=2)
    # Through the checkpoint's own serialization (a JSON tree plus named arrays) and pickle.
    restored.set_state(pickle.loads(pickle.dumps(unflatten_state(*flatten_state(state)))))
    assert restored.num_updates == 3
    # The next update is the fourth (index 3): the critic skips it, Adam continues at step 4.
    for policy in (trained, restored):
        policy.learn_on_batch(make_batch(seed=9))
    for name, value in trained.get_weights().items():
        np.testing.assert_allclose(value, restored.get_weights()[name], atol=1e-5,
                                   err_msg=name)


def test_each_group_follows_its_own_lr_schedule():
    spec = dataclasses.replace(TWO_GROUPS, optimizer_groups=(
        OptimizerGroup("actor", weights=("pi/",), lr=0.01, lr_schedule=[[0, 0.01], [100, 0.0]]),
        OptimizerGroup("critic", optimizer="sgd", lr=0.05, lr_schedule=None)))
    for framework in ("torch", "tf"):
        policy = spec.build(OBS, ACTIONS, {**CONFIG, "framework": framework})
        policy.on_global_var_update({"timestep": 50})
        stats = policy.learn_on_batch(make_batch())
        assert stats["actor_cur_lr"] == pytest.approx(0.005)
        assert stats["critic_cur_lr"] == pytest.approx(0.05)
        assert policy.lr == pytest.approx(0.005)


def test_group_mistakes_are_clear_errors():
    def scalar_loss(policy, batch):
        losses, stats = two_group_loss_torch(policy, batch)
        return losses["actor"] + losses["critic"], stats

    spec = dataclasses.replace(TWO_GROUPS, torch_loss=scalar_loss)
    with pytest.raises(TypeError, match=r"must return \(\{group: loss\}, stats\)"):
        spec.build(OBS, ACTIONS, CONFIG).learn_on_batch(make_batch())
    only_actor = dataclasses.replace(TWO_GROUPS, optimizer_groups=(
        OptimizerGroup("actor", weights=("pi/",)),))
    with pytest.raises(ValueError, match=r"weights \['vf/fc_0/kernel'.* belong to no optimizer"):
        only_actor.build(OBS, ACTIONS, CONFIG)
    unknown_field = dataclasses.replace(TWO_GROUPS, optimizer_groups=(
        OptimizerGroup("actor", weights=("pi/",), lr="actor_lr"), OptimizerGroup("critic")))
    with pytest.raises(ValueError, match="reads its lr from config field 'actor_lr'"):
        unknown_field.build(OBS, ACTIONS, CONFIG)
    with pytest.raises(ValueError, match="the state holds one optimizer"):
        build("torch").set_state({**build("torch").get_state(), "optimizer": {
            "step": 0, "lr": 0.1, "exp_avg": {}, "exp_avg_sq": {}}})
