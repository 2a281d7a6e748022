"""R2D2's losses (Torch and TF), sequence priorities and the value rescaling h(x).

The loss sees replayed sequences as `flowrl.replay.SequenceBuilder` cuts them (obs [S, T, ...],
`state_in_{i}` [S, ...], `burn_in_steps`, `seq_lens`, `loss_mask`, `n_step_returns`,
`bootstrap_index`, `bootstrap_discount`) and calls the recurrent Q-network itself:

1. the real burn-in steps of each sequence (left-aligned) run the online and the target
   network from the stored state without gradient, giving the state the trained steps start
   from (sequences without burn-in keep the stored state);
2. both networks run over the positions after the burn-in; the online one with gradient;
3. each trained step's target is
   `h(n_step_return + bootstrap_discount * h^-1(Q_target(s', argmax_a Q_online(s', a))))` at
   its bootstrap position s', and its TD error is `Q_online(s, a) - target`;
4. padding is zeroed before the model sees it and masked out of every sum, so it changes
   neither the loss nor its gradients.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from flowrl.data import SampleBatch
from flowrl.replay import WEIGHTS
from flowrl.replay.sequences import (
    BOOTSTRAP_DISCOUNT,
    BOOTSTRAP_INDEX,
    BURN_IN_STEPS,
    LOSS_MASK,
    N_STEP_RETURNS,
    SEQ_LENS,
    STATE_IN_PREFIX,
)

# ---- value rescaling --------------------------------------------------------------------------


def value_rescale(x: Any, epsilon: float = 1e-3, xp: Any = np) -> Any:
    """h(x) = sign(x)(sqrt(|x| + 1) - 1) + epsilon x, with `xp` the array module (numpy, torch
    or tf).

    Examples:
        >>> float(value_rescale(np.float64(3.0), 0.0))
        1.0
    """
    return xp.sign(x) * (xp.sqrt(xp.abs(x) + 1.0) - 1.0) + epsilon * x


def inverse_value_rescale(x: Any, epsilon: float = 1e-3, xp: Any = np) -> Any:
    """h^-1(x), the inverse of `value_rescale`, in closed form.

    `(sqrt(1 + 4 eps (|x| + 1 + eps)) - 1) / (2 eps)` is written as
    `2 (|x| + 1 + eps) / (1 + sqrt(...))`, which is the same number without the cancellation
    that costs float32 four digits (and is `|x| + 1` at eps 0).

    Examples:
        >>> round(float(inverse_value_rescale(value_rescale(np.float64(-7.5)))), 9)
        -7.5
    """
    magnitude = xp.abs(x)
    root = xp.sqrt(1.0 + 4.0 * epsilon * (magnitude + 1.0 + epsilon))
    return xp.sign(x) * ((2.0 * (magnitude + 1.0 + epsilon) / (1.0 + root)) ** 2 - 1.0)


def _state_names(batch: dict) -> list[str]:
    names = [name for name in batch if name.startswith(STATE_IN_PREFIX)]
    return sorted(names, key=lambda name: int(name[len(STATE_IN_PREFIX):]))


def _check_recurrent(policy: Any) -> None:
    if not policy.is_recurrent:
        raise ValueError(f"R2D2 trains a recurrent Q-network, but {policy.model_name} is "
                         "stateless; set model.use_lstm=True or a recurrent custom_model.")


# ---- Torch ------------------------------------------------------------------------------------


def _q_after_burn_in_torch(policy: Any, model: Any, obs: Any, state: list, batch: dict) -> Any:
    """Q-values [S, T - burn_in, n] of the positions after the burn-in, whose real steps
    (left-aligned) first warm `state` without gradient."""
    import torch

    burn_in, burned = policy.config.burn_in, batch[BURN_IN_STEPS]
    if burn_in:
        rows = torch.arange(obs.shape[0], device=obs.device)[:, None]
        steps = (burn_in - burned)[:, None] + torch.arange(burn_in, device=obs.device)[None]
        with torch.no_grad():
            *_, warm = model(obs[rows, steps.clamp(max=obs.shape[1] - 1)], state,
                             burned.clamp(min=1))
        state = [torch.where((burned > 0)[:, None], new, old) for new, old in zip(warm, state)]
    q_values, _ = model(obs[:, burn_in:], state, batch[SEQ_LENS] - burned)
    return q_values


def _sequence_td_errors_torch(policy: Any, batch: dict) -> tuple[Any, Any, Any]:
    """(chosen Q, TD errors, trained mask), each [S, T - burn_in]; zeros off the mask."""
    import torch

    _check_recurrent(policy)
    config, obs = policy.config, batch["obs"]
    burn_in, (sequences, length) = config.burn_in, obs.shape[:2]
    positions = torch.arange(length, device=obs.device)[None]
    front = (burn_in - batch[BURN_IN_STEPS])[:, None]
    real = (positions >= front) & (positions < front + batch[SEQ_LENS][:, None])
    obs = torch.where(real.reshape(sequences, length, *[1] * (obs.dim() - 2)), obs,
                      torch.zeros_like(obs))  # padding never reaches the model
    state = [batch[name] for name in _state_names(batch)]
    if config.zero_init_states:
        state = [torch.zeros_like(value) + torch.as_tensor(initial, device=value.device)
                 for value, initial in zip(state, policy.initial_state())]
    q_values = _q_after_burn_in_torch(policy, policy.model, obs, state, batch)
    mask = batch[LOSS_MASK][:, burn_in:].bool()
    actions = torch.where(mask, batch["actions"][:, burn_in:], 0).long()
    chosen = q_values.gather(2, actions.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        target_q = _q_after_burn_in_torch(policy, policy.target_model, obs, state, batch)
        steps = target_q.shape[1]
        index = torch.where(mask, batch[BOOTSTRAP_INDEX][:, burn_in:] - burn_in, 0)
        index = index.clamp(0, steps - 1).unsqueeze(-1).expand(-1, -1, target_q.shape[2])
        next_target = target_q.gather(1, index)
        if config.double_q:
            best = q_values.detach().gather(1, index).argmax(dim=2, keepdim=True)
            next_value = next_target.gather(2, best).squeeze(-1)
        else:
            next_value = next_target.max(dim=2).values
        epsilon = config.h_function_epsilon
        if config.use_h_function:
            next_value = inverse_value_rescale(next_value, epsilon, torch)
        returns = torch.where(mask, batch[N_STEP_RETURNS][:, burn_in:], 0.0)
        discount = torch.where(mask, batch[BOOTSTRAP_DISCOUNT][:, burn_in:], 0.0)
        target = returns + discount * next_value
        if config.use_h_function:
            target = value_rescale(target, epsilon, torch)
    td_errors = torch.where(mask, chosen - target, 0.0)
    return torch.where(mask, chosen, 0.0), td_errors, mask


def r2d2_loss_torch(policy: Any, batch: dict) -> tuple[Any, dict]:
    """R2D2's loss in PyTorch: the Huber loss of each sequence's TD errors, averaged over its
    trained steps and weighted by its importance weight."""
    import torch

    chosen, td_errors, mask = _sequence_td_errors_torch(policy, batch)
    steps = mask.float().sum(dim=1).clamp(min=1.0)
    huber = torch.nn.functional.huber_loss(td_errors, torch.zeros_like(td_errors),
                                           reduction="none", delta=1.0)
    per_sequence = huber.sum(dim=1) / steps
    weights = batch.get(WEIGHTS)
    loss = (per_sequence * weights).mean() if weights is not None else per_sequence.mean()
    trained = chosen[mask]
    return loss, {"mean_q": trained.mean(), "min_q": trained.min(), "max_q": trained.max(),
                  "mean_td_error": td_errors.abs().sum() / steps.sum()}


def r2d2_priorities_torch(policy: Any, batch: dict) -> dict:
    """Each sequence's priority (max/mean mix of |TD error|), in PyTorch."""
    _, td_errors, mask = _sequence_td_errors_torch(policy, batch)
    absolute = td_errors.abs()
    mean = absolute.sum(dim=1) / mask.float().sum(dim=1).clamp(min=1.0)
    eta = policy.config.priority_eta
    return {"priorities": eta * absolute.max(dim=1).values + (1.0 - eta) * mean}


# ---- TensorFlow -------------------------------------------------------------------------------


def _q_after_burn_in_tf(policy: Any, model: Any, obs: Any, state: list, batch: dict) -> Any:
    """As `_q_after_burn_in_torch`, in TensorFlow."""
    import tensorflow as tf

    burn_in, burned = policy.config.burn_in, tf.cast(batch[BURN_IN_STEPS], tf.int32)
    if burn_in:
        steps = (burn_in - burned)[:, None] + tf.range(burn_in)[None]
        prefix = tf.gather(obs, tf.minimum(steps, obs.shape[1] - 1), axis=1, batch_dims=1)
        *_, warm = model(prefix, state, tf.cast(tf.maximum(burned, 1), tf.int64))
        state = [tf.where((burned > 0)[:, None], tf.stop_gradient(new), old)
                 for new, old in zip(warm, state)]
    seq_lens = tf.cast(batch[SEQ_LENS], tf.int64) - tf.cast(burned, tf.int64)
    q_values, _ = model(obs[:, burn_in:], state, seq_lens)
    return q_values


def _sequence_td_errors_tf(policy: Any, batch: dict) -> tuple[Any, Any, Any]:
    """As `_sequence_td_errors_torch`, in TensorFlow."""
    import tensorflow as tf

    _check_recurrent(policy)
    config, obs = policy.config, batch["obs"]
    burn_in, length = config.burn_in, obs.shape[1]
    positions = tf.range(length, dtype=tf.int64)[None]
    front = (burn_in - tf.cast(batch[BURN_IN_STEPS], tf.int64))[:, None]
    real = (positions >= front) & (positions < front + tf.cast(batch[SEQ_LENS], tf.int64)[:, None])
    obs = tf.where(real[(...,) + (None,) * (obs.shape.rank - 2)], obs, tf.zeros_like(obs))
    state = [batch[name] for name in _state_names(batch)]
    if config.zero_init_states:
        state = [tf.zeros_like(value) + initial
                 for value, initial in zip(state, policy.initial_state())]
    q_values = _q_after_burn_in_tf(policy, policy.model, obs, state, batch)
    mask = tf.cast(batch[LOSS_MASK][:, burn_in:], tf.bool)
    actions = tf.where(mask, tf.cast(batch["actions"][:, burn_in:], tf.int32), 0)
    chosen = tf.gather(q_values, actions, axis=2, batch_dims=2)
    target_q = tf.stop_gradient(_q_after_burn_in_tf(policy, policy.target_model, obs, state,
                                                    batch))
    index = tf.where(mask, tf.cast(batch[BOOTSTRAP_INDEX][:, burn_in:], tf.int32) - burn_in, 0)
    index = tf.clip_by_value(index, 0, target_q.shape[1] - 1)
    next_target = tf.gather(target_q, index, axis=1, batch_dims=1)
    if config.double_q:
        online = tf.gather(tf.stop_gradient(q_values), index, axis=1, batch_dims=1)
        best = tf.argmax(online, axis=2, output_type=tf.int32)
        next_value = tf.gather(next_target, best, axis=2, batch_dims=2)
    else:
        next_value = tf.reduce_max(next_target, axis=2)
    epsilon = config.h_function_epsilon
    if config.use_h_function:
        next_value = inverse_value_rescale(next_value, epsilon, tf.math)
    returns = tf.where(mask, batch[N_STEP_RETURNS][:, burn_in:], 0.0)
    discount = tf.where(mask, batch[BOOTSTRAP_DISCOUNT][:, burn_in:], 0.0)
    target = returns + discount * next_value
    if config.use_h_function:
        target = value_rescale(target, epsilon, tf.math)
    td_errors = tf.where(mask, chosen - tf.stop_gradient(target), 0.0)
    return tf.where(mask, chosen, 0.0), td_errors, mask


def r2d2_loss_tf(policy: Any, batch: dict) -> tuple[Any, dict]:
    """R2D2's loss in TensorFlow, the same terms as `r2d2_loss_torch`."""
    import tensorflow as tf

    chosen, td_errors, mask = _sequence_td_errors_tf(policy, batch)
    steps = tf.maximum(tf.reduce_sum(tf.cast(mask, tf.float32), axis=1), 1.0)
    absolute = tf.abs(td_errors)
    quadratic = tf.minimum(absolute, 1.0)
    huber = 0.5 * tf.square(quadratic) + (absolute - quadratic)
    per_sequence = tf.reduce_sum(huber, axis=1) / steps
    weights = batch.get(WEIGHTS)
    loss = tf.reduce_mean(per_sequence * weights if weights is not None else per_sequence)
    trained = tf.boolean_mask(chosen, mask)
    return loss, {"mean_q": tf.reduce_mean(trained), "min_q": tf.reduce_min(trained),
                  "max_q": tf.reduce_max(trained),
                  "mean_td_error": tf.reduce_sum(absolute) / tf.reduce_sum(steps)}


def r2d2_priorities_tf(policy: Any, batch: dict) -> dict:
    """Each sequence's priority (max/mean mix of |TD error|), in TensorFlow."""
    import tensorflow as tf

    _, td_errors, mask = _sequence_td_errors_tf(policy, batch)
    absolute = tf.abs(td_errors)
    steps = tf.maximum(tf.reduce_sum(tf.cast(mask, tf.float32), axis=1), 1.0)
    eta = policy.config.priority_eta
    return {"priorities": eta * tf.reduce_max(absolute, axis=1)
            + (1.0 - eta) * tf.reduce_sum(absolute, axis=1) / steps}


_COMPILED_TF_PRIORITIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tf_priorities_fn(policy: Any) -> Any:
    """`r2d2_priorities_tf` compiled once per TF policy (`run_on_batch` runs eagerly, and an
    eager LSTM unrolled over every position is several times slower than the train step)."""
    fn = _COMPILED_TF_PRIORITIES.get(policy)
    if fn is None:
        import tensorflow as tf

        owner = weakref.ref(policy)  # the cache must not keep the policy alive
        compiled = tf.function(lambda batch: r2d2_priorities_tf(owner(), batch),
                               autograph=False, reduce_retracing=True)
        fn = _COMPILED_TF_PRIORITIES[policy] = lambda _policy, batch: compiled(batch)
    return fn


def compute_sequence_priorities(policy: Any, batch: SampleBatch) -> np.ndarray:
    """Each replayed sequence's priority under `policy` (target-network bootstrap), as numpy:
    what `UpdatePriorities` stores (it takes their absolute value, which they are)."""
    fn = r2d2_priorities_torch if policy.framework == "torch" else _tf_priorities_fn(policy)
    return policy.run_on_batch(fn, batch)["priorities"]
