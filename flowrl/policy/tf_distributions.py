"""Action distributions over TF tensors; the same maths as `torch_distributions`.

`sample` takes an optional `tf.random.Generator` (the policy's own, so seeded runs reproduce).
"""

from __future__ import annotations

import math

import tensorflow as tf

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class TFDistribution:
    """Base class: holds the `inputs` tensor the model produced."""

    def __init__(self, inputs: tf.Tensor) -> None:
        self.inputs = inputs

    def sample(self, generator: tf.random.Generator | None = None) -> tf.Tensor:
        raise NotImplementedError

    def deterministic_sample(self) -> tf.Tensor:
        raise NotImplementedError

    def logp(self, actions: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def entropy(self) -> tf.Tensor:
        raise NotImplementedError

    def kl(self, other: TFDistribution) -> tf.Tensor:
        raise NotImplementedError


def _uniform(shape: tf.Tensor, generator: tf.random.Generator | None) -> tf.Tensor:
    if generator is None:
        return tf.random.uniform(shape, 1e-20, 1.0)
    return generator.uniform(shape, 1e-20, 1.0)


class TFCategorical(TFDistribution):
    """A categorical distribution over `n` actions from unnormalised logits (B, n)."""

    def __init__(self, inputs: tf.Tensor) -> None:
        super().__init__(inputs)
        self.log_probs = tf.nn.log_softmax(inputs, axis=-1)

    def sample(self, generator: tf.random.Generator | None = None) -> tf.Tensor:
        gumbel = -tf.math.log(-tf.math.log(_uniform(tf.shape(self.inputs), generator)))
        return tf.argmax(self.log_probs + gumbel, axis=-1, output_type=tf.int64)

    def deterministic_sample(self) -> tf.Tensor:
        return tf.argmax(self.inputs, axis=-1, output_type=tf.int64)

    def logp(self, actions: tf.Tensor) -> tf.Tensor:
        indices = tf.cast(actions, tf.int32)[..., None]
        return tf.gather(self.log_probs, indices, batch_dims=1)[..., 0]

    def entropy(self) -> tf.Tensor:
        return -tf.reduce_sum(tf.exp(self.log_probs) * self.log_probs, axis=-1)

    def kl(self, other: TFCategorical) -> tf.Tensor:
        return tf.reduce_sum(tf.exp(self.log_probs) * (self.log_probs - other.log_probs), -1)


class TFMultiCategorical(TFDistribution):
    """Independent categoricals, one per MultiDiscrete dimension; `nvec` splits the logits."""

    def __init__(self, inputs: tf.Tensor, nvec: tuple[int, ...]) -> None:
        super().__init__(inputs)
        self.nvec = tuple(int(n) for n in nvec)
        self.parts = [TFCategorical(x) for x in tf.split(inputs, self.nvec, axis=-1)]

    def sample(self, generator: tf.random.Generator | None = None) -> tf.Tensor:
        return tf.stack([p.sample(generator) for p in self.parts], axis=-1)

    def deterministic_sample(self) -> tf.Tensor:
        return tf.stack([p.deterministic_sample() for p in self.parts], axis=-1)

    def logp(self, actions: tf.Tensor) -> tf.Tensor:
        return tf.add_n([p.logp(actions[..., i]) for i, p in enumerate(self.parts)])

    def entropy(self) -> tf.Tensor:
        return tf.add_n([p.entropy() for p in self.parts])

    def kl(self, other: TFMultiCategorical) -> tf.Tensor:
        return tf.add_n([p.kl(q) for p, q in zip(self.parts, other.parts)])


class TFDiagGaussian(TFDistribution):
    """A diagonal Gaussian; `inputs` is (B, 2k): the means, then the log standard deviations."""

    def __init__(self, inputs: tf.Tensor) -> None:
        super().__init__(inputs)
        self.mean, self.log_std = tf.split(inputs, 2, axis=-1)
        self.std = tf.exp(self.log_std)

    def sample(self, generator: tf.random.Generator | None = None) -> tf.Tensor:
        shape = tf.shape(self.mean)
        noise = tf.random.normal(shape) if generator is None else generator.normal(shape)
        return self.mean + self.std * noise

    def deterministic_sample(self) -> tf.Tensor:
        return self.mean

    def logp(self, actions: tf.Tensor) -> tf.Tensor:
        z = (tf.cast(actions, self.mean.dtype) - self.mean) / self.std
        return tf.reduce_sum(-0.5 * tf.square(z) - self.log_std - _HALF_LOG_2PI, axis=-1)

    def entropy(self) -> tf.Tensor:
        return tf.reduce_sum(self.log_std + 0.5 + _HALF_LOG_2PI, axis=-1)

    def kl(self, other: TFDiagGaussian) -> tf.Tensor:
        ratio = (tf.square(self.std) + tf.square(self.mean - other.mean)) / (
            2.0 * tf.square(other.std)
        )
        return tf.reduce_sum(other.log_std - self.log_std + ratio - 0.5, axis=-1)


class TFDeterministic(TFDistribution):
    """A point mass at `inputs` (for deterministic policies): logp, entropy and kl are 0."""

    def sample(self, generator: tf.random.Generator | None = None) -> tf.Tensor:
        return self.inputs

    def deterministic_sample(self) -> tf.Tensor:
        return self.inputs

    def logp(self, actions: tf.Tensor) -> tf.Tensor:
        return tf.zeros(tf.shape(self.inputs)[:-1], self.inputs.dtype)

    def entropy(self) -> tf.Tensor:
        return tf.zeros(tf.shape(self.inputs)[:-1], self.inputs.dtype)

    def kl(self, other: TFDeterministic) -> tf.Tensor:
        return tf.zeros(tf.shape(self.inputs)[:-1], self.inputs.dtype)


DISTRIBUTIONS = {
    "Categorical": TFCategorical,
    "MultiCategorical": TFMultiCategorical,
    "DiagGaussian": TFDiagGaussian,
    "Deterministic": TFDeterministic,
}
