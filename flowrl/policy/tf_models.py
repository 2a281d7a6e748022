"""The built-in TF models (`tf.Module`s of `tf.Variable`s under neutral names) and the weight
view the policy uses for any model, built-in or custom.

The built-ins implement the model contracts of `flowrl.policy.model_contract` (`TFModel`,
`TFQModel`, `TFDeterministicActorCritic`): dense kernels are (in, out) and conv kernels HWIO,
which are TF's own layouts, so weights need no conversion. Convolutions use VALID padding, NHWC.
A user's model is any Keras model (or `tf.Module`) meeting its algorithm's contract;
`TFModuleWeights` lists its trainable variables as its weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

_ACTIVATIONS = {
    "tanh": tf.tanh,
    "relu": tf.nn.relu,
    "swish": tf.nn.silu,
    "linear": lambda x: x,
}


class TFParameters(tf.Module):
    """Named `tf.Variable`s under neutral names: the base of every TF model kind.

    Args:
        spec: the architecture (any spec with `weight_shapes()`).
        weights: initial neutral weights (numpy), e.g. `spec.initial_weights(rng)`.
    """

    def __init__(self, spec: Any, weights: dict[str, np.ndarray]) -> None:
        super().__init__(name="flowrl_model")
        self.spec = spec
        self.names = list(spec.weight_shapes())
        self.params = {
            name: tf.Variable(np.asarray(weights[name], np.float32), name=name.replace("/", "__"))
            for name in self.names
        }

    def parameters(self) -> list[tf.Variable]:
        """The trainable variables, in neutral-name order."""
        return [self.params[name] for name in self.names]

    def dense(self, x: tf.Tensor, name: str) -> tf.Tensor:
        """`x @ kernel + bias` of the dense layer `name`."""
        return tf.matmul(x, self.params[f"{name}/kernel"]) + self.params[f"{name}/bias"]

    def mlp(self, x: tf.Tensor, prefix: str, num_hidden: int, activation: str,
            out_name: str | None = "out") -> tf.Tensor:
        """`prefix/fc_0 .. fc_{n-1}` with `activation`, then `prefix/out_name` (if given)."""
        act = _ACTIVATIONS[activation]
        for index in range(num_hidden):
            x = act(self.dense(x, f"{prefix}/fc_{index}"))
        return self.dense(x, f"{prefix}/{out_name}") if out_name else x

    def conv_trunk(self, obs: tf.Tensor) -> tf.Tensor:
        """Scales uint8 images, runs the conv layers (if any) and flattens, NHWC order."""
        x = obs
        if x.dtype == tf.uint8:
            x = tf.cast(x, tf.float32) / 255.0
        x = tf.cast(x, tf.float32)
        convs = getattr(self.spec, "convs", [])
        if convs:
            act = _ACTIVATIONS[self.spec.conv_activation]
            for name, stride in convs:
                x = tf.nn.conv2d(x, self.params[f"{name}/kernel"], stride, "VALID")
                x = act(x + self.params[f"{name}/bias"])
        return tf.reshape(x, [tf.shape(x)[0], -1])

    def get_weights(self) -> dict[str, np.ndarray]:
        """Neutral numpy weights (copies)."""
        return {name: self.params[name].numpy().copy() for name in self.names}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Loads neutral numpy weights (names and shapes already validated)."""
        for name in self.names:
            self.params[name].assign(np.asarray(weights[name], np.float32))


class TFModel(TFParameters):
    """Actor-critic: `model(obs) -> (dist_inputs, values)` for float or uint8 observation rows."""

    def __call__(self, obs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        spec = self.spec
        act, trunk_act = _ACTIVATIONS[spec.activation], _ACTIVATIONS[spec.trunk_activation]
        x = self.conv_trunk(obs)
        for name in spec.trunk_dense:
            x = trunk_act(self.dense(x, name))
        hidden = x
        for name in spec.pi_dense:
            hidden = act(self.dense(hidden, name))
        dist_inputs = self.dense(hidden, "pi/out")
        if spec.log_std_name:
            log_std = tf.broadcast_to(self.params[spec.log_std_name], tf.shape(dist_inputs))
            dist_inputs = tf.concat([dist_inputs, log_std], axis=-1)
        if not spec.use_value:
            return dist_inputs, tf.zeros(tf.shape(x)[:1])
        value = x
        for name in spec.vf_dense:
            value = act(self.dense(value, name))
        return dist_inputs, self.dense(value, "vf/out")[:, 0]


class TFQModel(TFParameters):
    """Q-network: `model(obs) -> q_values` of shape (B, num_actions); dueling if the spec says."""

    def __call__(self, obs: tf.Tensor) -> tf.Tensor:
        spec = self.spec
        x = self.conv_trunk(obs)
        if spec.is_cnn:
            x = _ACTIVATIONS[spec.conv_activation](self.dense(x, "fc_0"))
        if not spec.dueling:
            return self.mlp(x, "q", len(spec.q_hiddens), spec.activation)
        hidden = self.mlp(x, "q", len(spec.q_hiddens), spec.activation, out_name=None)
        advantages = self.dense(hidden, "q/advantage/out")
        value = self.dense(hidden, "q/value/out")
        return value + advantages - tf.reduce_mean(advantages, axis=1, keepdims=True)


class TFDeterministicActorCritic(TFParameters):
    """`model.actor(obs)` in [-1, 1]^A and `model.critics(obs, actions)` -> one Q per critic."""

    def actor(self, obs: tf.Tensor) -> tf.Tensor:
        x = self.conv_trunk(obs)
        return tf.tanh(self.mlp(x, "pi", len(self.spec.hiddens), self.spec.activation))

    def critics(self, obs: tf.Tensor, actions: tf.Tensor) -> list[tf.Tensor]:
        flat_actions = tf.reshape(tf.cast(actions, tf.float32), [tf.shape(actions)[0], -1])
        x = tf.concat([self.conv_trunk(obs), flat_actions], axis=-1)
        return [self.mlp(x, name, len(self.spec.hiddens), self.spec.activation)[:, 0]
                for name in self.spec.critic_names]

    def __call__(self, obs: tf.Tensor) -> tf.Tensor:
        return self.actor(obs)


class TFSoftActorCritic(TFParameters):
    """SAC's model: `model.actor(obs)` -> dist inputs, `model.critics(obs, actions)` -> one Q
    per critic ([B]; Discrete: `model.critics(obs)` -> [B, n] each), weight `log_alpha`."""

    def actor(self, obs: tf.Tensor) -> tf.Tensor:
        x = self.conv_trunk(obs)
        return self.mlp(x, "pi", len(self.spec.hiddens), self.spec.activation)

    def critics(self, obs: tf.Tensor, actions: tf.Tensor | None = None) -> list[tf.Tensor]:
        x = self.conv_trunk(obs)
        if self.spec.discrete:
            return [self.mlp(x, name, len(self.spec.hiddens), self.spec.activation)
                    for name in self.spec.critic_names]
        flat_actions = tf.reshape(tf.cast(actions, tf.float32), [tf.shape(actions)[0], -1])
        x = tf.concat([x, flat_actions], axis=-1)
        return [self.mlp(x, name, len(self.spec.hiddens), self.spec.activation)[:, 0]
                for name in self.spec.critic_names]

    def __call__(self, obs: tf.Tensor) -> tf.Tensor:
        return self.actor(obs)


class TFModuleWeights:
    """The policy's view of a custom Keras model's (or `tf.Module`'s) trainable variables.

    The same methods as `TFParameters` (`names`, `params`, `parameters()`, `get_weights`,
    `set_weights`). Keras numbers auto-named layers per process (`dense_3`), so a second copy
    of a model would get other variable paths: weights are named by position instead,
    ``"{index}/{variable name}"`` (e.g. ``"0/kernel"``, ``"1/bias"``), which is the same for
    every copy of one architecture.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.params: dict[str, tf.Variable] = {}
        for index, variable in enumerate(model.trainable_variables):
            # Keras 3 variables wrap a tf.Variable (`.value`); tapes and assigns use that.
            raw = variable if isinstance(variable, tf.Variable) else variable.value
            short = str(getattr(variable, "name", "") or "weight").split("/")[-1].split(":")[0]
            self.params[f"{index}/{short}"] = raw
        self.names = list(self.params)

    def parameters(self) -> list[tf.Variable]:
        """The trainable variables, in `names` order."""
        return [self.params[name] for name in self.names]

    def get_weights(self) -> dict[str, np.ndarray]:
        """The variables as numpy copies."""
        return {name: self.params[name].numpy().copy() for name in self.names}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Loads numpy arrays (names and shapes already validated)."""
        for name in self.names:
            self.params[name].assign(np.asarray(weights[name], np.float32))


def model_weights(model: Any) -> TFParameters | TFModuleWeights:
    """The weight view the policy trains and transfers: the model itself when it keeps
    neutral names (`TFParameters`), else its trainable variables by position."""
    if isinstance(model, TFParameters):
        return model
    if not hasattr(model, "trainable_variables"):
        raise TypeError(f"a TF policy's model must be a Keras model or tf.Module; got "
                        f"{type(model).__name__}. Subclass keras.Model (see "
                        "flowrl.policy.model_contract for the outputs it must return).")
    return TFModuleWeights(model)
