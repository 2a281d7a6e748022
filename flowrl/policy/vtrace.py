"""V-trace off-policy value targets and policy-gradient advantages (Espeholt et al., 2018, IMPALA).

An IMPALA learner trains on fragments that rollout workers sampled with a slightly older policy
(the *behaviour* policy mu) than the one being trained (the *target* policy pi). V-trace corrects
for that lag with truncated importance weights. All inputs are time-major ``[T, B]`` arrays
(T steps of B independent env streams); ``bootstrap_value`` is ``[B]``, the value of the state
after each stream's last step.

With ``rho_t = pi(a_t|x_t) / mu(a_t|x_t) = exp(target_logp_t - behaviour_logp_t)``::

    clipped_rho_t    = min(clip_rho_threshold, rho_t)       # rho-bar; None: no clipping
    c_t              = min(1, rho_t)                         # c-bar is fixed at 1
    clipped_pg_rho_t = min(clip_pg_rho_threshold, rho_t)
    delta_t  = clipped_rho_t * (r_t + discount_t * V(x_{t+1}) - V(x_t))
    vs_t - V(x_t) = delta_t + discount_t * c_t * (vs_{t+1} - V(x_{t+1}))
    pg_advantage_t = clipped_pg_rho_t * (r_t + discount_t * vs_{t+1} - V(x_t))

where ``V(x_T) = vs_T = bootstrap_value``. ``discounts`` is ``gamma * (1 - terminated)``, so an
episode that terminates inside a fragment cuts the trace there. A *truncated* step must bootstrap
from ``V(new_obs)`` instead of the next row (which starts a new episode);
`vtrace_inputs_from_fragment` folds that bootstrap into the reward and zeroes the discount, which
gives exactly the gymnasium semantics (see docs/vtrace.md).

Three implementations share one semantics: `vtrace_numpy` (the reference), `vtrace_torch` and
`vtrace_tf`. The framework versions import their framework inside the function, so importing this
module imports neither, and their outputs carry no gradient: they are targets, not functions of the
parameters being trained.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

_TIME_MAJOR_ARGUMENTS = ("behaviour_logp", "target_logp", "rewards", "values", "discounts")


class VtraceInputs(NamedTuple):
    """The reward, discount and bootstrap arrays V-trace needs, built from one fragment."""

    rewards: np.ndarray
    """``[T, B]`` float32 rewards, with ``gamma * V(new_obs)`` added at truncated steps."""
    discounts: np.ndarray
    """``[T, B]`` float32, ``gamma`` inside an episode and 0 at the last step of every episode."""
    bootstrap_value: np.ndarray
    """``[B]`` float32, ``V(new_obs)`` of each stream's last row (0 where that row terminated)."""


def vtrace_numpy(
    behaviour_logp: np.ndarray,
    target_logp: np.ndarray,
    rewards: np.ndarray,
    values: np.ndarray,
    bootstrap_value: np.ndarray,
    discounts: np.ndarray,
    clip_rho_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """V-trace value targets and policy-gradient advantages on numpy arrays (the reference).

    Args:
        behaviour_logp: ``[T, B]`` log mu(a_t|x_t) of the policy that sampled the actions.
        target_logp: ``[T, B]`` log pi(a_t|x_t) of the policy being trained.
        rewards: ``[T, B]`` rewards r_t.
        values: ``[T, B]`` the critic's V(x_t).
        bootstrap_value: ``[B]`` V(x_T), the value after each stream's last step.
        discounts: ``[T, B]`` ``gamma * (1 - terminated_t)``, each in [0, 1].
        clip_rho_threshold: rho-bar, the cap on the importance weight in the value target;
            ``None`` leaves it unclipped.
        clip_pg_rho_threshold: the cap on the importance weight in the advantage; ``None``
            leaves it unclipped.

    Returns:
        ``(vs, pg_advantages)``, both ``[T, B]`` float32.

    Raises:
        ValueError: shapes that are not ``[T, B]`` / ``[B]`` or disagree, a threshold that is not
            positive, or a discount outside [0, 1].
    """
    arrays = {
        "behaviour_logp": behaviour_logp, "target_logp": target_logp, "rewards": rewards,
        "values": values, "discounts": discounts, "bootstrap_value": bootstrap_value,
    }
    arrays = {name: np.asarray(array, dtype=np.float64) for name, array in arrays.items()}
    _check_shapes({name: array.shape for name, array in arrays.items()})
    _check_thresholds(clip_rho_threshold, clip_pg_rho_threshold)
    discounts = arrays["discounts"]
    if discounts.size and not (np.all(discounts >= 0.0) and np.all(discounts <= 1.0)):
        raise ValueError(
            f"discounts must lie in [0, 1] (gamma * (1 - terminated)); got values in "
            f"[{discounts.min()}, {discounts.max()}]")

    log_rhos = arrays["target_logp"] - arrays["behaviour_logp"]
    # min(threshold, exp(x)) == exp(min(log(threshold), x)); the second form never overflows.
    clipped_rhos = np.exp(_clip_log_rhos(log_rhos, clip_rho_threshold, np.minimum))
    cs = np.exp(np.minimum(log_rhos, 0.0))
    clipped_pg_rhos = np.exp(_clip_log_rhos(log_rhos, clip_pg_rho_threshold, np.minimum))

    values, rewards = arrays["values"], arrays["rewards"]
    bootstrap = arrays["bootstrap_value"]
    next_values = np.concatenate([values[1:], bootstrap[None]], axis=0)
    deltas = clipped_rhos * (rewards + discounts * next_values - values)
    vs_minus_values = np.zeros_like(values)
    accumulated = np.zeros_like(bootstrap)
    for t in range(len(values) - 1, -1, -1):
        accumulated = deltas[t] + discounts[t] * cs[t] * accumulated
        vs_minus_values[t] = accumulated
    vs = vs_minus_values + values
    next_vs = np.concatenate([vs[1:], bootstrap[None]], axis=0)
    pg_advantages = clipped_pg_rhos * (rewards + discounts * next_vs - values)
    return vs.astype(np.float32), pg_advantages.astype(np.float32)


def vtrace_torch(
    behaviour_logp: Any,
    target_logp: Any,
    rewards: Any,
    values: Any,
    bootstrap_value: Any,
    discounts: Any,
    clip_rho_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
) -> tuple[Any, Any]:
    """`vtrace_numpy` on Torch tensors: returns float32 tensors that carry no gradient.

    Inputs may require grad (e.g. ``target_logp`` and ``values`` straight from the model); the
    outputs are computed without autograd and are detached, on the inputs' device.
    """
    import torch

    _check_shapes({
        "behaviour_logp": tuple(behaviour_logp.shape), "target_logp": tuple(target_logp.shape),
        "rewards": tuple(rewards.shape), "values": tuple(values.shape),
        "discounts": tuple(discounts.shape), "bootstrap_value": tuple(bootstrap_value.shape),
    })
    _check_thresholds(clip_rho_threshold, clip_pg_rho_threshold)
    with torch.no_grad():
        behaviour_logp, target_logp, rewards, values, bootstrap_value, discounts = (
            torch.as_tensor(tensor, dtype=torch.float32).detach()
            for tensor in (behaviour_logp, target_logp, rewards, values, bootstrap_value,
                           discounts))
        log_rhos = target_logp - behaviour_logp
        clipped_rhos = torch.exp(_clip_log_rhos(log_rhos, clip_rho_threshold, torch.clamp_max))
        cs = torch.exp(torch.clamp_max(log_rhos, 0.0))
        clipped_pg_rhos = torch.exp(
            _clip_log_rhos(log_rhos, clip_pg_rho_threshold, torch.clamp_max))

        next_values = torch.cat([values[1:], bootstrap_value[None]], dim=0)
        deltas = clipped_rhos * (rewards + discounts * next_values - values)
        accumulated = torch.zeros_like(bootstrap_value)
        reversed_steps = []
        for t in range(values.shape[0] - 1, -1, -1):
            accumulated = deltas[t] + discounts[t] * cs[t] * accumulated
            reversed_steps.append(accumulated)
        vs_minus_values = torch.stack(reversed_steps[::-1])
        vs = vs_minus_values + values
        next_vs = torch.cat([vs[1:], bootstrap_value[None]], dim=0)
        pg_advantages = clipped_pg_rhos * (rewards + discounts * next_vs - values)
    return vs.detach(), pg_advantages.detach()


def vtrace_tf(
    behaviour_logp: Any,
    target_logp: Any,
    rewards: Any,
    values: Any,
    bootstrap_value: Any,
    discounts: Any,
    clip_rho_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
) -> tuple[Any, Any]:
    """`vtrace_numpy` on TensorFlow tensors: returns float32 tensors behind `tf.stop_gradient`.

    The backward recursion is a reversed `tf.scan`, so this also works inside `tf.function`
    with an unknown number of steps T.
    """
    import tensorflow as tf

    behaviour_logp, target_logp, rewards, values, bootstrap_value, discounts = (
        tf.stop_gradient(tf.cast(tensor, tf.float32))
        for tensor in (behaviour_logp, target_logp, rewards, values, bootstrap_value, discounts))
    _check_shapes({
        "behaviour_logp": tuple(behaviour_logp.shape), "target_logp": tuple(target_logp.shape),
        "rewards": tuple(rewards.shape), "values": tuple(values.shape),
        "discounts": tuple(discounts.shape), "bootstrap_value": tuple(bootstrap_value.shape),
    })
    _check_thresholds(clip_rho_threshold, clip_pg_rho_threshold)
    log_rhos = target_logp - behaviour_logp
    clipped_rhos = tf.exp(_clip_log_rhos(log_rhos, clip_rho_threshold, tf.minimum))
    cs = tf.exp(tf.minimum(log_rhos, 0.0))
    clipped_pg_rhos = tf.exp(_clip_log_rhos(log_rhos, clip_pg_rho_threshold, tf.minimum))

    next_values = tf.concat([values[1:], bootstrap_value[None]], axis=0)
    deltas = clipped_rhos * (rewards + discounts * next_values - values)

    def step(accumulated: Any, per_step: tuple[Any, Any, Any]) -> Any:
        delta, discount, c = per_step
        return delta + discount * c * accumulated

    vs_minus_values = tf.scan(step, (deltas, discounts, cs),
                              initializer=tf.zeros_like(bootstrap_value), reverse=True)
    vs = vs_minus_values + values
    next_vs = tf.concat([vs[1:], bootstrap_value[None]], axis=0)
    pg_advantages = clipped_pg_rhos * (rewards + discounts * next_vs - values)
    return tf.stop_gradient(vs), tf.stop_gradient(pg_advantages)


def vtrace_inputs_from_fragment(
    rewards: np.ndarray,
    terminateds: np.ndarray,
    truncateds: np.ndarray,
    next_values: np.ndarray,
    gamma: float,
) -> VtraceInputs:
    """Builds V-trace's rewards, discounts and bootstrap value from a time-major fragment.

    Gymnasium semantics: a terminated step does not bootstrap (discount 0). A truncated step
    bootstraps from the value of its final observation, which is *not* the next row's state (the
    next row starts a new episode), so its reward becomes ``r_t + gamma * V(new_obs_t)`` and its
    discount 0; V-trace then cuts the trace there and the folded reward carries the bootstrap.
    A step that is both terminated and truncated counts as terminated. The fragment's last row,
    if its episode goes on, bootstraps through ``bootstrap_value = V(new_obs_{T-1})``.

    Args:
        rewards: ``[T, B]`` rewards of the fragment.
        terminateds: ``[T, B]`` bools, True where the episode reached a terminal state.
        truncateds: ``[T, B]`` bools, True where the episode was cut short (time limit).
        next_values: ``[T, B]`` V(new_obs_t). Only read at truncated (not terminated) rows and at
            the last row; other entries may hold anything, e.g. 0, so a caller need only
            evaluate the critic on those rows' ``new_obs``.
        gamma: the discount factor, in [0, 1].

    Returns:
        `VtraceInputs` to pass, with the log-probabilities and values, to a ``vtrace_*``
        function.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1]; got {gamma=}")
    rewards = np.asarray(rewards, dtype=np.float64)
    terminateds = np.asarray(terminateds).astype(bool)
    truncateds = np.asarray(truncateds).astype(bool)
    next_values = np.asarray(next_values, dtype=np.float64)
    shapes = {"rewards": rewards.shape, "terminateds": terminateds.shape,
              "truncateds": truncateds.shape, "next_values": next_values.shape}
    if rewards.ndim != 2 or any(shape != rewards.shape for shape in shapes.values()):
        raise ValueError(
            f"rewards, terminateds, truncateds and next_values must all be time-major [T, B] "
            f"arrays of one shape; got {shapes}")
    if rewards.shape[0] == 0:
        raise ValueError("the fragment has no steps (T == 0); pass at least one row")

    bootstraps_at_truncation = np.logical_and(truncateds, ~terminateds)
    folded_rewards = np.where(bootstraps_at_truncation, rewards + gamma * next_values, rewards)
    discounts = np.where(np.logical_or(terminateds, truncateds), 0.0, gamma)
    bootstrap_value = np.where(terminateds[-1], 0.0, next_values[-1])
    return VtraceInputs(folded_rewards.astype(np.float32), discounts.astype(np.float32),
                        bootstrap_value.astype(np.float32))


def _clip_log_rhos(log_rhos: Any, threshold: float | None, minimum: Any) -> Any:
    """``log(min(threshold, rho))`` with the framework's elementwise minimum; None: no clip."""
    if threshold is None:
        return log_rhos
    return minimum(log_rhos, math.log(threshold))


def _check_thresholds(clip_rho_threshold: float | None,
                      clip_pg_rho_threshold: float | None) -> None:
    for name, threshold in (("clip_rho_threshold", clip_rho_threshold),
                            ("clip_pg_rho_threshold", clip_pg_rho_threshold)):
        if threshold is not None and not (isinstance(threshold, int | float) and threshold > 0):
            raise ValueError(
                f"{name} must be a positive number, or None for no clipping; got {threshold!r}")


def _check_shapes(shapes: dict[str, tuple]) -> None:
    """Time-major ``[T, B]`` arguments of one shape and a ``[B]`` bootstrap; None is unknown."""
    reference = shapes["values"]
    problems = [name for name in _TIME_MAJOR_ARGUMENTS
                if len(shapes[name]) != 2 or not _same_shape(shapes[name], reference)]
    if len(reference) != 2 or problems:
        described = ", ".join(f"{name}={shapes[name]}" for name in _TIME_MAJOR_ARGUMENTS)
        raise ValueError(
            f"V-trace needs time-major [T, B] arrays of one shape for "
            f"{', '.join(_TIME_MAJOR_ARGUMENTS)}; got {described}")
    if reference[0] == 0:
        raise ValueError(f"V-trace needs at least one time step; got [T, B] = {reference}")
    if len(shapes["bootstrap_value"]) != 1 or not _same_shape(shapes["bootstrap_value"],
                                                               reference[1:]):
        raise ValueError(
            f"bootstrap_value must be [B] = [{reference[1]}], the value after each stream's last "
            f"step; got shape {shapes['bootstrap_value']}")


def _same_shape(shape: tuple, other: tuple) -> bool:
    return len(shape) == len(other) and all(
        a is None or b is None or a == b for a, b in zip(shape, other, strict=True))


# ---- V-trace targets from a batch of fragments, per framework ------------------------------------


def vtrace_targets_torch(policy: Any, batch: dict, behaviour_logp: Any, target_logp: Any,
                         values: Any) -> dict[str, Any]:
    """Time-major V-trace targets for a batch of env-major fragments, in PyTorch.

    `behaviour_logp`, `target_logp` and `values` are per-row tensors ([N]); the rows are
    reshaped to `[T, B]` with T = `config.rollout_fragment_length`. Returns time-major
    `target_logp`, `values`, `vs`, `pg_advantages` and `rhos` (the latter three without
    gradient). With `config.vtrace` False the importance weights are 1 (no correction).
    """
    import torch

    config = policy.config
    length = config.rollout_fragment_length
    rows = batch["rewards"].shape[0]
    if rows % length:
        raise ValueError(_not_whole_fragments(rows, length))
    terminateds, truncateds = batch["terminateds"], batch["truncateds"]
    device = batch["rewards"].device  # the learner's (a GPU with num_gpus > 0)
    last_row = torch.arange(rows, device=device) % length == length - 1
    needs_value = last_row | (truncateds & ~terminateds)
    index = torch.nonzero(needs_value).squeeze(1)
    bootstrap_rows = policy.bootstrap_values(batch, index)
    next_values = torch.zeros(rows, dtype=torch.float32, device=device).index_put(
        (index,), bootstrap_rows)
    gamma = float(config.gamma)
    rewards = batch["rewards"]
    rewards = torch.where(truncateds & ~terminateds, rewards + gamma * next_values, rewards)
    discounts = torch.where(terminateds | truncateds, 0.0, gamma)

    def time_major(tensor: Any) -> Any:
        return tensor.reshape(rows // length, length).transpose(0, 1)

    terminated_last = time_major(terminateds)[-1]
    bootstrap_value = torch.where(terminated_last, 0.0, time_major(next_values)[-1])
    if not config.vtrace:
        behaviour_logp = target_logp
    behaviour_logp, target_logp, values = (time_major(t) for t in (behaviour_logp, target_logp,
                                                                   values))
    vs, pg_advantages = vtrace_torch(
        behaviour_logp, target_logp, time_major(rewards), values, bootstrap_value,
        time_major(discounts), clip_rho_threshold=_threshold(config, "vtrace_clip_rho_threshold"),
        clip_pg_rho_threshold=_threshold(config, "vtrace_clip_pg_rho_threshold"))
    rhos = torch.exp(target_logp.detach() - behaviour_logp.detach())
    return {"target_logp": target_logp, "values": values, "vs": vs,
            "pg_advantages": pg_advantages, "rhos": rhos, "behaviour_logp": behaviour_logp}


def vtrace_targets_tf(policy: Any, batch: dict, behaviour_logp: Any, target_logp: Any,
                      values: Any) -> dict[str, Any]:
    """`vtrace_targets_torch` in TensorFlow (works inside `tf.function`, batch size unknown)."""
    import tensorflow as tf

    config = policy.config
    length = config.rollout_fragment_length
    rows = tf.shape(batch["rewards"])[0]
    check = tf.debugging.assert_equal(
        rows % length, 0, message=_not_whole_fragments("the batch's", length))
    terminateds, truncateds = batch["terminateds"], batch["truncateds"]
    with tf.control_dependencies([check]):
        last_row = tf.equal(tf.range(rows) % length, length - 1)
    bootstraps_at_truncation = tf.logical_and(truncateds, tf.logical_not(terminateds))
    index = tf.where(tf.logical_or(last_row, bootstraps_at_truncation))
    bootstrap_rows = policy.bootstrap_values(batch, index)
    next_values = tf.stop_gradient(
        tf.scatter_nd(index, bootstrap_rows, tf.cast(rows, tf.int64)[None]))
    gamma = float(config.gamma)
    rewards = batch["rewards"]
    rewards = tf.where(bootstraps_at_truncation, rewards + gamma * next_values, rewards)
    discounts = tf.where(tf.logical_or(terminateds, truncateds), 0.0, gamma)

    def time_major(tensor: Any) -> Any:
        return tf.transpose(tf.reshape(tensor, [-1, length]))

    bootstrap_value = tf.where(time_major(terminateds)[-1], 0.0, time_major(next_values)[-1])
    if not config.vtrace:
        behaviour_logp = target_logp
    behaviour_logp, target_logp, values = (time_major(t) for t in (behaviour_logp, target_logp,
                                                                   values))
    vs, pg_advantages = vtrace_tf(
        behaviour_logp, target_logp, time_major(rewards), values, bootstrap_value,
        time_major(discounts), clip_rho_threshold=_threshold(config, "vtrace_clip_rho_threshold"),
        clip_pg_rho_threshold=_threshold(config, "vtrace_clip_pg_rho_threshold"))
    rhos = tf.exp(tf.stop_gradient(target_logp - behaviour_logp))
    return {"target_logp": target_logp, "values": values, "vs": vs,
            "pg_advantages": pg_advantages, "rhos": rhos, "behaviour_logp": behaviour_logp}


def _threshold(config: Any, name: str) -> float | None:
    value = getattr(config, name)
    return None if value is None else float(value)


def _not_whole_fragments(rows: Any, length: int) -> str:
    return (f"V-trace needs whole fragments of rollout_fragment_length={length} rows per env "
            f"stream, but {rows} rows are not a multiple of it; train on batches built from "
            "whole sampled fragments (batch_mode='truncate_episodes', no row shuffling).")
