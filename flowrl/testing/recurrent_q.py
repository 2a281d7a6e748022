"""A tiny recurrent Q-network for Torch: the test model of the recurrent `q` contract.

`TorchTinyRecurrentQ` is a custom model (`{"model": {"custom_model": TorchTinyRecurrentQ}}`):
`initial_state()` is one zero vector, and
`model(obs[B, T, ...], [h[B, H]], seq_lens[B]) -> (q_values[B, T, n], [h])` (an encoder, a GRU
cell and a linear Q head), where a sequence's state stops at its last valid step
(`t < seq_lens[b]`). `flowrl.testing.tf_recurrent_q.KerasTinyRecurrentQ` is its Keras twin.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from flowrl.testing.torch_recurrent import run_gru_cell


class TorchTinyRecurrentQ(nn.Module):
    """Encoder, GRU cell, then a Q head; `hidden` units of state."""

    def __init__(self, obs_shape: tuple[int, ...], action_space: gym.Space, num_outputs: int,
                 model_config: Any, hidden: int = 16) -> None:
        super().__init__()
        self.hidden = hidden
        self.encoder = nn.Linear(int(np.prod(obs_shape)), hidden)
        self.cell = nn.GRUCell(hidden, hidden)
        self.q = nn.Linear(hidden, num_outputs)

    def initial_state(self) -> list[np.ndarray]:
        """One zero state vector (no batch dimension)."""
        return [np.zeros(self.hidden, np.float32)]

    def forward(self, obs: torch.Tensor, state: list[torch.Tensor],
                seq_lens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        batch, steps = obs.shape[0], obs.shape[1]
        features = torch.tanh(self.encoder(obs.float().reshape(batch, steps, -1)))
        out, h = run_gru_cell(self.cell, features, state[0], seq_lens)
        return self.q(out), [h]
