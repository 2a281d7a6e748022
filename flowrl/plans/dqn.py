"""DQN: deep Q-learning from a replay buffer (Mnih et al., 2015), with the Rainbow-era fixes
that matter most on small problems.

Papers: https://www.nature.com/articles/nature14236 (DQN), https://arxiv.org/abs/1509.06461
(double Q), https://arxiv.org/abs/1511.06581 (dueling), https://arxiv.org/abs/1511.05952
(prioritized replay).

Implementation details:
1. Two flows joined by `Concurrently(mode="round_robin")`: a store flow (sample, store in the
   replay buffer, sync weights to remote workers) and a train flow (replay, update priorities,
   train, update the target network), the flow every replay-based algorithm shares
   (`flowrl.plans.off_policy`). `training_intensity` (samples trained per env step
   sampled) sets the round-robin weights; None trains one batch per sampling round.
2. n-step returns are computed per trajectory piece on the rollout workers: row t gets
   `sum_k gamma^k r_{t+k}` over up to `n_step` rows of its piece, the observation it bootstraps
   from, and `bootstrap_discount = gamma^m` for the m rows summed. A terminated piece does not
   bootstrap; a truncated piece (or one cut by the fragment's end) does.
3. Double Q (`double_q`): the online network picks the next action, the target network scores
   it. Dueling heads (`dueling`): Q = V + A - mean(A).
4. Huber loss (delta 1) on the TD error, weighted by the prioritized sample's importance
   weights; gradients clipped to global norm `grad_clip`.
5. Prioritized replay (`prioritized_replay`): new rows enter with the maximum priority; after
   a batch is replayed its rows get |TD error| (computed with the weights the batch is trained
   with, as in the loss step) plus `prioritized_replay_eps`.
6. Epsilon-greedy exploration: epsilon falls linearly from `exploration_initial_eps` to
   `exploration_final_eps` over `exploration_timesteps` env steps.
7. The target network is copied from the online one every `target_network_update_freq` env
   steps sampled (`UpdateTargetNetwork`, its own operator).
8. Multi-agent: in shared-policy mode all agents' rows go to one buffer. With policies of
   their own (`policies`), every trained policy has its own replay buffer built from its own
   config (a `MultiAgentReplayBuffer`: `buffer_size`, prioritized replay, `train_batch_size`,
   `learning_starts`), its own target-network updates and its own epsilon schedule; the
   store and train flows are the same operators, carrying `MultiAgentBatch`es.

Metrics reported: `info/learner/default_policy/{total_loss, mean_q, min_q, max_q,
mean_td_error, grad_gnorm, cur_lr}`, plus the shared `sampler/env_steps`,
`learner/steps_trained`, `learner/target_updates`, `replay/rows_added`,
`replay/priority_updates`, `learner/weight_broadcasts`, `timers/learn`, `timers/sample`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from flowrl.config import ModelConfig
from flowrl.data import SampleBatch
from flowrl.iter import LocalIterator
from flowrl.ops import ParallelRollouts, TrainResult
from flowrl.plans.off_policy import (  # noqa: F401 - re-exported: Ape-X and users import them here
    ReplayConfig,
    make_replay_buffer,
    replay_policy_configs,
    replay_sizes,
    replay_steps_per_output,
    replay_train_flow,
    round_robin_weights,
    uses_prioritized_replay,
    with_target_updates,
)
from flowrl.policy import EpsilonGreedy, PolicySpec, q_model
from flowrl.policy.postprocessing import BOOTSTRAP_DISCOUNT, n_step_postprocess
from flowrl.replay import WEIGHTS
from flowrl.workers import WorkerSet


@dataclass(frozen=True, kw_only=True)
class DQNConfig(ReplayConfig):
    """DQN's hyperparameters (on top of the shared replay, rollout and resource settings)."""

    lr: float = 1e-3
    """Adam learning rate; typical 1e-4 to 1e-3."""
    grad_clip: float | None = 10.0
    """Global-norm gradient clipping; None disables it."""
    model: ModelConfig = dataclasses.field(
        default_factory=lambda: ModelConfig(fcnet_hiddens=(256, 256), fcnet_activation="relu"))
    """The Q-network's trunk (dueling heads sit on top of it)."""
    double_q: bool = True
    """Double Q-learning: the online network picks the bootstrap action."""
    dueling: bool = True
    """Dueling heads: Q = V + A - mean(A)."""
    exploration_initial_eps: float = 1.0
    """Epsilon (probability of a random action) at the start of training."""
    exploration_final_eps: float = 0.02
    """Epsilon after `exploration_timesteps` env steps, kept from then on."""
    exploration_timesteps: int = 10_000
    """Env steps over which epsilon falls linearly to its final value."""

    def _validate(self) -> None:
        super()._validate()
        if self.exploration_timesteps < 0:
            raise ValueError(
                f"exploration_timesteps must be >= 0, got {self.exploration_timesteps}.")
        for name in ("exploration_initial_eps", "exploration_final_eps"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got "
                                 f"{name}={getattr(self, name)}.")


# ---- losses and TD errors ---------------------------------------------------------------------


def _td_target_torch(policy: Any, batch: dict, bootstrap_model: Any) -> Any:
    import torch

    with torch.no_grad():
        next_q = bootstrap_model(batch["new_obs"])
        if policy.config.double_q:
            best = policy.model(batch["new_obs"]).argmax(dim=1, keepdim=True)
            next_value = next_q.gather(1, best).squeeze(1)
        else:
            next_value = next_q.max(dim=1).values
        discount = batch.get(BOOTSTRAP_DISCOUNT)
        if discount is None:
            discount = torch.full_like(next_value, policy.config.gamma)
        alive = 1.0 - batch["terminateds"].float()
        return batch["rewards"] + discount * alive * next_value


def _chosen_q_torch(policy: Any, batch: dict) -> Any:
    q_values = policy.model(batch["obs"])
    return q_values.gather(1, batch["actions"].long().unsqueeze(1)).squeeze(1)


def dqn_loss_torch(policy: Any, batch: dict) -> tuple[Any, dict]:
    """DQN's loss in PyTorch: importance-weighted Huber loss of the (double, n-step) TD error."""
    import torch

    chosen = _chosen_q_torch(policy, batch)
    target = _td_target_torch(policy, batch, policy.target_model)
    td_error = chosen - target
    huber = torch.nn.functional.huber_loss(chosen, target, reduction="none", delta=1.0)
    weights = batch.get(WEIGHTS)
    loss = (huber * weights).mean() if weights is not None else huber.mean()
    return loss, {"mean_q": chosen.mean(), "min_q": chosen.min(), "max_q": chosen.max(),
                  "mean_td_error": td_error.abs().mean()}


def dqn_td_errors_torch(policy: Any, batch: dict) -> dict:
    """Per-row TD errors against the target network (for replay priorities), in PyTorch."""
    return {"td_errors": _chosen_q_torch(policy, batch)
            - _td_target_torch(policy, batch, policy.target_model)}


def dqn_online_td_errors_torch(policy: Any, batch: dict) -> dict:
    """Per-row TD errors bootstrapping from the online network (a rollout worker's initial
    priorities: its target network is never synced), in PyTorch."""
    return {"td_errors": _chosen_q_torch(policy, batch)
            - _td_target_torch(policy, batch, policy.model)}


def _td_target_tf(policy: Any, batch: dict, bootstrap_model: Any) -> Any:
    import tensorflow as tf

    next_q = bootstrap_model(batch["new_obs"])
    if policy.config.double_q:
        best = tf.argmax(policy.model(batch["new_obs"]), axis=1, output_type=tf.int32)
        next_value = tf.gather(next_q, best, batch_dims=1)
    else:
        next_value = tf.reduce_max(next_q, axis=1)
    discount = batch.get(BOOTSTRAP_DISCOUNT)
    if discount is None:
        discount = tf.fill(tf.shape(next_value), tf.constant(policy.config.gamma, tf.float32))
    alive = 1.0 - tf.cast(batch["terminateds"], tf.float32)
    return tf.stop_gradient(batch["rewards"] + discount * alive * next_value)


def _chosen_q_tf(policy: Any, batch: dict) -> Any:
    import tensorflow as tf

    q_values = policy.model(batch["obs"])
    return tf.gather(q_values, tf.cast(batch["actions"], tf.int32), batch_dims=1)


def dqn_loss_tf(policy: Any, batch: dict) -> tuple[Any, dict]:
    """DQN's loss in TensorFlow, the same terms as `dqn_loss_torch`."""
    import tensorflow as tf

    chosen = _chosen_q_tf(policy, batch)
    target = _td_target_tf(policy, batch, policy.target_model)
    td_error = chosen - target
    abs_error = tf.abs(td_error)
    quadratic = tf.minimum(abs_error, 1.0)
    huber = 0.5 * tf.square(quadratic) + (abs_error - quadratic)
    weights = batch.get(WEIGHTS)
    loss = tf.reduce_mean(huber * weights) if weights is not None else tf.reduce_mean(huber)
    return loss, {"mean_q": tf.reduce_mean(chosen), "min_q": tf.reduce_min(chosen),
                  "max_q": tf.reduce_max(chosen), "mean_td_error": tf.reduce_mean(abs_error)}


def dqn_td_errors_tf(policy: Any, batch: dict) -> dict:
    """Per-row TD errors against the target network, in TensorFlow."""
    return {"td_errors": _chosen_q_tf(policy, batch)
            - _td_target_tf(policy, batch, policy.target_model)}


def dqn_online_td_errors_tf(policy: Any, batch: dict) -> dict:
    """Per-row TD errors bootstrapping from the online network, in TensorFlow."""
    return {"td_errors": _chosen_q_tf(policy, batch)
            - _td_target_tf(policy, batch, policy.model)}


_TD_ERRORS = {"torch": (dqn_td_errors_torch, dqn_online_td_errors_torch),
              "tf": (dqn_td_errors_tf, dqn_online_td_errors_tf)}


def compute_td_errors(policy: Any, batch: SampleBatch) -> np.ndarray:
    """Per-row TD errors of `batch` under `policy` (target-network bootstrap), as numpy."""
    return policy.run_on_batch(_TD_ERRORS[policy.framework][0], batch)["td_errors"]


def compute_online_td_errors(policy: Any, batch: SampleBatch) -> np.ndarray:
    """Per-row TD errors bootstrapping from the online network, as numpy."""
    return policy.run_on_batch(_TD_ERRORS[policy.framework][1], batch)["td_errors"]


# ---- the policy ---------------------------------------------------------------------------


def dqn_epsilon_greedy(config: DQNConfig, action_space: gym.Space, *, worker_index: int = 0,
                       num_workers: int = 0, seed: int | None = None) -> EpsilonGreedy:
    """Epsilon-greedy with DQN's linear schedule (follows the global env-step count)."""
    return EpsilonGreedy(initial_epsilon=config.exploration_initial_eps,
                         final_epsilon=config.exploration_final_eps,
                         decay_timesteps=config.exploration_timesteps, seed=seed)


DQN_POLICY = PolicySpec(name="dqn", torch_loss=dqn_loss_torch, tf_loss=dqn_loss_tf,
                        model=q_model, action_selection=dqn_epsilon_greedy,
                        postprocess=n_step_postprocess, target_network=True,
                        config_class=DQNConfig)
"""DQN's policy: a (dueling) Q-network, a target network, epsilon-greedy, n-step returns."""


# ---- the plan -----------------------------------------------------------------------------


def dqn_flow(experiences: LocalIterator[Any], workers: WorkerSet, config: DQNConfig,
             policy_id: str | None = None) -> LocalIterator[TrainResult]:
    """DQN's flows for one policy: store its experiences, and replay-train them, in a rotation
    (`flowrl.plans.off_policy.replay_train_flow` with DQN's TD errors for priorities).

    Args:
        experiences: the policy's experiences.
        workers: the rollout workers (the learner's policy is the local worker's).
        config: the policy's typed config.
        policy_id: the policy this flow trains, with a replay buffer of its own; None trains
            the workers' own trained policies (the default policy of a single-agent run, or
            every policy of a DQN multi-agent run, each with its own buffer in a
            `MultiAgentReplayBuffer`).
    """
    return replay_train_flow(experiences, workers, config, policy_id,
                             compute_td_errors=compute_td_errors)


dqn_steps_per_output = replay_steps_per_output
"""Env steps `dqn_flow` samples per training result it yields (balances composed flows)."""


def dqn_plan(workers: WorkerSet, config: DQNConfig) -> LocalIterator[TrainResult]:
    """DQN as a dataflow: a store flow and a replay-train flow, in a fixed rotation.

    With policies of their own, each trained policy has its own buffer (a
    `MultiAgentReplayBuffer`) and target updates; the batches are then `MultiAgentBatch`es.
    """
    return dqn_flow(ParallelRollouts(workers, mode="bulk_sync"), workers, config)
