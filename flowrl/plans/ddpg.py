"""DDPG: deep deterministic policy gradient (Lillicrap et al., 2016), and the losses TD3
shares with it.

Paper: https://arxiv.org/abs/1509.02971

Implementation details:
1. DQN's plan shape (`flowrl.plans.off_policy.replay_train_flow`): a store flow and a
   replay -> (priorities) -> train -> target-update flow under `Concurrently(round_robin)`,
   with `training_intensity` fixing rows trained per env step.
2. A deterministic actor mu(s) in [-1, 1]^A (tanh output; `normalize_actions` rescales it to
   the Box's bounds) and a critic Q(s, a) on the unit-space action.
3. Critic target y = r + gamma^n (1 - terminated) Q'(s', mu'(s')) from the target actor and
   critic (bootstrapping through truncation, never through termination); critic loss
   E[w 0.5 (Q - y)^2], or Huber with `use_huber`; w = prioritized replay's importance
   weights (`prioritized_replay`, off by default). Actor loss -E[Q(s, mu(s))]. `l2_reg`
   adds l2_reg * sum(kernel^2) of each network to its own loss (biases excluded).
4. Exploration: `random_timesteps` uniformly random actions, then the actor's action plus
   Ornstein-Uhlenbeck noise (theta `ou_theta`, sigma `ou_sigma`, times
   `exploration_noise_scale`, in unit space), clipped to [-1, 1].
5. Two optimizer groups, each its own Adam: actor (`actor_lr`, stepping every
   `policy_delay`-th update) and critics (`critic_lr`). The target networks follow the online
   ones by Polyak averaging: tau every `target_network_update_freq` updates.
6. TD3 (`flowrl.plans.td3`) is this loss with `twin_q` (min of two target critics),
   `smooth_target_policy` (clipped Gaussian noise on mu'(s')) and `policy_delay` 2.

Metrics reported per train step, under `info/learner/default_policy/`: `actor_loss`,
`critic_loss`, `mean_q`, `max_q`, `min_q`, `mean_td_error`, each group's `*_grad_gnorm`, plus
the shared sampler and replay counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from flowrl.data import SampleBatch
from flowrl.iter import LocalIterator
from flowrl.ops import ParallelRollouts, TrainResult
from flowrl.plans.actor_critic_replay import (
    NEXT_ACTION_NOISE,
    ActorCriticReplayConfig,
    check_box_actions,
    kernel_l2,
    mean_of,
    standard_normal,
    to_unit,
)
from flowrl.plans.off_policy import replay_steps_per_output, replay_train_flow
from flowrl.policy import PolicySpec, deterministic_actor_critic_model
from flowrl.policy.actor_exploration import ActorNoise, NoiseType
from flowrl.policy.optimizer_groups import OptimizerGroup
from flowrl.policy.postprocessing import BOOTSTRAP_DISCOUNT, n_step_postprocess
from flowrl.replay import WEIGHTS
from flowrl.workers import WorkerSet


@dataclass(frozen=True, kw_only=True)
class DDPGConfig(ActorCriticReplayConfig):
    """DDPG's hyperparameters (on top of the shared actor-critic replay settings)."""

    actor_lr: float = 1e-3
    """Adam learning rate of the actor."""
    critic_lr: float = 1e-3
    """Adam learning rate of the critic(s)."""
    tau: float = 0.002
    """Each target update moves the target networks this far toward the online ones."""
    twin_q: bool = False
    """Two critics; targets take the smaller value (TD3's clipped double Q)."""
    policy_delay: int = 1
    """The actor steps on every policy_delay-th update (the critics on every one)."""
    smooth_target_policy: bool = False
    """Add clipped Gaussian noise to the target actor's action (TD3's target smoothing)."""
    target_noise: float = 0.2
    """Std of the target-smoothing noise, in unit action space."""
    target_noise_clip: float = 0.5
    """The target-smoothing noise is clipped to +-this (unit action space)."""
    exploration_noise_type: NoiseType = "ou"
    """Exploration noise added to the actor's action: "ou" (Ornstein-Uhlenbeck) or "gaussian"."""
    exploration_noise_scale: float = 0.1
    """Exploration noise times this, in unit action space ([-1, 1])."""
    ou_theta: float = 0.15
    """Ornstein-Uhlenbeck mean reversion per step."""
    ou_sigma: float = 0.2
    """Ornstein-Uhlenbeck noise std per step (before exploration_noise_scale)."""
    use_huber: bool = False
    """Huber loss (delta 1) on the critic's TD error instead of 0.5 * error^2."""
    l2_reg: float = 1e-6
    """L2 penalty on each network's kernels (not biases), added to its own loss."""

    def _validate(self) -> None:
        super()._validate()
        if self.policy_delay < 1:
            raise ValueError(f"policy_delay must be >= 1 (1: the actor steps on every update), "
                             f"got policy_delay={self.policy_delay}.")
        for name in ("target_noise", "target_noise_clip", "exploration_noise_scale", "ou_sigma",
                     "l2_reg"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {name}={getattr(self, name)}.")
        if not 0.0 <= self.ou_theta <= 1.0:
            raise ValueError(f"ou_theta is a mean-reversion rate in [0, 1], got "
                             f"ou_theta={self.ou_theta}.")


def deterministic_actor_noise(config: DDPGConfig, action_space: gym.Space, *,
                              worker_index: int = 0, num_workers: int = 0,
                              seed: int | None = None) -> ActorNoise:
    """DDPG's and TD3's exploration: `random_timesteps` uniform actions, then the actor's
    action plus OU or Gaussian noise."""
    check_box_actions(action_space, type(config).__name__.removesuffix("Config"))
    return ActorNoise(action_space, noise_type=config.exploration_noise_type,
                      scale=config.exploration_noise_scale, ou_theta=config.ou_theta,
                      ou_sigma=config.ou_sigma, random_timesteps=config.random_timesteps,
                      normalize_actions=config.normalize_actions,
                      clip_actions=config.clip_actions, seed=seed)


# ---- Torch ----------------------------------------------------------------------------------


def _ddpg_terms_torch(policy: Any, batch: dict, online: bool = False) -> dict[str, Any]:
    """The critics' values on the batch and their target (Torch); `online` bootstraps from
    the online networks (a rollout worker's initial priorities: its targets are never synced)."""
    import torch

    config, model = policy.config, policy.model
    target = model if online else policy.target_model
    new_obs = batch["new_obs"]
    with torch.no_grad():
        next_actions = target.actor(new_obs)
        if config.smooth_target_policy:
            noise = standard_normal(policy, batch, NEXT_ACTION_NOISE, next_actions)
            noise = (noise * config.target_noise).clamp(-config.target_noise_clip,
                                                        config.target_noise_clip)
            next_actions = (next_actions + noise).clamp(-1.0, 1.0)
        next_qs = target.critics(new_obs, next_actions)
        next_q = torch.stack(next_qs).min(dim=0).values if config.twin_q else next_qs[0]
        discount = batch.get(BOOTSTRAP_DISCOUNT)
        if discount is None:
            discount = torch.full_like(next_q, config.gamma)
        alive = 1.0 - batch["terminateds"].float()
        q_target = batch["rewards"] + discount * alive * next_q
    return {"q": model.critics(batch["obs"], to_unit(policy, batch["actions"])),
            "q_target": q_target}


def ddpg_loss_torch(policy: Any, batch: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """DDPG's (and TD3's) actor and critic losses and stats, in PyTorch."""
    import torch

    config, model = policy.config, policy.model
    terms = _ddpg_terms_torch(policy, batch)
    td_errors = [q - terms["q_target"] for q in terms["q"]]
    if config.use_huber:
        per_row = [torch.nn.functional.huber_loss(q, terms["q_target"], reduction="none",
                                                  delta=1.0) for q in terms["q"]]
    else:
        per_row = [0.5 * error.pow(2) for error in td_errors]
    weights = batch.get(WEIGHTS)
    critic_loss = sum((r * weights).mean() if weights is not None else r.mean() for r in per_row)
    obs = batch["obs"]
    actor_loss = -model.critics(obs, model.actor(obs))[0].mean()
    if config.l2_reg:
        critic_loss = critic_loss + config.l2_reg * sum(
            k.pow(2).sum() for k in kernel_l2(policy, ("q1/", "q2/")))
        actor_loss = actor_loss + config.l2_reg * sum(
            k.pow(2).sum() for k in kernel_l2(policy, ("pi/",)))
    q = terms["q"][0]
    stats = {"mean_q": q.mean(), "max_q": q.max(), "min_q": q.min(),
             "mean_td_error": mean_of([e.abs() for e in td_errors]).mean()}
    return {"actor": actor_loss, "critic": critic_loss}, stats


def ddpg_td_errors_torch(policy: Any, batch: dict) -> dict:
    """Per-row |TD errors| for priorities (mean over the critics), in PyTorch."""
    terms = _ddpg_terms_torch(policy, batch)
    return {"td_errors": mean_of([(q - terms["q_target"]).abs() for q in terms["q"]])}


def ddpg_online_td_errors_torch(policy: Any, batch: dict) -> dict:
    """As `ddpg_td_errors_torch`, bootstrapping from the online networks."""
    terms = _ddpg_terms_torch(policy, batch, online=True)
    return {"td_errors": mean_of([(q - terms["q_target"]).abs() for q in terms["q"]])}


# ---- TensorFlow -------------------------------------------------------------------------------


def _ddpg_terms_tf(policy: Any, batch: dict, online: bool = False) -> dict[str, Any]:
    """As `_ddpg_terms_torch`, in TensorFlow."""
    import tensorflow as tf

    config, model = policy.config, policy.model
    target = model if online else policy.target_model
    new_obs = batch["new_obs"]
    next_actions = target.actor(new_obs)
    if config.smooth_target_policy:
        noise = standard_normal(policy, batch, NEXT_ACTION_NOISE, next_actions)
        noise = tf.clip_by_value(noise * config.target_noise, -config.target_noise_clip,
                                 config.target_noise_clip)
        next_actions = tf.clip_by_value(next_actions + noise, -1.0, 1.0)
    next_qs = target.critics(new_obs, next_actions)
    next_q = tf.reduce_min(tf.stack(next_qs), axis=0) if config.twin_q else next_qs[0]
    discount = batch.get(BOOTSTRAP_DISCOUNT)
    if discount is None:
        discount = tf.fill(tf.shape(next_q), tf.constant(config.gamma, tf.float32))
    alive = 1.0 - tf.cast(batch["terminateds"], tf.float32)
    q_target = tf.stop_gradient(batch["rewards"] + discount * alive * next_q)
    actions = to_unit(policy, tf.cast(batch["actions"], tf.float32))
    return {"q": model.critics(batch["obs"], actions), "q_target": q_target}


def ddpg_loss_tf(policy: Any, batch: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """DDPG's (and TD3's) losses in TensorFlow, the same terms as `ddpg_loss_torch`."""
    import tensorflow as tf

    config, model = policy.config, policy.model
    terms = _ddpg_terms_tf(policy, batch)
    td_errors = [q - terms["q_target"] for q in terms["q"]]
    if config.use_huber:
        per_row = []
        for error in td_errors:
            quadratic = tf.minimum(tf.abs(error), 1.0)
            per_row.append(0.5 * tf.square(quadratic) + (tf.abs(error) - quadratic))
    else:
        per_row = [0.5 * tf.square(error) for error in td_errors]
    weights = batch.get(WEIGHTS)
    critic_loss = tf.add_n([tf.reduce_mean(r * weights) if weights is not None
                            else tf.reduce_mean(r) for r in per_row])
    obs = batch["obs"]
    actor_loss = -tf.reduce_mean(model.critics(obs, model.actor(obs))[0])
    if config.l2_reg:
        critic_loss += config.l2_reg * tf.add_n(
            [tf.reduce_sum(tf.square(k)) for k in kernel_l2(policy, ("q1/", "q2/"))])
        actor_loss += config.l2_reg * tf.add_n(
            [tf.reduce_sum(tf.square(k)) for k in kernel_l2(policy, ("pi/",))])
    q = terms["q"][0]
    stats = {"mean_q": tf.reduce_mean(q), "max_q": tf.reduce_max(q), "min_q": tf.reduce_min(q),
             "mean_td_error": tf.reduce_mean(mean_of([tf.abs(e) for e in td_errors]))}
    return {"actor": actor_loss, "critic": critic_loss}, stats


def ddpg_td_errors_tf(policy: Any, batch: dict) -> dict:
    """Per-row |TD errors| for priorities (mean over the critics), in TensorFlow."""
    import tensorflow as tf

    terms = _ddpg_terms_tf(policy, batch)
    return {"td_errors": mean_of([tf.abs(q - terms["q_target"]) for q in terms["q"]])}


def ddpg_online_td_errors_tf(policy: Any, batch: dict) -> dict:
    """As `ddpg_td_errors_tf`, bootstrapping from the online networks."""
    import tensorflow as tf

    terms = _ddpg_terms_tf(policy, batch, online=True)
    return {"td_errors": mean_of([tf.abs(q - terms["q_target"]) for q in terms["q"]])}


_TD_ERRORS = {"torch": (ddpg_td_errors_torch, ddpg_online_td_errors_torch),
              "tf": (ddpg_td_errors_tf, ddpg_online_td_errors_tf)}


def compute_td_errors(policy: Any, batch: SampleBatch) -> np.ndarray:
    """Per-row |TD errors| of `batch` under a DDPG or TD3 `policy` (replay priorities)."""
    return policy.run_on_batch(_TD_ERRORS[policy.framework][0], batch)["td_errors"]


def compute_online_td_errors(policy: Any, batch: SampleBatch) -> np.ndarray:
    """Per-row |TD errors| bootstrapping from the online networks (worker-side priorities)."""
    return policy.run_on_batch(_TD_ERRORS[policy.framework][1], batch)["td_errors"]


# ---- the policy and the plan ------------------------------------------------------------------

ACTOR_CRITIC_GROUPS = (
    OptimizerGroup("actor", weights=("pi/",), lr="actor_lr", lr_schedule=None,
                   update_period="policy_delay"),
    OptimizerGroup("critic", weights=("q1/", "q2/"), lr="critic_lr", lr_schedule=None),
)
"""The actor (stepping every `policy_delay`-th update) and the critics, each with its Adam."""

DDPG_POLICY = PolicySpec(
    name="ddpg", torch_loss=ddpg_loss_torch, tf_loss=ddpg_loss_tf,
    model=deterministic_actor_critic_model, action_selection=deterministic_actor_noise,
    postprocess=n_step_postprocess, target_network=True, config_class=DDPGConfig,
    optimizer_groups=ACTOR_CRITIC_GROUPS)
"""DDPG's policy: a deterministic actor, a critic, OU exploration, target networks."""


def ddpg_flow(experiences: LocalIterator[Any], workers: WorkerSet, config: DDPGConfig,
              policy_id: str | None = None) -> LocalIterator[TrainResult]:
    """DDPG's (and TD3's) flows for one policy: store its experiences, replay-train them
    (see `flowrl.plans.off_policy.replay_train_flow`)."""
    return replay_train_flow(experiences, workers, config, policy_id,
                             compute_td_errors=compute_td_errors)


ddpg_steps_per_output = replay_steps_per_output


def ddpg_plan(workers: WorkerSet, config: DDPGConfig) -> LocalIterator[TrainResult]:
    """DDPG as a dataflow: a store flow and a replay-train flow, in a fixed rotation."""
    return ddpg_flow(ParallelRollouts(workers, mode="bulk_sync"), workers, config)
