"""Custom models: a user's nn.Module or Keras model stands in for the built-in network.

The models here are ordinary framework classes meeting the documented model contract
(`flowrl.policy.model_contract`); they train through the Trainer in local mode, go through the
registry, pickle, and give clear errors when they break the contract.
"""

from __future__ import annotations

import dataclasses
import functools
import pickle
from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
from torch import nn

import flowrl
from flowrl.config import from_dict
from flowrl.plans.dqn import DQN_POLICY
from flowrl.plans.ppo import PPO_POLICY, PPOConfig
from flowrl.policy import (
    ACTOR_CRITIC,
    PolicySpec,
    TorchParameters,
    pg_loss_tf,
    pg_loss_torch,
    register_model,
    unregister_model,
)
from flowrl.policy.model_contract import resolve_model_class

OBS = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
TWO = gym.spaces.Discrete(2)
PPO_SMALL = {"num_workers": 0, "num_envs_per_worker": 2, "rollout_fragment_length": 16,
             "train_batch_size": 64, "sgd_minibatch_size": 32, "num_sgd_iter": 2, "seed": 0,
             "num_cpus_per_worker": 0}


class TorchActorCritic(nn.Module):
    """A two-headed MLP: `forward(obs) -> (logits, values)`."""

    def __init__(self, obs_shape, action_space, num_outputs, model_config, hidden=16,
                 value_shape_bug=False):
        super().__init__()
        size = int(np.prod(obs_shape))
        self.body = nn.Sequential(nn.Linear(size, hidden), nn.Tanh())
        self.logits = nn.Linear(hidden, num_outputs)
        self.value = nn.Linear(hidden, 1)
        self.value_shape_bug = value_shape_bug

    def forward(self, obs):
        x = self.body(obs.float().reshape(obs.shape[0], -1))
        value = self.value(x)
        return self.logits(x), value if self.value_shape_bug else value.squeeze(-1)


class TorchQNet(nn.Module):
    def __init__(self, obs_shape, action_space, num_outputs, model_config):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(int(np.prod(obs_shape)), 8), nn.ReLU(),
                                 nn.Linear(8, num_outputs))

    def forward(self, obs):
        return self.net(obs.float())


class OnlyLogits(nn.Module):
    def __init__(self, obs_shape, action_space, num_outputs, model_config):
        super().__init__()
        self.logits = nn.Linear(int(np.prod(obs_shape)), num_outputs)

    def forward(self, obs):
        return self.logits(obs)


def _keras_class():
    import keras
    import tensorflow as tf

    class KerasActorCritic(keras.Model):
        """The same two-headed MLP in Keras: `call(obs) -> (logits, values)`."""

        def __init__(self, obs_shape, action_space, num_outputs, model_config, hidden=16):
            super().__init__()
            self.body = keras.layers.Dense(hidden, activation="tanh")
            self.logits = keras.layers.Dense(num_outputs)
            self.value = keras.layers.Dense(1)

        def call(self, obs):
            x = self.body(tf.reshape(tf.cast(obs, tf.float32), [tf.shape(obs)[0], -1]))
            return self.logits(x), tf.squeeze(self.value(x), -1)

    return KerasActorCritic


def ppo_config(custom_model, framework="torch", **custom_config):
    return {**PPO_SMALL, "framework": framework,
            "model": {"custom_model": custom_model, "custom_model_config": custom_config}}


def test_torch_custom_model_trains_ppo_through_the_trainer(local_executor):
    trainer = flowrl.Trainer("ppo", env="CartPole-v1",
                             config=ppo_config(TorchActorCritic, hidden=8))
    try:
        policy = trainer.get_policy()
        assert isinstance(policy.model, TorchActorCritic)
        assert list(policy.get_weights()) == ["body.0.weight", "body.0.bias", "logits.weight",
                                              "logits.bias", "value.weight", "value.bias"]
        before = policy.get_weights()
        for _ in range(2):
            result = trainer.train()
        assert result["timesteps_total"] >= 128
        assert np.isfinite(result["info"]["learner"]["default_policy"]["total_loss"])
        assert not np.allclose(before["logits.weight"], policy.get_weights()["logits.weight"])
        assert trainer.compute_single_action(np.zeros(4, np.float32)) in (0, 1)
    finally:
        trainer.stop()


@pytest.mark.tf
def test_keras_custom_model_trains_ppo_through_the_trainer(local_executor):
    keras_class = _keras_class()
    trainer = flowrl.Trainer("ppo", env="CartPole-v1",
                             config=ppo_config(keras_class, framework="tf", hidden=8))
    try:
        policy = trainer.get_policy()
        assert isinstance(policy.model, keras_class)
        assert list(policy.get_weights()) == ["0/kernel", "1/bias", "2/kernel", "3/bias",
                                              "4/kernel", "5/bias"]
        before = policy.get_weights()
        for _ in range(2):
            result = trainer.train()
        assert result["timesteps_total"] >= 128
        assert not np.allclose(before["2/kernel"], policy.get_weights()["2/kernel"])
        # A second copy (a rollout worker's policy) takes the learner's weights by name.
        copy = PPO_POLICY.build(OBS, TWO, from_dict(PPOConfig, ppo_config(keras_class, "tf",
                                                                          hidden=8)))
        copy.set_weights(policy.get_weights())
        obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
        np.testing.assert_allclose(copy.compute_values(obs), policy.compute_values(obs),
                                   atol=1e-6)
    finally:
        trainer.stop()


def test_a_registered_name_picks_the_framework_class():
    register_model("test_tiny_ac", torch=TorchActorCritic)
    try:
        policy = PPO_POLICY.build(OBS, TWO, ppo_config("test_tiny_ac", hidden=4))
        assert isinstance(policy.model, TorchActorCritic)
        with pytest.raises(ValueError, match="registered for \\['torch'\\] only"):
            resolve_model_class("test_tiny_ac", "tf")
        with pytest.raises(ValueError, match="already registered"):
            register_model("test_tiny_ac", torch=TorchQNet)
    finally:
        unregister_model("test_tiny_ac")
    with pytest.raises(ValueError, match="unknown custom_model='test_tiny_ac'"):
        PPO_POLICY.build(OBS, TWO, ppo_config("test_tiny_ac"))


def test_custom_model_policies_pickle_and_seed_their_weights():
    config = ppo_config(TorchActorCritic, hidden=4)
    policy = PPO_POLICY.build(OBS, TWO, config)
    again = PPO_POLICY.build(OBS, TWO, config)
    for name, value in policy.get_weights().items():
        np.testing.assert_array_equal(value, again.get_weights()[name])  # same seed
    clone = pickle.loads(pickle.dumps(policy))
    obs = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(clone.compute_values(obs), policy.compute_values(obs))


def test_a_stored_config_names_the_class_by_its_import_path():
    config = from_dict(PPOConfig, ppo_config(TorchActorCritic))
    stored = config.to_dict()["model"]["custom_model"]
    assert stored.endswith(":TorchActorCritic") and ":" in stored
    assert from_dict(PPOConfig, config.to_dict()).model.custom_model == stored


def test_custom_q_model_with_a_target_network():
    policy = DQN_POLICY.build(OBS, TWO, {"seed": 0, "model": {"custom_model": TorchQNet}})
    assert isinstance(policy.model, TorchQNet) and isinstance(policy.target_model, TorchQNet)
    obs = np.zeros((3, 4), np.float32)
    assert policy.compute_q_values(obs).shape == (3, 2)
    actions, state, _ = policy.compute_actions(obs, explore=False)
    assert actions.shape == (3,) and state == []
    for name, value in policy.get_target_weights().items():
        np.testing.assert_array_equal(value, policy.get_weights()[name])


def test_a_model_with_wrong_outputs_says_what_the_contract_expects():
    with pytest.raises(ValueError, match=r"breaks the 'actor_critic' model contract: output "
                                         r"'values' has shape \(2, 1\), expected \(2,\)"):
        PPO_POLICY.build(OBS, TWO, ppo_config(TorchActorCritic, value_shape_bug=True))
    with pytest.raises(ValueError, match=r"returned 1 value\(s\), expected 2: "
                                         r"\(dist_inputs, values\)"):
        PPO_POLICY.build(OBS, TWO, ppo_config(OnlyLogits))
    with pytest.raises(ValueError, match="is a torch model, but the policy's framework='tf'"):
        PPO_POLICY.build(OBS, TWO, ppo_config(TorchActorCritic, framework="tf"))
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        PPO_POLICY.build(OBS, TWO, ppo_config(NotAModule))


class NotAModule:
    """Returns the right outputs but is no nn.Module: the policy cannot train it."""

    def __init__(self, obs_shape, action_space, num_outputs, model_config):
        import torch

        self.num_outputs = num_outputs
        self.zeros = torch.zeros

    def __call__(self, obs):
        return self.zeros(obs.shape[0], self.num_outputs), self.zeros(obs.shape[0])


# ---- an algorithm's own network, with neutral weight names in both frameworks -----------------


class TorchLinearActorCritic(TorchParameters):
    """Linear policy and value heads over neutral names (`pi/kernel`, `vf/kernel`, ...)."""

    def forward(self, obs):
        x = obs.float().reshape(obs.shape[0], -1)
        return self.dense(x, "pi"), self.dense(x, "vf").squeeze(-1)

    __call__ = forward


@functools.cache
def _tf_linear_actor_critic():
    """The TF twin, made on first use so that this module imports without TensorFlow."""
    import tensorflow as tf

    from flowrl.policy import TFParameters

    class TFLinearActorCritic(TFParameters):
        def __call__(self, obs):
            x = tf.reshape(tf.cast(obs, tf.float32), [tf.shape(obs)[0], -1])
            return self.dense(x, "pi"), self.dense(x, "vf")[:, 0]

    return TFLinearActorCritic


@dataclasses.dataclass(frozen=True)
class LinearActorCriticSpec:
    """The architecture an algorithm module defines: contract, sizes, names, seeded init."""

    obs_size: int
    output_size: int
    contract: ClassVar = ACTOR_CRITIC
    torch_class: ClassVar = TorchLinearActorCritic
    tf_class: ClassVar = property(lambda self: _tf_linear_actor_critic())

    def weight_shapes(self):
        return {"pi/kernel": (self.obs_size, self.output_size), "pi/bias": (self.output_size,),
                "vf/kernel": (self.obs_size, 1), "vf/bias": (1,)}

    def initial_weights(self, rng):
        return {name: (0.1 * rng.standard_normal(shape)).astype(np.float32)
                for name, shape in self.weight_shapes().items()}


def linear_model(config, obs_shape, action_space):
    return LinearActorCriticSpec(int(np.prod(obs_shape)), int(action_space.n))


LINEAR_POLICY = PolicySpec(name="linear_pg", torch_loss=pg_loss_torch, tf_loss=pg_loss_tf,
                           model=linear_model, config_class=PPOConfig)


@pytest.mark.tf
def test_an_algorithms_own_model_with_neutral_names_moves_between_frameworks():
    torch_policy = LINEAR_POLICY.build(OBS, TWO, {"seed": 0})
    tf_policy = LINEAR_POLICY.build(OBS, TWO, {"seed": 3, "framework": "tf"})
    assert isinstance(torch_policy.model, TorchLinearActorCritic)
    assert list(torch_policy.get_weights()) == ["pi/kernel", "pi/bias", "vf/kernel", "vf/bias"]
    tf_policy.set_weights(torch_policy.get_weights())
    obs = np.random.default_rng(2).uniform(-1, 1, (6, 4)).astype(np.float32)
    for ours, theirs in zip(torch_policy.forward(obs)[0], tf_policy.forward(obs)[0]):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
