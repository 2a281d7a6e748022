"""Action distributions over Torch tensors, parameterised by the model's `dist_inputs`.

Each class takes the model output batch (B, n) and offers `sample(generator)`,
`deterministic_sample()`, `logp(actions)`, `entropy()` and `kl(other)`, each per row.
The TF classes in `tf_distributions` implement the same maths.
"""

from __future__ import annotations

import math

import torch

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class TorchDistribution:
    """Base class: holds the `inputs` tensor the model produced."""

    def __init__(self, inputs: torch.Tensor) -> None:
        self.inputs = inputs

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def deterministic_sample(self) -> torch.Tensor:
        raise NotImplementedError

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def entropy(self) -> torch.Tensor:
        raise NotImplementedError

    def kl(self, other: TorchDistribution) -> torch.Tensor:
        raise NotImplementedError


class TorchCategorical(TorchDistribution):
    """A categorical distribution over `n` actions from unnormalised logits (B, n)."""

    def __init__(self, inputs: torch.Tensor) -> None:
        super().__init__(inputs)
        self.log_probs = torch.log_softmax(inputs, dim=-1)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        # Gumbel-max: argmax(logits + G), with G = -log(E), E ~ Exponential(1).
        exponential = torch.empty_like(self.inputs).exponential_(generator=generator)
        return torch.argmax(self.inputs - exponential.log_(), dim=-1)

    def deterministic_sample(self) -> torch.Tensor:
        return torch.argmax(self.inputs, dim=-1)

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        return self.log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.log_probs.exp() * self.log_probs).sum(-1)

    def kl(self, other: TorchCategorical) -> torch.Tensor:
        return (self.log_probs.exp() * (self.log_probs - other.log_probs)).sum(-1)


class TorchMultiCategorical(TorchDistribution):
    """Independent categoricals, one per MultiDiscrete dimension; `nvec` splits the logits."""

    def __init__(self, inputs: torch.Tensor, nvec: tuple[int, ...]) -> None:
        super().__init__(inputs)
        self.nvec = tuple(int(n) for n in nvec)
        self.parts = [TorchCategorical(x) for x in torch.split(inputs, self.nvec, dim=-1)]

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.stack([p.sample(generator) for p in self.parts], dim=-1)

    def deterministic_sample(self) -> torch.Tensor:
        return torch.stack([p.deterministic_sample() for p in self.parts], dim=-1)

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        return sum(p.logp(actions[..., i]) for i, p in enumerate(self.parts))

    def entropy(self) -> torch.Tensor:
        return sum(p.entropy() for p in self.parts)

    def kl(self, other: TorchMultiCategorical) -> torch.Tensor:
        return sum(p.kl(q) for p, q in zip(self.parts, other.parts))


class TorchDiagGaussian(TorchDistribution):
    """A diagonal Gaussian; `inputs` is (B, 2k): the means, then the log standard deviations."""

    def __init__(self, inputs: torch.Tensor) -> None:
        super().__init__(inputs)
        self.mean, self.log_std = torch.chunk(inputs, 2, dim=-1)
        self.std = self.log_std.exp()

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype,
                            device=self.mean.device)
        return self.mean + self.std * noise

    def deterministic_sample(self) -> torch.Tensor:
        return self.mean

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        z = (actions - self.mean) / self.std
        return (-0.5 * z.square() - self.log_std - _HALF_LOG_2PI).sum(-1)

    def entropy(self) -> torch.Tensor:
        return (self.log_std + 0.5 + _HALF_LOG_2PI).sum(-1)

    def kl(self, other: TorchDiagGaussian) -> torch.Tensor:
        ratio = (self.std.square() + (self.mean - other.mean).square()) / (
            2.0 * other.std.square()
        )
        return (other.log_std - self.log_std + ratio - 0.5).sum(-1)


class TorchDeterministic(TorchDistribution):
    """A point mass at `inputs` (for deterministic policies): logp, entropy and kl are 0."""

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.inputs

    def deterministic_sample(self) -> torch.Tensor:
        return self.inputs

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.zeros(self.inputs.shape[:-1], dtype=self.inputs.dtype,
                           device=self.inputs.device)

    def entropy(self) -> torch.Tensor:
        return torch.zeros(self.inputs.shape[:-1], dtype=self.inputs.dtype,
                           device=self.inputs.device)

    def kl(self, other: TorchDeterministic) -> torch.Tensor:
        return torch.zeros(self.inputs.shape[:-1], dtype=self.inputs.dtype,
                           device=self.inputs.device)


DISTRIBUTIONS = {
    "Categorical": TorchCategorical,
    "MultiCategorical": TorchMultiCategorical,
    "DiagGaussian": TorchDiagGaussian,
    "Deterministic": TorchDeterministic,
}
