"""The TF model: a `ModelSpec` evaluated with `tf.Variable`s stored under neutral names.

A `tf.Module` (not a Keras model): dense kernels are (in, out) and conv kernels HWIO, which are
TF's own layouts, so weights need no conversion. Convolutions use VALID padding, NHWC.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from flowrl.policy.models import ModelSpec

_ACTIVATIONS = {
    "tanh": tf.tanh,
    "relu": tf.nn.relu,
    "swish": tf.nn.silu,
    "linear": lambda x: x,
}


class TFModel(tf.Module):
    """`model(obs) -> (dist_inputs, values)` for float or uint8 observation rows.

    Args:
        spec: the architecture.
        weights: initial neutral weights (numpy), e.g. `spec.initial_weights(rng)`.
    """

    def __init__(self, spec: ModelSpec, weights: dict[str, np.ndarray]) -> None:
        super().__init__(name="flowrl_model")
        self.spec = spec
        self.names = list(spec.weight_shapes())
        self.params = {
            name: tf.Variable(np.asarray(weights[name], np.float32), name=name.replace("/", "__"))
            for name in self.names
        }
        self._act = _ACTIVATIONS[spec.activation]
        self._trunk_act = _ACTIVATIONS[spec.trunk_activation]
        self._conv_act = _ACTIVATIONS[spec.conv_activation]

    def parameters(self) -> list[tf.Variable]:
        """The trainable variables, in neutral-name order."""
        return [self.params[name] for name in self.names]

    def _dense(self, x: tf.Tensor, name: str) -> tf.Tensor:
        return tf.matmul(x, self.params[f"{name}/kernel"]) + self.params[f"{name}/bias"]

    def __call__(self, obs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        spec = self.spec
        x = obs
        if x.dtype == tf.uint8:
            x = tf.cast(x, tf.float32) / 255.0
        x = tf.cast(x, tf.float32)
        for name, stride in spec.convs:
            x = tf.nn.conv2d(x, self.params[f"{name}/kernel"], stride, "VALID")
            x = self._conv_act(x + self.params[f"{name}/bias"])
        x = tf.reshape(x, [tf.shape(x)[0], -1])
        for name in spec.trunk_dense:
            x = self._trunk_act(self._dense(x, name))
        hidden = x
        for name in spec.pi_dense:
            hidden = self._act(self._dense(hidden, name))
        dist_inputs = self._dense(hidden, "pi/out")
        if spec.log_std_name:
            log_std = tf.broadcast_to(self.params[spec.log_std_name], tf.shape(dist_inputs))
            dist_inputs = tf.concat([dist_inputs, log_std], axis=-1)
        if not spec.use_value:
            return dist_inputs, tf.zeros(tf.shape(x)[:1])
        value = x
        for name in spec.vf_dense:
            value = self._act(self._dense(value, name))
        return dist_inputs, self._dense(value, "vf/out")[:, 0]

    def get_weights(self) -> dict[str, np.ndarray]:
        """Neutral numpy weights (copies)."""
        return {name: self.params[name].numpy().copy() for name in self.names}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Loads neutral numpy weights (names and shapes already validated)."""
        for name in self.names:
            self.params[name].assign(np.asarray(weights[name], np.float32))
