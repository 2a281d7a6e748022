"""A tiny recurrent Q-network in Keras: the TF test model of the recurrent `q` contract.

`KerasTinyRecurrentQ` meets the recurrent form of the `q` contract as
`flowrl.testing.recurrent_q.TorchTinyRecurrentQ` does: `initial_state()` is one zero vector,
and `model(obs[B, T, ...], [h[B, H]], seq_lens[B]) -> (q_values[B, T, n], [h])`, the state held
at each sequence's last valid step.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf

from flowrl.testing.tf_recurrent import run_gru_cell


class KerasTinyRecurrentQ(keras.Model):
    """Encoder, GRU cell, then a Q head; `hidden` units of state."""

    def __init__(self, obs_shape: tuple[int, ...], action_space: gym.Space, num_outputs: int,
                 model_config: Any, hidden: int = 16) -> None:
        super().__init__()
        self.hidden = hidden
        self.encoder = keras.layers.Dense(hidden, activation="tanh")
        self.cell = keras.layers.GRUCell(hidden)
        self.q = keras.layers.Dense(num_outputs)

    def initial_state(self) -> list[np.ndarray]:
        """One zero state vector (no batch dimension)."""
        return [np.zeros(self.hidden, np.float32)]

    def call(self, obs: tf.Tensor, state: list[tf.Tensor],
             seq_lens: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        steps = obs.shape[1]
        flat = tf.reshape(tf.cast(obs, tf.float32), [tf.shape(obs)[0], steps, -1])
        out, h = run_gru_cell(self.cell, self.encoder(flat), state[0], seq_lens)
        return self.q(out), [h]
