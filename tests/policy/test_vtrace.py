"""V-trace: the numpy reference against hand computations, and Torch/TF against the reference."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from flowrl.policy.vtrace import (
    vtrace_inputs_from_fragment,
    vtrace_numpy,
    vtrace_tf,
    vtrace_torch,
)

GAMMA = 0.9


def random_inputs(steps: int, streams: int, seed: int, end_probability: float = 0.2) -> dict:
    """Random V-trace arguments with random episode ends (discount 0) and sizeable log-ratios."""
    rng = np.random.default_rng(seed)
    shape = (steps, streams)
    behaviour_logp = rng.normal(-1.0, 0.5, size=shape)
    return {
        "behaviour_logp": behaviour_logp.astype(np.float32),
        "target_logp": (behaviour_logp + rng.normal(0.0, 1.0, size=shape)).astype(np.float32),
        "rewards": rng.normal(size=shape).astype(np.float32),
        "values": rng.normal(size=shape).astype(np.float32),
        "bootstrap_value": rng.normal(size=streams).astype(np.float32),
        "discounts": np.where(rng.random(shape) < end_probability, 0.0, GAMMA).astype(np.float32),
    }


def hand_n_step_returns(rewards, discounts, bootstrap_value):
    """sum_k (prod of earlier discounts) * r_k + (prod of all discounts) * bootstrap, per cell."""
    steps, streams = rewards.shape
    returns = np.zeros((steps, streams))
    for b in range(streams):
        for t in range(steps):
            total, weight = 0.0, 1.0
            for k in range(t, steps):
                total += weight * rewards[k, b]
                weight *= discounts[k, b]
            returns[t, b] = total + weight * bootstrap_value[b]
    return returns


def one_step(log_rho, clip_rho_threshold=1.0, clip_pg_rho_threshold=1.0, reward=1.0,
             value=0.5, bootstrap=2.0, discount=GAMMA):
    """V-trace over a single step of a single stream."""
    return vtrace_numpy(
        behaviour_logp=np.array([[0.0]]), target_logp=np.array([[log_rho]]),
        rewards=np.array([[reward]]), values=np.array([[value]]),
        bootstrap_value=np.array([bootstrap]), discounts=np.array([[discount]]),
        clip_rho_threshold=clip_rho_threshold, clip_pg_rho_threshold=clip_pg_rho_threshold)


# ---------------------------------------------------------------------------------------------
# The numpy reference against the paper's definitions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (50, 4)])
def test_on_policy_without_clipping_vs_is_the_n_step_bootstrapped_return(shape):
    inputs = random_inputs(*shape, seed=1)
    inputs["target_logp"] = inputs["behaviour_logp"]
    vs, pg_advantages = vtrace_numpy(**inputs, clip_rho_threshold=None,
                                     clip_pg_rho_threshold=None)
    expected = hand_n_step_returns(inputs["rewards"], inputs["discounts"],
                                   inputs["bootstrap_value"])
    np.testing.assert_allclose(vs, expected, rtol=1e-5, atol=1e-5)
    next_vs = np.concatenate([expected[1:], inputs["bootstrap_value"][None]])
    np.testing.assert_allclose(
        pg_advantages, inputs["rewards"] + inputs["discounts"] * next_vs - inputs["values"],
        rtol=1e-5, atol=1e-5)
    assert vs.dtype == pg_advantages.dtype == np.float32


def test_a_huge_importance_weight_is_clipped_to_the_thresholds():
    td_error = 1.0 + GAMMA * 2.0 - 0.5
    vs, pg_advantage = one_step(log_rho=30.0, clip_rho_threshold=1.0, clip_pg_rho_threshold=2.5)
    assert vs[0, 0] == pytest.approx(0.5 + 1.0 * td_error)
    assert pg_advantage[0, 0] == pytest.approx(2.5 * td_error)


def test_no_threshold_means_no_clipping():
    td_error = 1.0 + GAMMA * 2.0 - 0.5
    vs, pg_advantage = one_step(log_rho=3.0, clip_rho_threshold=None, clip_pg_rho_threshold=None)
    assert vs[0, 0] == pytest.approx(0.5 + math.exp(3.0) * td_error, rel=1e-6)
    assert pg_advantage[0, 0] == pytest.approx(math.exp(3.0) * td_error, rel=1e-6)


def test_an_importance_weight_below_the_threshold_is_unchanged():
    td_error = 1.0 + GAMMA * 2.0 - 0.5
    vs, pg_advantage = one_step(log_rho=-1.0)
    assert vs[0, 0] == pytest.approx(0.5 + math.exp(-1.0) * td_error, rel=1e-6)
    assert pg_advantage[0, 0] == pytest.approx(math.exp(-1.0) * td_error, rel=1e-6)


def test_the_trace_coefficient_c_is_clipped_at_one_even_when_rho_is_not():
    # Two steps; rho_0 = e^2 is left unclipped in the value target, but c_0 = min(1, rho_0) = 1.
    log_rhos = np.array([[2.0], [-0.5]])
    rewards, values = np.array([[1.0], [-2.0]]), np.array([[0.3], [0.7]])
    bootstrap, discounts = np.array([1.5]), np.array([[GAMMA], [0.8]])
    vs, _ = vtrace_numpy(np.zeros((2, 1)), log_rhos, rewards, values, bootstrap, discounts,
                         clip_rho_threshold=None, clip_pg_rho_threshold=None)
    rho_0, rho_1 = math.exp(2.0), math.exp(-0.5)
    delta_1 = rho_1 * (-2.0 + 0.8 * 1.5 - 0.7)
    delta_0 = rho_0 * (1.0 + GAMMA * 0.7 - 0.3)
    c_0 = 1.0
    assert vs[1, 0] == pytest.approx(0.7 + delta_1, rel=1e-6)
    assert vs[0, 0] == pytest.approx(0.3 + delta_0 + GAMMA * c_0 * delta_1, rel=1e-6)
    # A small rho_0 shrinks the trace by c_0 = rho_0.
    small = np.array([[-1.0], [-0.5]])
    vs_small, _ = vtrace_numpy(np.zeros((2, 1)), small, rewards, values, bootstrap, discounts)
    delta_0_small = math.exp(-1.0) * (1.0 + GAMMA * 0.7 - 0.3)
    assert vs_small[0, 0] == pytest.approx(
        0.3 + delta_0_small + GAMMA * math.exp(-1.0) * delta_1, rel=1e-6)


def test_a_termination_inside_the_fragment_cuts_the_trace():
    inputs = random_inputs(10, 3, seed=2, end_probability=0.0)
    inputs["discounts"][4, 1] = 0.0  # stream 1's episode terminates at step 4
    vs, pg_advantages = vtrace_numpy(**inputs)
    changed = {name: array.copy() for name, array in inputs.items()}
    rng = np.random.default_rng(3)
    for name in ("behaviour_logp", "target_logp", "rewards", "values", "discounts"):
        changed[name][5:, 1] = rng.normal(size=5).astype(np.float32)
    changed["discounts"][5:, 1] = np.abs(changed["discounts"][5:, 1]).clip(0, 1)
    changed["bootstrap_value"][1] = 123.0
    changed_vs, changed_pg_advantages = vtrace_numpy(**changed)
    np.testing.assert_array_equal(changed_vs[:5, 1], vs[:5, 1])
    np.testing.assert_array_equal(changed_pg_advantages[:5, 1], pg_advantages[:5, 1])
    # The other streams were untouched; the episode after the end did change.
    np.testing.assert_array_equal(changed_vs[:, [0, 2]], vs[:, [0, 2]])
    assert not np.allclose(changed_vs[5:, 1], vs[5:, 1])


# ---------------------------------------------------------------------------------------------
# Building the inputs from a fragment with gymnasium semantics
# ---------------------------------------------------------------------------------------------


def hand_returns_with_gymnasium_semantics(rewards, terminateds, truncateds, next_values, gamma):
    """Per stream, backwards: 0 after a termination, V(new_obs) after a truncation or the end."""
    steps, streams = rewards.shape
    returns = np.zeros((steps, streams))
    for b in range(streams):
        following = next_values[-1, b]
        for t in range(steps - 1, -1, -1):
            if terminateds[t, b]:
                following = rewards[t, b]
            elif truncateds[t, b]:
                following = rewards[t, b] + gamma * next_values[t, b]
            else:
                following = rewards[t, b] + gamma * following
            returns[t, b] = following
    return returns


def random_fragment(steps, streams, seed):
    rng = np.random.default_rng(seed)
    shape = (steps, streams)
    return {
        "rewards": rng.normal(size=shape).astype(np.float32),
        "terminateds": rng.random(shape) < 0.15,
        "truncateds": rng.random(shape) < 0.15,  # some rows are both: terminated wins
        "next_values": rng.normal(size=shape).astype(np.float32),
    }


@pytest.mark.parametrize("shape", [(1, 2), (12, 3), (50, 5)])
def test_on_policy_vtrace_from_a_fragment_gives_the_gymnasium_returns(shape):
    fragment = random_fragment(*shape, seed=4)
    inputs = vtrace_inputs_from_fragment(**fragment, gamma=GAMMA)
    values = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    logp = np.zeros(shape, np.float32)
    vs, _ = vtrace_numpy(logp, logp, inputs.rewards, values, inputs.bootstrap_value,
                         inputs.discounts)
    np.testing.assert_allclose(vs, hand_returns_with_gymnasium_semantics(**fragment, gamma=GAMMA),
                               rtol=1e-5, atol=1e-5)


def test_a_truncated_step_bootstraps_from_its_next_value_and_a_terminated_one_does_not():
    rewards = np.array([[1.0], [2.0], [3.0], [4.0]])
    terminateds = np.array([[False], [False], [True], [False]])
    truncateds = np.array([[False], [True], [False], [False]])
    next_values = np.array([[99.0], [10.0], [77.0], [5.0]])  # rows 0 and 2 must not be read
    inputs = vtrace_inputs_from_fragment(rewards, terminateds, truncateds, next_values, GAMMA)
    np.testing.assert_allclose(inputs.rewards[:, 0], [1.0, 2.0 + GAMMA * 10.0, 3.0, 4.0])
    np.testing.assert_allclose(inputs.discounts[:, 0], [GAMMA, 0.0, 0.0, GAMMA])
    np.testing.assert_allclose(inputs.bootstrap_value, [5.0])
    # Changing the next values that are not read changes nothing.
    other = next_values.copy()
    other[[0, 2], 0] = [np.nan, -1e6]
    assert all(np.array_equal(a, b) for a, b in zip(
        inputs, vtrace_inputs_from_fragment(rewards, terminateds, truncateds, other, GAMMA),
        strict=True))


def test_a_fragment_whose_last_row_terminated_has_zero_bootstrap():
    inputs = vtrace_inputs_from_fragment(np.ones((2, 2)), np.array([[False, False], [True, True]]),
                                         np.array([[False, False], [False, True]]),
                                         np.full((2, 2), np.nan), GAMMA)
    np.testing.assert_array_equal(inputs.bootstrap_value, [0.0, 0.0])
    np.testing.assert_array_equal(inputs.rewards, np.ones((2, 2)))


@pytest.mark.parametrize(("change", "message"), [
    ({"rewards": np.zeros(3)}, r"time-major \[T, B\]"),
    ({"truncateds": np.zeros((3, 3), bool)}, r"one shape"),
    ({"gamma": 1.5}, r"gamma must lie in \[0, 1\]"),
    ({"rewards": np.zeros((0, 2)), "terminateds": np.zeros((0, 2), bool),
      "truncateds": np.zeros((0, 2), bool), "next_values": np.zeros((0, 2))}, "no steps"),
])
def test_fragment_helper_rejects_bad_input(change, message):
    arguments = {"rewards": np.zeros((3, 2)), "terminateds": np.zeros((3, 2), bool),
                 "truncateds": np.zeros((3, 2), bool), "next_values": np.zeros((3, 2)),
                 "gamma": GAMMA, **change}
    with pytest.raises(ValueError, match=message):
        vtrace_inputs_from_fragment(**arguments)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    ({"rewards": np.zeros((4, 2))}, r"time-major \[T, B\] arrays of one shape.*rewards=\(4, 2\)"),
    ({"target_logp": np.zeros(15)}, r"target_logp=\(15,\)"),
    ({"values": np.zeros((5, 3, 1))}, r"time-major \[T, B\]"),
    ({"bootstrap_value": np.zeros((1, 3))}, r"bootstrap_value must be \[B\] = \[3\]"),
    ({"bootstrap_value": np.zeros(5)}, r"bootstrap_value must be \[B\] = \[3\]"),
    ({"discounts": np.full((5, 3), 1.5)}, r"discounts must lie in \[0, 1\]"),
    ({"clip_rho_threshold": 0.0}, "clip_rho_threshold must be a positive number, or None"),
    ({"clip_pg_rho_threshold": "1"}, "clip_pg_rho_threshold must be a positive number"),
])
def test_numpy_rejects_bad_input_with_a_clear_error(change, message):
    arguments = {**random_inputs(5, 3, seed=6), **change}
    with pytest.raises(ValueError, match=message):
        vtrace_numpy(**arguments)


def test_zero_steps_are_rejected():
    arguments = random_inputs(0, 3, seed=6)
    with pytest.raises(ValueError, match="at least one time step"):
        vtrace_numpy(**arguments)


def test_importing_vtrace_imports_no_framework():
    code = ("import sys, flowrl.policy.vtrace; "
            "print(sorted(m for m in ('torch', 'tensorflow') if m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    assert output.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Torch and TF agree with the reference and carry no gradient
# ---------------------------------------------------------------------------------------------

SHAPES = [(1, 1), (5, 3), (50, 4)]
THRESHOLDS = [(1.0, 1.0), (None, None), (2.0, 0.5)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("thresholds", THRESHOLDS)
def test_torch_agrees_with_numpy(shape, thresholds):
    import torch

    inputs = random_inputs(*shape, seed=7)
    expected = vtrace_numpy(**inputs, clip_rho_threshold=thresholds[0],
                            clip_pg_rho_threshold=thresholds[1])
    tensors = {name: torch.from_numpy(array) for name, array in inputs.items()}
    got = vtrace_torch(**tensors, clip_rho_threshold=thresholds[0],
                       clip_pg_rho_threshold=thresholds[1])
    for actual, wanted in zip(got, expected, strict=True):
        assert isinstance(actual, torch.Tensor) and actual.dtype == torch.float32
        np.testing.assert_allclose(actual.numpy(), wanted, rtol=1e-5, atol=1e-5)


def test_torch_outputs_carry_no_gradient():
    import torch

    tensors = {name: torch.from_numpy(array).requires_grad_(True)
               for name, array in random_inputs(6, 2, seed=8).items()}
    vs, pg_advantages = vtrace_torch(**tensors)
    assert not vs.requires_grad and not pg_advantages.requires_grad
    assert vs.grad_fn is None and pg_advantages.grad_fn is None


def test_torch_rejects_mismatched_shapes():
    import torch

    tensors = {name: torch.from_numpy(array) for name, array in random_inputs(5, 3, 9).items()}
    tensors["values"] = torch.zeros(5, 2)
    with pytest.raises(ValueError, match=r"values=\(5, 2\)"):
        vtrace_torch(**tensors)


@pytest.mark.tf
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("thresholds", THRESHOLDS)
def test_tf_agrees_with_numpy(shape, thresholds):
    import tensorflow as tf

    inputs = random_inputs(*shape, seed=10)
    expected = vtrace_numpy(**inputs, clip_rho_threshold=thresholds[0],
                            clip_pg_rho_threshold=thresholds[1])
    got = vtrace_tf(**{name: tf.constant(array) for name, array in inputs.items()},
                    clip_rho_threshold=thresholds[0], clip_pg_rho_threshold=thresholds[1])
    for actual, wanted in zip(got, expected, strict=True):
        assert isinstance(actual, tf.Tensor) and actual.dtype == tf.float32
        np.testing.assert_allclose(actual.numpy(), wanted, rtol=1e-5, atol=1e-5)


@pytest.mark.tf
def test_tf_works_inside_tf_function_with_an_unknown_number_of_steps():
    import tensorflow as tf

    inputs = random_inputs(9, 3, seed=11)
    matrix = tf.TensorSpec([None, 3], tf.float32)
    compiled = tf.function(vtrace_tf, input_signature=[matrix, matrix, matrix, matrix,
                                                       tf.TensorSpec([3], tf.float32), matrix])
    got = compiled(*(tf.constant(inputs[name]) for name in (
        "behaviour_logp", "target_logp", "rewards", "values", "bootstrap_value", "discounts")))
    for actual, wanted in zip(got, vtrace_numpy(**inputs), strict=True):
        np.testing.assert_allclose(actual.numpy(), wanted, rtol=1e-5, atol=1e-5)


@pytest.mark.tf
def test_tf_outputs_carry_no_gradient():
    import tensorflow as tf

    variables = {name: tf.Variable(array) for name, array in random_inputs(6, 2, 12).items()}
    with tf.GradientTape(persistent=True) as tape:
        vs, pg_advantages = vtrace_tf(**variables)
        total = tf.reduce_sum(vs) + tf.reduce_sum(pg_advantages)
    gradients = tape.gradient(total, list(variables.values()))
    assert all(gradient is None for gradient in gradients)
