"""A tiny recurrent actor-critic for Torch: the test model of the recurrent model contract.

`TorchTinyGRU` is a custom model (`{"model": {"custom_model": TorchTinyGRU}}`) that meets the
recurrent form of the `actor_critic` contract: `initial_state()` is one zero vector, and
`model(obs[B, T, ...], [h[B, H]], seq_lens[B]) -> (dist_inputs[B, T, n], values[B, T], [h])`,
where a sequence's state stops at its last valid step (`t < seq_lens[b]`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn


class TorchTinyGRU(nn.Module):
    """Encoder, GRU cell, then logits and value heads; `hidden` units of state."""

    def __init__(self, obs_shape: tuple[int, ...], action_space: gym.Space, num_outputs: int,
                 model_config: Any, hidden: int = 8) -> None:
        super().__init__()
        self.hidden = hidden
        self.encoder = nn.Linear(int(np.prod(obs_shape)), hidden)
        self.cell = nn.GRUCell(hidden, hidden)
        self.logits = nn.Linear(hidden, num_outputs)
        self.value = nn.Linear(hidden, 1)

    def initial_state(self) -> list[np.ndarray]:
        """One zero state vector (no batch dimension)."""
        return [np.zeros(self.hidden, np.float32)]

    def forward(self, obs: torch.Tensor, state: list[torch.Tensor],
                seq_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        batch, steps = obs.shape[0], obs.shape[1]
        features = torch.tanh(self.encoder(obs.float().reshape(batch, steps, -1)))
        out, h = run_gru_cell(self.cell, features, state[0], seq_lens)
        return self.logits(out), self.value(out).squeeze(-1), [h]


def run_gru_cell(cell: nn.GRUCell, features: torch.Tensor, h: torch.Tensor,
                 seq_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`cell` over features [B, T, F] from state h [B, H]: the outputs [B, T, H] and the state
    held at each sequence's last valid step (`t < seq_lens[b]`)."""
    outputs = []
    for t in range(features.shape[1]):
        new = cell(features[:, t], h)
        h = torch.where((t < seq_lens).unsqueeze(-1), new, h)
        outputs.append(new)
    return torch.stack(outputs, dim=1), h
