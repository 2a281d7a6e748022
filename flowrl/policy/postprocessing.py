"""Postprocessing of one trajectory piece, with gymnasium's terminated/truncated semantics:
advantage estimation (GAE, discounted returns) and n-step returns for replay.

A piece that ends in `terminateds=True` reached a terminal state: its bootstrap value is 0. A piece
that ends any other way (gymnasium truncation, or the rollout fragment was cut) bootstraps from the
value of its final observation, `V(new_obs[-1])`, passed in as `last_value`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from flowrl.data.sample_batch import SampleBatch

if TYPE_CHECKING:
    from flowrl.policy.policy import Policy


def discount_cumsum(values: np.ndarray, discount: float) -> np.ndarray:
    """`out[t] = sum_k discount**k * values[t + k]` (float64 accumulation).

    Examples:
        >>> discount_cumsum(np.array([1.0, 1.0, 1.0]), 0.5).tolist()
        [1.75, 1.5, 1.0]
    """
    out = np.zeros(len(values), dtype=np.float64)
    running = 0.0
    for t in range(len(values) - 1, -1, -1):
        running = float(values[t]) + discount * running
        out[t] = running
    return out


def compute_advantages(
    batch: SampleBatch,
    last_value: float,
    gamma: float = 0.99,
    lambda_: float = 1.0,
    use_gae: bool = True,
    use_critic: bool = True,
) -> SampleBatch:
    """Adds `advantages` and `value_targets` (float32) to one contiguous trajectory piece.

    - `use_gae`: GAE(gamma, lambda) over `vf_preds`; `value_targets = advantages + vf_preds`.
    - not `use_gae`, `use_critic`: discounted returns `R`; `advantages = R - vf_preds`,
      `value_targets = R`.
    - neither: `advantages = value_targets = R` (vanilla policy gradient).

    If the batch has a `terminateds` column and its last row is set, the bootstrap value is 0
    whatever `last_value` says (a terminal state has no future).

    Args:
        batch: rows of one env in time order with `rewards` (and `vf_preds` if `use_critic`).
        last_value: V of the observation after the last row (ignored if the last row terminated).
        gamma: discount factor.
        lambda_: the GAE lambda.
        use_gae: use GAE rather than plain discounted returns.
        use_critic: whether `vf_preds` exist and are used.

    Returns:
        The same batch object, with the two columns added.

    Raises:
        ValueError: if GAE is asked for without a critic, a column is missing, or the piece
            contains an episode end before its last row.

    Examples:
        >>> b = SampleBatch(rewards=[1.0, 1.0], vf_preds=[0.0, 0.0], terminateds=[False, True])
        >>> compute_advantages(b, last_value=5.0, gamma=1.0)["advantages"].tolist()
        [2.0, 1.0]
    """
    if use_gae and not use_critic:
        raise ValueError("use_gae=True needs a critic (vf_preds); set use_critic=True")
    needed = ["rewards"] + (["vf_preds"] if use_critic else [])
    missing = [c for c in needed if c not in batch]
    if missing:
        raise ValueError(f"compute_advantages needs columns {missing}, got {batch.columns}")
    _check_single_piece(batch)
    if "terminateds" in batch and len(batch) and bool(batch["terminateds"][-1]):
        last_value = 0.0
    rewards = batch["rewards"].astype(np.float64)
    if use_gae:
        values = np.append(batch["vf_preds"].astype(np.float64), float(last_value))
        deltas = rewards + gamma * values[1:] - values[:-1]
        advantages = discount_cumsum(deltas, gamma * lambda_)
        value_targets = advantages + values[:-1]
    else:
        returns = discount_cumsum(np.append(rewards, float(last_value)), gamma)[:-1]
        value_targets = returns
        advantages = returns - batch["vf_preds"] if use_critic else returns
    batch["advantages"] = advantages.astype(np.float32)
    batch["value_targets"] = value_targets.astype(np.float32)
    return batch


def _check_single_piece(batch: SampleBatch) -> None:
    for column in ("terminateds", "truncateds"):
        if column in batch and len(batch) > 1 and batch[column][:-1].any():
            row = int(np.flatnonzero(batch[column][:-1])[0])
            raise ValueError(
                f"compute_advantages needs one trajectory piece, but {column}[{row}] is set "
                f"before the last row ({len(batch) - 1}); split with batch.split_by_episode()"
            )


def compute_gae_for_trajectory(policy: Policy, batch: SampleBatch) -> SampleBatch:
    """The default `postprocess_fn`: bootstraps from `V(new_obs[-1])` and computes advantages.

    The bootstrap value is 0 when the last row terminated, or when the policy has no critic.
    """
    config = policy.config
    if len(batch) == 0:
        return batch
    terminated = "terminateds" in batch and bool(batch["terminateds"][-1])
    last_value = 0.0
    if not terminated and config.use_critic:
        last_value = float(policy.compute_values_after(batch[-1:])[0])
    return compute_advantages(
        batch,
        last_value,
        gamma=config.gamma,
        lambda_=config.gae_lambda,
        use_gae=config.use_gae,
        use_critic=config.use_critic,
    )


def trajectory_bounds(terminateds: np.ndarray, truncateds: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) row ranges of the trajectory pieces in one env's rows, cut after each end.

    Examples:
        >>> trajectory_bounds(np.array([False, True, False]), np.array([False, False, False]))
        [(0, 2), (2, 3)]
    """
    ends = np.flatnonzero(np.logical_or(terminateds, truncateds)) + 1
    starts = np.concatenate([[0], ends])
    stops = np.concatenate([ends, [len(terminateds)]])
    return [(int(a), int(b)) for a, b in zip(starts, stops) if b > a]


def compute_gae_for_fragment(policy: Policy, columns: dict[str, np.ndarray]) -> SampleBatch:
    """The default postprocessing for a whole fragment of N envs at once.

    Gives the same `advantages`/`value_targets` as `compute_gae_for_trajectory` applied to every
    trajectory piece (episodes cut at their ends, and every env cut at the fragment's end), but
    with one batched value forward for all bootstraps and a vectorized recursion over time.

    Args:
        policy: reads `gamma`, `gae_lambda`, `use_gae`, `use_critic` and
            `compute_values_after` (a recurrent model's bootstrap starts from the stored state).
        columns: arrays shaped (T, N, ...): T steps of N envs, with `rewards`, `terminateds`,
            `truncateds`, `new_obs` (and `vf_preds` with a critic).

    Returns:
        The rows env by env (env-major), each env's rows in time order.
    """
    config = policy.config
    gamma, lambda_ = float(config.gamma), float(config.gae_lambda)
    rewards = columns["rewards"].astype(np.float64)
    terminated = columns["terminateds"].astype(bool)
    piece_end = np.logical_or(terminated, columns["truncateds"])
    piece_end[-1] = True  # the fragment's end cuts every env
    # Value of the state after each row: the next row's value inside a piece, 0 after a
    # termination, V(new_obs) after a truncation or the fragment's cut.
    next_values = np.zeros_like(rewards)
    if config.use_critic:
        values = columns["vf_preds"].astype(np.float64)
        next_values[:-1] = values[1:]
        bootstrap = np.logical_and(piece_end, ~terminated)
        if bootstrap.any():
            next_values[bootstrap] = policy.compute_values_after(
                {name: value[bootstrap] for name, value in columns.items()})
        next_values[terminated] = 0.0
    advantages, value_targets = _fragment_returns(
        rewards, next_values, values if config.use_critic else None, piece_end, gamma,
        lambda_, use_gae=bool(config.use_gae))
    env_major = {name: np.swapaxes(value, 0, 1).reshape((-1,) + value.shape[2:])
                 for name, value in columns.items()}
    env_major["advantages"] = advantages.T.reshape(-1).astype(np.float32)
    env_major["value_targets"] = value_targets.T.reshape(-1).astype(np.float32)
    return SampleBatch(env_major)


def _fragment_returns(rewards: np.ndarray, next_values: np.ndarray, values: np.ndarray | None,
                      piece_end: np.ndarray, gamma: float, lambda_: float, *,
                      use_gae: bool) -> tuple[np.ndarray, np.ndarray]:
    """The backward recursions of GAE or discounted returns over (T, N) arrays."""
    if use_gae and values is None:
        raise ValueError("use_gae=True needs a critic (vf_preds); set use_critic=True")
    carry = np.zeros(rewards.shape[1])
    out = np.zeros_like(rewards)
    continues = ~piece_end
    for t in range(len(rewards) - 1, -1, -1):
        if use_gae:
            delta = rewards[t] + gamma * next_values[t] - values[t]
            carry = delta + gamma * lambda_ * continues[t] * carry
        else:
            carry = rewards[t] + gamma * np.where(continues[t], carry, next_values[t])
        out[t] = carry
    if use_gae:
        return out, out + values
    return (out - values if values is not None else out), out


# ---- n-step returns (per trajectory piece, on the rollout workers) ------------------------------

BOOTSTRAP_DISCOUNT = "bootstrap_discount"
"""Column added by n-step postprocessing: gamma^m for the m rewards summed into `rewards`."""


def n_step_returns(batch: SampleBatch, n_step: int, gamma: float) -> SampleBatch:
    """Rewrites one trajectory piece into n-step transitions.

    Row t gets `rewards = sum_{k<m} gamma^k r_{t+k}` with m = min(n_step, rows left in the
    piece), the `new_obs`, `terminateds` and `truncateds` of row t+m-1, and
    `bootstrap_discount = gamma^m`. Only a piece's last row may end its episode; the loss
    bootstraps `bootstrap_discount * Q(new_obs)` unless that row terminated.

    Raises:
        ValueError: n_step < 1, or an episode end before the piece's last row.

    Examples:
        >>> piece = SampleBatch(rewards=np.array([1.0, 2.0, 3.0]), new_obs=np.arange(3.0),
        ...                     terminateds=np.array([False, False, True]),
        ...                     truncateds=np.zeros(3, bool))
        >>> out = n_step_returns(piece, n_step=2, gamma=0.5)
        >>> out["rewards"].tolist(), out["new_obs"].tolist(), out["bootstrap_discount"].tolist()
        ([2.0, 3.5, 3.0], [1.0, 2.0, 2.0], [0.25, 0.25, 0.5])
    """
    if n_step < 1:
        raise ValueError(f"n_step must be at least 1, got {n_step=}")
    terminateds = np.asarray(batch["terminateds"], dtype=bool)
    truncateds = np.asarray(batch["truncateds"], dtype=bool)
    length = len(terminateds)
    if length > 1 and (terminateds[:-1].any() or truncateds[:-1].any()):
        raise ValueError("n_step_returns needs one trajectory piece (an episode may end only "
                         "at its last row); split the fragment with trajectory_bounds first")
    rewards = np.asarray(batch["rewards"], dtype=np.float64)
    rows = np.arange(length)
    steps = np.minimum(n_step, length - rows)
    returns = np.zeros(length, dtype=np.float64)
    for k in range(min(n_step, length)):
        reached = rows + k < length
        returns[reached] += gamma**k * rewards[rows[reached] + k]
    last = rows + steps - 1
    columns = dict(batch)
    columns["rewards"] = returns.astype(np.float32)
    columns["new_obs"] = np.asarray(batch["new_obs"])[last]
    columns["terminateds"] = terminateds[last]
    columns["truncateds"] = truncateds[last]
    columns[BOOTSTRAP_DISCOUNT] = (float(gamma) ** steps).astype(np.float32)
    return SampleBatch(columns)


def n_step_postprocess(policy: Any, batch: SampleBatch) -> SampleBatch:
    """The DQN policy's postprocessing: `n_step_returns` with the policy's config."""
    return n_step_returns(batch, policy.config.n_step, policy.config.gamma)


def training_rewards(rewards: np.ndarray, config: Any) -> np.ndarray:
    """The rewards a rollout stores for training: scaled by `config.reward_scale`, then
    clipped to +-`config.clip_rewards` (the episode returns workers report stay unscaled).

    Examples:
        >>> class Config: reward_scale, clip_rewards = 0.5, 1.0
        >>> training_rewards(np.array([4.0, -1.0, 0.5]), Config()).tolist()
        [1.0, -0.5, 0.25]
    """
    scale = float(getattr(config, "reward_scale", 1.0))
    clip = getattr(config, "clip_rewards", None)
    rewards = np.asarray(rewards, dtype=np.float32)
    if scale != 1.0:
        rewards = rewards * np.float32(scale)
    if clip is not None:
        rewards = np.clip(rewards, -clip, clip).astype(np.float32)
    return rewards

