"""Distributions against hand-written numpy formulas, in Torch and in TF."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flowrl.policy import get_distribution_class

LOGITS = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], np.float32)
OTHER_LOGITS = np.array([[0.3, 0.1, -0.5], [1.0, 1.0, 1.0]], np.float32)
GAUSS = np.array([[0.5, -1.0, 0.1, -0.3], [0.0, 2.0, -0.5, 0.2]], np.float32)  # mean | log_std
OTHER_GAUSS = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.3, -0.1]], np.float32)


def log_softmax(x):
    x = x.astype(np.float64)
    return x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1,
                                                                                      keepdims=True))


def gauss_reference(inputs, other, actions):
    mean, log_std = np.split(inputs.astype(np.float64), 2, -1)
    omean, olog_std = np.split(other.astype(np.float64), 2, -1)
    std, ostd = np.exp(log_std), np.exp(olog_std)
    logp = (-0.5 * ((actions - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    entropy = (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)
    kl = (olog_std - log_std + (std**2 + (mean - omean) ** 2) / (2 * ostd**2) - 0.5).sum(-1)
    return logp, entropy, kl


def to_numpy(x):
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def check_framework(framework, tensor):
    categorical = get_distribution_class("Categorical", framework)
    dist, other = categorical(tensor(LOGITS)), categorical(tensor(OTHER_LOGITS))
    lp, olp = log_softmax(LOGITS), log_softmax(OTHER_LOGITS)
    actions = np.array([1, 2])
    np.testing.assert_allclose(to_numpy(dist.logp(tensor(actions))), lp[[0, 1], actions],
                               rtol=1e-5)
    np.testing.assert_allclose(to_numpy(dist.entropy()), -(np.exp(lp) * lp).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(to_numpy(dist.kl(other)), (np.exp(lp) * (lp - olp)).sum(-1),
                               rtol=1e-5, atol=1e-6)
    assert to_numpy(dist.deterministic_sample()).tolist() == [1, 2]

    multi = get_distribution_class("MultiCategorical", framework)
    two = np.concatenate([LOGITS, OTHER_LOGITS[:, :2]], axis=1)
    mdist = multi(tensor(two), nvec=(3, 2))
    mactions = np.array([[1, 0], [2, 1]])
    lp2 = log_softmax(two[:, 3:])
    expected = lp[[0, 1], mactions[:, 0]] + lp2[[0, 1], mactions[:, 1]]
    np.testing.assert_allclose(to_numpy(mdist.logp(tensor(mactions))), expected, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(mdist.entropy()),
                               -(np.exp(lp) * lp).sum(-1) - (np.exp(lp2) * lp2).sum(-1), rtol=1e-5)
    assert to_numpy(mdist.sample()).shape == (2, 2)

    gaussian = get_distribution_class("DiagGaussian", framework)
    gdist, gother = gaussian(tensor(GAUSS)), gaussian(tensor(OTHER_GAUSS))
    gactions = np.array([[0.2, 0.1], [-0.3, 1.5]], np.float32)
    logp, entropy, kl = gauss_reference(GAUSS, OTHER_GAUSS, gactions)
    np.testing.assert_allclose(to_numpy(gdist.logp(tensor(gactions))), logp, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(gdist.entropy()), entropy, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(gdist.kl(gother)), kl, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(gdist.kl(gdist)), 0.0, atol=1e-6)
    np.testing.assert_allclose(to_numpy(gdist.deterministic_sample()), GAUSS[:, :2])

    deterministic = get_distribution_class("Deterministic", framework)
    ddist = deterministic(tensor(gactions))
    np.testing.assert_array_equal(to_numpy(ddist.sample()), gactions)
    assert to_numpy(ddist.logp(tensor(gactions))).tolist() == [0.0, 0.0]
    assert to_numpy(ddist.entropy()).shape == (2,)


def test_torch_distributions():
    import torch

    check_framework("torch", torch.as_tensor)


def test_torch_sampling_is_seeded_and_matches_probabilities():
    import torch

    dist = get_distribution_class("Categorical", "torch")(
        torch.as_tensor(np.tile(np.log([[0.2, 0.5, 0.3]]), (20000, 1)).astype(np.float32)))
    draws = [dist.sample(torch.Generator().manual_seed(4)).numpy() for _ in range(2)]
    np.testing.assert_array_equal(draws[0], draws[1])
    np.testing.assert_allclose(np.bincount(draws[0], minlength=3) / 20000, [0.2, 0.5, 0.3],
                               atol=0.02)
    gdist = get_distribution_class("DiagGaussian", "torch")(
        torch.as_tensor(np.tile([[1.0, np.log(2.0)]], (20000, 1)).astype(np.float32)))
    sample = gdist.sample(torch.Generator().manual_seed(0)).numpy()
    assert abs(sample.mean() - 1.0) < 0.05 and abs(sample.std() - 2.0) < 0.05


@pytest.mark.tf
def test_tf_distributions():
    import tensorflow as tf

    check_framework("tf", tf.convert_to_tensor)
    dist = get_distribution_class("Categorical", "tf")(
        tf.constant(np.tile(np.log([[0.2, 0.5, 0.3]]), (20000, 1)).astype(np.float32)))
    draws = [dist.sample(tf.random.Generator.from_seed(4)).numpy() for _ in range(2)]
    np.testing.assert_array_equal(draws[0], draws[1])
    np.testing.assert_allclose(np.bincount(draws[0], minlength=3) / 20000, [0.2, 0.5, 0.3],
                               atol=0.02)


def test_unknown_distribution_name():
    with pytest.raises(ValueError, match="valid: \\['Categorical'"):
        get_distribution_class("Beta")
