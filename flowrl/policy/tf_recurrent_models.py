"""`TFRecurrentModel`: a built-in or custom TF model wrapped in an LSTM or GRU.

The TF twin of `torch_recurrent_models.TorchRecurrentModel`: the same weights (names from
`RecurrentModelSpec`) give the same outputs. The time loop is a Python loop over the static
number of steps (1 when acting, `max_seq_len` when training), unrolled when traced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from flowrl.policy.model_contract import ACTOR_CRITIC
from flowrl.policy.recurrent_spec import (
    RecurrentModelSpec,
    refuse_recurrent_encoder,
    weights_under,
)
from flowrl.policy.tf_models import _ACTIVATIONS, TFModel, TFModuleWeights, TFParameters


class TFRecurrentModel(TFParameters):
    """`model(obs[B, T, ...], state, seq_lens[B], prev_actions=None, prev_rewards=None)`
    -> `(*outputs[B, T, ...], state_out)`; see `TorchRecurrentModel`.

    Args:
        spec: the wrapped architecture.
        weights: initial neutral weights (the encoders' too, unless they are custom).
        encoders: custom encoders (Keras models, the config's `custom_model`), one per tower,
            built by the policy; their variables are created here by one call on zeros.
    """

    def __init__(self, spec: RecurrentModelSpec, weights: Mapping[str, np.ndarray],
                 encoders: Sequence[Any] | None = None) -> None:
        tf.Module.__init__(self, name="flowrl_recurrent_model")
        self.spec = spec
        if encoders is None and spec.encoder is not None:
            encoders = [TFModel(spec.encoder, weights_under(weights, f"{tower}encoder/"))
                        for tower in spec.towers]
        self.encoders = list(encoders or [])
        self.params: dict[str, tf.Variable] = {}
        for tower, encoder in zip(spec.towers, self.encoders):
            refuse_recurrent_encoder(encoder)
            if isinstance(encoder, TFParameters):
                named = encoder.params
            else:
                encoder(tf.zeros((1, *spec.obs_shape)))  # creates a Keras model's variables
                named = TFModuleWeights(encoder).params
            self.params.update({f"{tower}encoder/{name}": value for name, value in named.items()})
        for name in spec.own_weight_shapes():
            self.params[name] = tf.Variable(np.asarray(weights[name], np.float32),
                                            name=name.replace("/", "__"))
        self.names = list(self.params)
        self._encoder_act = _ACTIVATIONS[spec.encoder_activation]
        self.uses_prev_actions = spec.prev_action_size > 0
        self.uses_prev_rewards = spec.use_prev_reward

    def initial_state(self) -> list[np.ndarray]:
        """Zeros: [h, c] for an LSTM, [h] for a GRU, per tower."""
        return self.spec.initial_state()

    def features(self, obs: tf.Tensor, tower: int = 0) -> tf.Tensor:
        """A tower's encoder features of observation rows [N, ...] -> [N, F]."""
        if not self.encoders:
            x = tf.cast(obs, tf.float32)
            if obs.dtype == tf.uint8:
                x = x / 255.0
            return tf.reshape(x, [tf.shape(x)[0], -1])
        out = self.encoders[tower](obs)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return self._encoder_act(out)

    def __call__(self, obs: tf.Tensor, state: list[tf.Tensor], seq_lens: tf.Tensor,
                 prev_actions: tf.Tensor | None = None,
                 prev_rewards: tf.Tensor | None = None) -> tuple[Any, ...]:
        spec = self.spec
        batch, steps = tf.shape(obs)[0], int(obs.shape[1])
        rows = tf.reshape(obs, tf.concat([[batch * steps], tf.shape(obs)[2:]], axis=0))
        extra = []
        if spec.prev_action_size:
            extra.append(_or_zeros(prev_actions, [batch, steps, spec.prev_action_size]))
        if spec.use_prev_reward:
            extra.append(_or_zeros(prev_rewards, [batch, steps])[..., None])
        valid = (tf.range(steps, dtype=tf.int64)[None]
                 < tf.cast(seq_lens, tf.int64)[:, None])[..., None]
        per, hidden, state_out = spec.state_size, [], []
        for index, tower in enumerate(spec.towers):
            x = tf.reshape(self.features(rows, index), [batch, steps, spec.feature_size])
            x = tf.concat([x, *extra], axis=-1) if extra else x
            out, final = self._run_cell(tower, x, state[index * per:(index + 1) * per], valid)
            hidden.append(tf.reshape(out, [batch * steps, spec.cell_size]))
            state_out.extend(final)
        heads = [tf.reshape(head, tf.concat([[batch, steps], tf.shape(head)[1:]], axis=0))
                 for head in self._heads(hidden)]
        return (*heads, state_out)

    def _run_cell(self, tower: str, x: tf.Tensor, state: list[Any], valid: tf.Tensor
                  ) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """A tower's cell over [B, T, F_in]: outputs [B, T, H] and the state held after each
        sequence's last valid step."""
        cell = f"{tower}{self.spec.cell}"
        projected = tf.einsum("btf,fg->btg", x, self.params[f"{cell}/kernel"]) + self.params[
            f"{cell}/bias"]
        step = self._lstm_step if self.spec.cell == "lstm" else self._gru_step
        state = [tf.convert_to_tensor(value) for value in state]
        steps, outputs = int(x.shape[1]), []
        for t in range(steps):
            new_state = step(cell, projected[:, t], state)
            outputs.append(new_state[0])
            state = new_state if steps == 1 else [tf.where(valid[:, t], new, old)
                                                  for new, old in zip(new_state, state)]
        return tf.stack(outputs, axis=1), state

    def _lstm_step(self, cell: str, projected: tf.Tensor, state: list[tf.Tensor]
                   ) -> list[tf.Tensor]:
        h, c = state
        gates = projected + tf.matmul(h, self.params[f"{cell}/recurrent_kernel"])
        i, f, g, o = tf.split(gates, 4, axis=-1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        return [tf.sigmoid(o) * tf.tanh(c), c]

    def _gru_step(self, cell: str, projected: tf.Tensor, state: list[tf.Tensor]
                  ) -> list[tf.Tensor]:
        (h,) = state
        recurrent = tf.matmul(h, self.params[f"{cell}/recurrent_kernel"]) + self.params[
            f"{cell}/recurrent_bias"]
        x_z, x_r, x_h = tf.split(projected, 3, axis=-1)
        h_z, h_r, h_h = tf.split(recurrent, 3, axis=-1)
        z, r = tf.sigmoid(x_z + h_z), tf.sigmoid(x_r + h_r)
        candidate = tf.tanh(x_h + r * h_h)
        return [z * h + (1.0 - z) * candidate]

    def _heads(self, hidden: list[tf.Tensor]) -> list[tf.Tensor]:
        """The contract's outputs from the towers' cell outputs [N, H] (see Torch's)."""
        spec, policy_hidden = self.spec, hidden[0]
        if spec.contract is ACTOR_CRITIC:
            dist_inputs = self.dense(policy_hidden, "pi/out")
            if spec.log_std_size:
                log_std = tf.broadcast_to(self.params["pi/log_std"],
                                          [tf.shape(policy_hidden)[0], spec.log_std_size])
                dist_inputs = tf.concat([dist_inputs, log_std], axis=-1)
            values = (self.dense(hidden[-1], "vf/out")[:, 0] if spec.use_value
                      else tf.zeros(tf.shape(policy_hidden)[:1]))
            return [dist_inputs, values]
        if not spec.dueling:
            return [self.dense(policy_hidden, "q/out")]
        advantages = self.dense(policy_hidden, "q/advantage/out")
        value = self.dense(policy_hidden, "q/value/out")
        return [value + advantages - tf.reduce_mean(advantages, axis=-1, keepdims=True)]


def _or_zeros(value: tf.Tensor | None, shape: list[Any]) -> tf.Tensor:
    if value is None:
        return tf.zeros(shape)
    return tf.reshape(tf.cast(value, tf.float32), shape)
