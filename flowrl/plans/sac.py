"""SAC: soft actor-critic (Haarnoja et al., 2018), for continuous and discrete actions.

Papers: https://arxiv.org/abs/1801.01290, https://arxiv.org/abs/1812.05905 (automatic
temperature), https://arxiv.org/abs/1910.07207 (discrete actions).

Implementation details:
1. DQN's plan shape (`flowrl.plans.off_policy.replay_train_flow`): a store flow and a
   replay -> (priorities) -> train -> target-update flow under `Concurrently(round_robin)`;
   `training_intensity` (rows trained per env step, default 256: one update per step) fixes
   the replay ratio whatever the machine's speed.
2. Box actions: the actor outputs the mean and log-std (clamped to [-20, 2]) of a Gaussian
   whose samples u are squashed by tanh into [-1, 1]; log pi(a) = log N(u) - sum log(1 -
   tanh(u)^2), the correction computed as 2 (log 2 - u - softplus(-2u)) from u itself, so
   nothing is evaluated at the bounds and no atanh of a stored action is ever taken. Actions
   are sampled with the reparameterization trick.
3. Twin critics Q1, Q2; the target is r + gamma^n (1 - terminated) (min(Q1', Q2')(s', a') -
   alpha log pi(a'|s')) with a' ~ pi(s') freshly sampled and Q' the target critics. Critic
   loss 0.5 E[w (Q_i - y)^2] summed over the critics (w: importance weights of prioritized
   replay, else 1); actor loss E[alpha log pi(a|s) - min Q(s, a)], a ~ pi(s).
4. Discrete actions (Christodoulou, 2019): the actor outputs logits and each critic one value
   per action; expectations over the actions replace sampling: the target's value is
   sum_a pi(a|s') (min Q'(s', a) - alpha log pi(a|s')) and the actor loss
   sum_a pi(a|s) (alpha log pi(a|s) - min Q(s, a)).
5. The temperature alpha = exp(log_alpha) is learned so that the policy's entropy tracks
   `target_entropy`: loss -log_alpha (log pi + H_target) (discrete: log_alpha (H(pi) -
   H_target)). "auto" is -dim(A) for a Box and `target_entropy_scale * log|A|` for Discrete.
   The scale matters for few actions: log|A| is the largest entropy there is, so a scale near
   1 (0.98, RLlib's choice) asks for an almost uniform policy and alpha grows without bound on
   CartPole (|A| = 2); 0.6 by default here.
6. Three optimizer groups, each its own Adam: actor (`actor_lr`), critics (`critic_lr`),
   temperature (`entropy_lr`); every update steps all three from one forward pass.
7. Target critics follow the online ones by Polyak averaging: tau every
   `target_network_update_freq` updates. Exploration: `random_timesteps` uniform actions
   first, then samples of the actor; greedy = tanh(mean) / argmax.

Metrics reported per train step, under `info/learner/default_policy/`: `actor_loss`,
`critic_loss`, `alpha_loss`, `alpha`, `entropy`, `target_entropy`, `mean_q`, `max_q`, `min_q`,
`mean_td_error`, each group's `*_grad_gnorm`, plus the shared sampler and replay counters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from flowrl.data import SampleBatch
from flowrl.iter import LocalIterator
from flowrl.ops import ParallelRollouts, TrainResult
from flowrl.plans.actor_critic_replay import (
    ACTION_NOISE,
    NEXT_ACTION_NOISE,
    ActorCriticReplayConfig,
    mean_of,
    standard_normal,
    to_unit,
)
from flowrl.plans.off_policy import replay_steps_per_output, replay_train_flow
from flowrl.policy import PolicySpec
from flowrl.policy.actor_exploration import LOG_STD_MAX, LOG_STD_MIN, SoftActorSampling
from flowrl.policy.models import SoftActorCriticSpec, build_soft_actor_critic_spec
from flowrl.policy.optimizer_groups import OptimizerGroup
from flowrl.policy.postprocessing import BOOTSTRAP_DISCOUNT, n_step_postprocess
from flowrl.replay import WEIGHTS
from flowrl.workers import WorkerSet


@dataclass(frozen=True, kw_only=True)
class SACConfig(ActorCriticReplayConfig):
    """SAC's hyperparameters (on top of the shared actor-critic replay settings)."""

    initial_alpha: float = 1.0
    """The entropy temperature alpha at the start of training."""
    target_entropy: float | Literal["auto"] = "auto"
    """Entropy the temperature steers toward; "auto": -dim(A), or a scale of log|A| (Discrete)."""
    target_entropy_scale: float = 0.6
    """Discrete actions with target_entropy="auto": the target is this times log|A| (max 1)."""
    entropy_lr: float = 3e-4
    """Adam learning rate of log(alpha)."""

    def _validate(self) -> None:
        super()._validate()
        if not self.initial_alpha > 0:
            raise ValueError(f"initial_alpha must be > 0 (it is learned as log(alpha)), got "
                             f"initial_alpha={self.initial_alpha}.")
        if not 0.0 < self.target_entropy_scale < 1.0:
            raise ValueError(
                f"target_entropy_scale must be in (0, 1): the target is that share of log|A|, "
                f"the largest entropy over |A| actions; got {self.target_entropy_scale}. "
                "Values near 1 ask for an almost uniform policy; 0.5-0.9 is usual.")
        if not self.entropy_lr > 0:
            raise ValueError(f"entropy_lr must be > 0, got entropy_lr={self.entropy_lr}.")


def target_entropy(config: SACConfig, action_space: gym.Space) -> float:
    """The entropy SAC's temperature steers toward, for `config` and `action_space`.

    Examples:
        >>> target_entropy(SACConfig(), gym.spaces.Box(-1, 1, (3,)))
        -3.0
        >>> round(target_entropy(SACConfig(target_entropy_scale=0.5), gym.spaces.Discrete(4)), 4)
        0.6931
    """
    if config.target_entropy != "auto":
        return float(config.target_entropy)
    if isinstance(action_space, gym.spaces.Discrete):
        return config.target_entropy_scale * math.log(int(action_space.n))
    return -float(np.prod(action_space.shape))


def sac_model(config: SACConfig, obs_shape: tuple[int, ...],
              action_space: gym.Space) -> SoftActorCriticSpec:
    """SAC's actor, twin critics and temperature."""
    return build_soft_actor_critic_spec(obs_shape, action_space, config.model,
                                        twin_q=config.twin_q, initial_alpha=config.initial_alpha)


def sac_action_sampling(config: SACConfig, action_space: gym.Space, *, worker_index: int = 0,
                        num_workers: int = 0, seed: int | None = None) -> SoftActorSampling:
    """SAC's exploration: `random_timesteps` uniform actions, then samples of the actor."""
    return SoftActorSampling(action_space, random_timesteps=config.random_timesteps,
                             normalize_actions=config.normalize_actions,
                             clip_actions=config.clip_actions, seed=seed)


def _log_alpha(model: Any) -> Any:
    """The temperature weight of a built-in model (`params`) or a custom one (`log_alpha`)."""
    params = getattr(model, "params", None)
    return params["log_alpha"] if params is not None else model.log_alpha


# ---- Torch ----------------------------------------------------------------------------------


def _squashed_sample_torch(dist_inputs: Any, noise: Any) -> tuple[Any, Any]:
    """A tanh-squashed Gaussian sample (reparameterized by `noise`) and its log-probability."""
    import torch
    import torch.nn.functional as F

    mean, log_std = dist_inputs.chunk(2, dim=-1)
    log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
    pre_squash = mean + log_std.exp() * noise
    gaussian_logp = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    squash = 2.0 * (math.log(2.0) - pre_squash - F.softplus(-2.0 * pre_squash))
    return torch.tanh(pre_squash), gaussian_logp - squash.sum(-1)


def _sac_terms_torch(policy: Any, batch: dict) -> dict[str, Any]:
    """Every quantity SAC's losses and TD errors need, for one batch (Torch)."""
    import torch

    model, target = policy.model, policy.target_model
    log_alpha = _log_alpha(model)
    alpha = log_alpha.exp().detach()
    obs, new_obs = batch["obs"], batch["new_obs"]
    discount = batch.get(BOOTSTRAP_DISCOUNT)
    if discount is None:
        discount = torch.full_like(batch["rewards"], policy.config.gamma)
    alive = 1.0 - batch["terminateds"].float()
    discrete = isinstance(policy.action_space, gym.spaces.Discrete)
    terms: dict[str, Any] = {"log_alpha": log_alpha, "alpha": alpha}
    if discrete:
        with torch.no_grad():
            next_logp = torch.log_softmax(model.actor(new_obs), dim=-1)
            next_q = torch.stack(target.critics(new_obs)).min(dim=0).values
            next_value = (next_logp.exp() * (next_q - alpha * next_logp)).sum(-1)
            q_target = batch["rewards"] + discount * alive * next_value
        all_q = model.critics(obs)
        chosen = batch["actions"].long().unsqueeze(1)
        terms["q"] = [q.gather(1, chosen).squeeze(1) for q in all_q]
        logp = torch.log_softmax(model.actor(obs), dim=-1)
        probs = logp.exp()
        min_q = torch.stack(all_q).min(dim=0).values.detach()
        terms["actor_loss"] = (probs * (alpha * logp - min_q)).sum(-1).mean()
        terms["entropy"] = -(probs * logp).sum(-1)
    else:
        actions = to_unit(policy, batch["actions"])
        with torch.no_grad():
            next_inputs = model.actor(new_obs)
            noise = standard_normal(policy, batch, NEXT_ACTION_NOISE, next_inputs[:, ::2])
            next_actions, next_logp = _squashed_sample_torch(next_inputs, noise)
            next_q = torch.stack(target.critics(new_obs, next_actions)).min(dim=0).values
            q_target = batch["rewards"] + discount * alive * (next_q - alpha * next_logp)
        terms["q"] = model.critics(obs, actions)
        inputs = model.actor(obs)
        noise = standard_normal(policy, batch, ACTION_NOISE, inputs[:, ::2])
        new_actions, logp = _squashed_sample_torch(inputs, noise)
        new_q = torch.stack(model.critics(obs, new_actions)).min(dim=0).values
        terms["actor_loss"] = (alpha * logp - new_q).mean()
        terms["entropy"] = -logp
    terms["q_target"] = q_target
    return terms


def sac_loss_torch(policy: Any, batch: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """SAC's three losses (actor, critic, alpha) and its stats, in PyTorch."""
    terms = _sac_terms_torch(policy, batch)
    weights = batch.get(WEIGHTS)
    td_errors = [q - terms["q_target"] for q in terms["q"]]
    squared = [0.5 * error.pow(2) for error in td_errors]
    critic_loss = sum((s * weights).mean() if weights is not None else s.mean()
                      for s in squared)
    goal = target_entropy(policy.config, policy.action_space)
    alpha_loss = (terms["log_alpha"] * (terms["entropy"].detach() - goal)).mean()
    q = terms["q"][0]
    losses = {"actor": terms["actor_loss"], "critic": critic_loss, "alpha": alpha_loss}
    stats = {"alpha": terms["alpha"].squeeze(), "entropy": terms["entropy"].mean(),
             "target_entropy": goal, "mean_q": q.mean(), "max_q": q.max(), "min_q": q.min(),
             "mean_td_error": mean_of([e.abs() for e in td_errors]).mean()}
    return losses, stats


def sac_td_errors_torch(policy: Any, batch: dict) -> dict:
    """Per-row TD errors for priorities: the mean of the critics' |TD error|, in PyTorch."""
    terms = _sac_terms_torch(policy, batch)
    return {"td_errors": mean_of([(q - terms["q_target"]).abs() for q in terms["q"]])}


# ---- TensorFlow -------------------------------------------------------------------------------


def _squashed_sample_tf(dist_inputs: Any, noise: Any) -> tuple[Any, Any]:
    """As `_squashed_sample_torch`, in TensorFlow."""
    import tensorflow as tf

    mean, log_std = tf.split(dist_inputs, 2, axis=-1)
    log_std = tf.clip_by_value(log_std, LOG_STD_MIN, LOG_STD_MAX)
    pre_squash = mean + tf.exp(log_std) * noise
    gaussian_logp = tf.reduce_sum(
        -0.5 * tf.square(noise) - log_std - 0.5 * math.log(2 * math.pi), axis=-1)
    squash = 2.0 * (math.log(2.0) - pre_squash - tf.nn.softplus(-2.0 * pre_squash))
    return tf.tanh(pre_squash), gaussian_logp - tf.reduce_sum(squash, axis=-1)


def _sac_terms_tf(policy: Any, batch: dict) -> dict[str, Any]:
    """As `_sac_terms_torch`, in TensorFlow (stop_gradient where Torch uses no_grad)."""
    import tensorflow as tf

    model, target = policy.model, policy.target_model
    log_alpha = _log_alpha(model)
    alpha = tf.stop_gradient(tf.exp(log_alpha))
    obs, new_obs = batch["obs"], batch["new_obs"]
    rewards = batch["rewards"]
    discount = batch.get(BOOTSTRAP_DISCOUNT)
    if discount is None:
        discount = tf.fill(tf.shape(rewards), tf.constant(policy.config.gamma, tf.float32))
    alive = 1.0 - tf.cast(batch["terminateds"], tf.float32)
    discrete = isinstance(policy.action_space, gym.spaces.Discrete)
    terms: dict[str, Any] = {"log_alpha": log_alpha, "alpha": alpha}
    if discrete:
        next_logp = tf.nn.log_softmax(model.actor(new_obs), axis=-1)
        next_q = tf.reduce_min(tf.stack(target.critics(new_obs)), axis=0)
        next_value = tf.reduce_sum(tf.exp(next_logp) * (next_q - alpha * next_logp), axis=-1)
        q_target = tf.stop_gradient(rewards + discount * alive * next_value)
        all_q = model.critics(obs)
        chosen = tf.cast(batch["actions"], tf.int32)
        terms["q"] = [tf.gather(q, chosen, batch_dims=1) for q in all_q]
        logp = tf.nn.log_softmax(model.actor(obs), axis=-1)
        probs = tf.exp(logp)
        min_q = tf.stop_gradient(tf.reduce_min(tf.stack(all_q), axis=0))
        terms["actor_loss"] = tf.reduce_mean(
            tf.reduce_sum(probs * (alpha * logp - min_q), axis=-1))
        terms["entropy"] = -tf.reduce_sum(probs * logp, axis=-1)
    else:
        actions = to_unit(policy, tf.cast(batch["actions"], tf.float32))
        next_inputs = model.actor(new_obs)
        noise = standard_normal(policy, batch, NEXT_ACTION_NOISE, next_inputs[:, ::2])
        next_actions, next_logp = _squashed_sample_tf(next_inputs, noise)
        next_q = tf.reduce_min(tf.stack(target.critics(new_obs, next_actions)), axis=0)
        q_target = tf.stop_gradient(rewards + discount * alive * (next_q - alpha * next_logp))
        terms["q"] = model.critics(obs, actions)
        inputs = model.actor(obs)
        noise = standard_normal(policy, batch, ACTION_NOISE, inputs[:, ::2])
        new_actions, logp = _squashed_sample_tf(inputs, noise)
        new_q = tf.reduce_min(tf.stack(model.critics(obs, new_actions)), axis=0)
        terms["actor_loss"] = tf.reduce_mean(alpha * logp - new_q)
        terms["entropy"] = -logp
    terms["q_target"] = q_target
    return terms


def sac_loss_tf(policy: Any, batch: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """SAC's three losses and its stats in TensorFlow, the same terms as `sac_loss_torch`."""
    import tensorflow as tf

    terms = _sac_terms_tf(policy, batch)
    weights = batch.get(WEIGHTS)
    td_errors = [q - terms["q_target"] for q in terms["q"]]
    squared = [0.5 * tf.square(error) for error in td_errors]
    critic_loss = tf.add_n([tf.reduce_mean(s * weights) if weights is not None
                            else tf.reduce_mean(s) for s in squared])
    goal = target_entropy(policy.config, policy.action_space)
    alpha_loss = tf.reduce_mean(terms["log_alpha"] * (tf.stop_gradient(terms["entropy"]) - goal))
    q = terms["q"][0]
    losses = {"actor": terms["actor_loss"], "critic": critic_loss, "alpha": alpha_loss}
    stats = {"alpha": tf.reduce_sum(terms["alpha"]), "entropy": tf.reduce_mean(terms["entropy"]),
             "target_entropy": tf.constant(goal, tf.float32), "mean_q": tf.reduce_mean(q),
             "max_q": tf.reduce_max(q), "min_q": tf.reduce_min(q),
             "mean_td_error": tf.reduce_mean(mean_of([tf.abs(e) for e in td_errors]))}
    return losses, stats


def sac_td_errors_tf(policy: Any, batch: dict) -> dict:
    """Per-row TD errors for priorities (mean of the critics' |TD error|), in TensorFlow."""
    import tensorflow as tf

    terms = _sac_terms_tf(policy, batch)
    return {"td_errors": mean_of([tf.abs(q - terms["q_target"]) for q in terms["q"]])}


_TD_ERRORS = {"torch": sac_td_errors_torch, "tf": sac_td_errors_tf}


def compute_td_errors(policy: Any, batch: SampleBatch) -> np.ndarray:
    """Per-row |TD errors| of `batch` under a SAC `policy` (for replay priorities), numpy."""
    return policy.run_on_batch(_TD_ERRORS[policy.framework], batch)["td_errors"]


# ---- the policy and the plan ------------------------------------------------------------------

SAC_POLICY = PolicySpec(
    name="sac", torch_loss=sac_loss_torch, tf_loss=sac_loss_tf, model=sac_model,
    action_selection=sac_action_sampling, postprocess=n_step_postprocess, target_network=True,
    config_class=SACConfig,
    optimizer_groups=(
        OptimizerGroup("actor", weights=("pi/",), lr="actor_lr", lr_schedule=None),
        OptimizerGroup("critic", weights=("q1/", "q2/"), lr="critic_lr", lr_schedule=None),
        OptimizerGroup("alpha", weights=("log_alpha",), lr="entropy_lr", lr_schedule=None,
                       grad_clip=None),
    ))
"""SAC's policy: squashed-Gaussian (or categorical) actor, twin critics, learned temperature."""


def sac_flow(experiences: LocalIterator[Any], workers: WorkerSet, config: SACConfig,
             policy_id: str | None = None) -> LocalIterator[TrainResult]:
    """SAC's flows for one policy: store its experiences, replay-train them (see
    `flowrl.plans.off_policy.replay_train_flow`)."""
    return replay_train_flow(experiences, workers, config, policy_id,
                             compute_td_errors=compute_td_errors)


sac_steps_per_output = replay_steps_per_output


def sac_plan(workers: WorkerSet, config: SACConfig) -> LocalIterator[TrainResult]:
    """SAC as a dataflow: a store flow and a replay-train flow, in a fixed rotation."""
    return sac_flow(ParallelRollouts(workers, mode="bulk_sync"), workers, config)
