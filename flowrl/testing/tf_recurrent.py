"""A tiny recurrent actor-critic in Keras: the TF test model of the recurrent model contract.

`KerasTinyGRU` meets the recurrent form of the `actor_critic` contract as `TorchTinyGRU` does:
`initial_state()` is one zero vector, and `model(obs[B, T, ...], [h[B, H]], seq_lens[B]) ->
(dist_inputs[B, T, n], values[B, T], [h])`, the state held at each sequence's last valid step.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf


class KerasTinyGRU(keras.Model):
    """Encoder, GRU cell, then logits and value heads; `hidden` units of state."""

    def __init__(self, obs_shape: tuple[int, ...], action_space: gym.Space, num_outputs: int,
                 model_config: Any, hidden: int = 8) -> None:
        super().__init__()
        self.hidden = hidden
        self.encoder = keras.layers.Dense(hidden, activation="tanh")
        self.cell = keras.layers.GRUCell(hidden)
        self.logits = keras.layers.Dense(num_outputs)
        self.value = keras.layers.Dense(1)

    def initial_state(self) -> list[np.ndarray]:
        """One zero state vector (no batch dimension)."""
        return [np.zeros(self.hidden, np.float32)]

    def call(self, obs: tf.Tensor, state: list[tf.Tensor],
             seq_lens: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor]]:
        steps = obs.shape[1]
        flat = tf.reshape(tf.cast(obs, tf.float32), [tf.shape(obs)[0], steps, -1])
        out, h = run_gru_cell(self.cell, self.encoder(flat), state[0], seq_lens)
        return self.logits(out), tf.squeeze(self.value(out), -1), [h]


def run_gru_cell(cell: keras.layers.GRUCell, features: tf.Tensor, h: tf.Tensor,
                 seq_lens: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`cell` over features [B, T, F] from state h [B, H]: the outputs [B, T, H] and the state
    held at each sequence's last valid step (`t < seq_lens[b]`)."""
    outputs = []
    for t in range(features.shape[1]):
        new, _ = cell(features[:, t], [h])
        h = tf.where((t < seq_lens)[:, None], new, h)
        outputs.append(new)
    return tf.stack(outputs, axis=1), h
