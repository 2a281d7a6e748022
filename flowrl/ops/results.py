"""Typed items that flow between training operators."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Gradients:
    """Gradients computed on one batch, with the batch's size and the loss statistics.

    `grads` is a list of numpy arrays in the order of the policy's `get_weights()` keys.
    """

    grads: list[np.ndarray]
    stats: dict[str, float]
    count: int


@dataclass
class MultiAgentGradients:
    """Gradients of several policies, each computed on that policy's own rows of one sample.

    Attributes:
        policy_gradients: policy id -> that policy's `Gradients` (`count`: its rows).
        env_steps: environment steps the sample covered (each may hold several agents).
    """

    policy_gradients: dict[str, Gradients]
    env_steps: int

    @property
    def count(self) -> int:
        """Rows the gradients came from, summed over policies (agent steps trained on)."""
        return sum(g.count for g in self.policy_gradients.values())


@dataclass
class TrainResult:
    """What a training operator yields: per-policy learner statistics and samples trained on."""

    learner_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    num_steps_trained: int = 0
