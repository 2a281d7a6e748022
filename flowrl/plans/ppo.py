"""PPO: proximal policy optimization with a clipped surrogate (Schulman et al., 2017).

Paper: https://arxiv.org/abs/1707.06347

Implementation details:
1. Synchronous ("bulk_sync") sampling, so every sample in a train batch comes from the
   weights being improved.
2. GAE advantages (`gae_lambda`), computed per trajectory on the rollout workers; truncated
   episodes bootstrap from the value of their last observation, terminated ones do not.
3. Advantages standardized per train batch.
4. `num_sgd_iter` epochs over shuffled minibatches of `sgd_minibatch_size`.
5. Loss = -clipped surrogate + kl_coeff * KL(old || new) + vf_loss_coeff * clipped value loss
   - entropy_coeff * entropy; the value loss clips the new value to within `vf_clip_param` of
   the sampled one (PPO2 style).
6. Adaptive KL coefficient: multiplied by 1.5 when the mean KL exceeds 2 x `kl_target`,
   halved below 0.5 x `kl_target` (`UpdateKL`).

Metrics reported: `info/learner/default_policy/{total_loss, policy_loss, vf_loss, kl,
entropy, kl_coeff}`, plus the shared `sampler/env_steps`, `learner/steps_trained`,
`learner/weight_broadcasts`, `timers/learn`, `timers/broadcast_weights`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from flowrl.iter import LocalIterator
from flowrl.ops import (
    BroadcastWeights,
    ConcatBatches,
    ParallelRollouts,
    StandardizeFields,
    TrainOneStep,
    TrainResult,
    UpdateKL,
)
from flowrl.plans.pg import PolicyGradientConfig
from flowrl.policy import PolicySpec
from flowrl.workers import WorkerSet


@dataclass(frozen=True, kw_only=True)
class PPOConfig(PolicyGradientConfig):
    """PPO's hyperparameters (on top of the shared rollout and resource settings)."""

    num_workers: int = 1
    """Remote rollout workers; CartPole-sized problems are fastest with one."""
    num_envs_per_worker: int = 8
    """Envs stepped together per worker with batched inference."""
    rollout_fragment_length: int = 64
    """Steps per env per sample; with 8 envs a worker returns 512 steps."""
    train_batch_size: int = 512
    """Env steps per training round (one PPO iteration)."""
    sgd_minibatch_size: int = 128
    """Minibatch size for SGD; typical 64-4096, at most train_batch_size."""
    num_sgd_iter: int = 8
    """Epochs over each train batch; typical 3-30."""
    lr: float = 1e-3
    """Adam learning rate; typical 1e-5 to 3e-3."""
    gae_lambda: float = 0.95
    """GAE lambda; 1.0 is Monte Carlo, 0.9-0.99 typical."""
    clip_param: float = 0.2
    """Surrogate clipping epsilon; typical 0.1-0.3."""
    vf_clip_param: float = 10.0
    """Largest change of the value prediction per update the value loss rewards."""
    kl_coeff: float = 0.2
    """Initial coefficient of the KL penalty (adapted toward kl_target); 0 disables it."""
    kl_target: float = 0.01
    """Mean KL per update the adaptive coefficient aims for."""
    grad_clip: float | None = 0.5
    """Global-norm gradient clipping; None disables it."""

    def _validate(self) -> None:
        super()._validate()
        if self.sgd_minibatch_size > self.train_batch_size:
            raise ValueError(
                "sgd_minibatch_size must not exceed train_batch_size, got "
                f"sgd_minibatch_size={self.sgd_minibatch_size} > "
                f"train_batch_size={self.train_batch_size}; lower "
                "sgd_minibatch_size or raise train_batch_size."
            )
        if self.clip_param <= 0:
            raise ValueError(f"clip_param must be positive, got clip_param={self.clip_param}.")
        if self.sgd_minibatch_size and self.train_batch_size % self.sgd_minibatch_size:
            warnings.warn(
                f"train_batch_size={self.train_batch_size} is not a multiple of "
                f"sgd_minibatch_size={self.sgd_minibatch_size}; the last minibatch of each "
                f"epoch has {self.train_batch_size % self.sgd_minibatch_size} samples.",
                stacklevel=3,
            )


def ppo_loss_torch(policy: Any, batch: dict) -> tuple[Any, dict]:
    """PPO's loss in PyTorch: clipped surrogate, KL penalty, clipped value loss, entropy."""
    import torch

    config = policy.config
    dist_inputs, values = policy.model_outputs(batch)
    dist = policy.dist_class(dist_inputs)
    old_dist = policy.dist_class(batch["action_dist_inputs"])
    ratio = torch.exp(dist.logp(batch["actions"]) - batch["action_logp"])
    advantages = batch["advantages"]
    clip = config.clip_param
    surrogate = torch.minimum(advantages * ratio,
                              advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip))
    kl = old_dist.kl(dist).mean()
    entropy = dist.entropy().mean()
    value_targets, old_values = batch["value_targets"], batch["vf_preds"]
    clipped_values = old_values + torch.clamp(values - old_values,
                                              -config.vf_clip_param, config.vf_clip_param)
    vf_loss = torch.maximum((values - value_targets) ** 2,
                            (clipped_values - value_targets) ** 2).mean()
    policy_loss = -surrogate.mean()
    kl_coeff = policy.get_coefficient("kl_coeff")
    total = (policy_loss + kl_coeff * kl + config.vf_loss_coeff * vf_loss
             - policy.get_coefficient("entropy_coeff") * entropy)
    return total, {"total_loss": total, "policy_loss": policy_loss, "vf_loss": vf_loss,
                   "kl": kl, "entropy": entropy}


def ppo_loss_tf(policy: Any, batch: dict) -> tuple[Any, dict]:
    """PPO's loss in TensorFlow, the same terms as `ppo_loss_torch`."""
    import tensorflow as tf

    config = policy.config
    dist_inputs, values = policy.model_outputs(batch)
    dist = policy.dist_class(dist_inputs)
    old_dist = policy.dist_class(batch["action_dist_inputs"])
    ratio = tf.exp(dist.logp(batch["actions"]) - batch["action_logp"])
    advantages = batch["advantages"]
    clip = config.clip_param
    surrogate = tf.minimum(advantages * ratio,
                           advantages * tf.clip_by_value(ratio, 1.0 - clip, 1.0 + clip))
    kl = tf.reduce_mean(old_dist.kl(dist))
    entropy = tf.reduce_mean(dist.entropy())
    value_targets, old_values = batch["value_targets"], batch["vf_preds"]
    vf_clip = config.vf_clip_param
    clipped_values = old_values + tf.clip_by_value(values - old_values, -vf_clip, vf_clip)
    vf_loss = tf.reduce_mean(tf.maximum(tf.square(values - value_targets),
                                        tf.square(clipped_values - value_targets)))
    policy_loss = -tf.reduce_mean(surrogate)
    kl_coeff = policy.get_coefficient("kl_coeff")
    total = (policy_loss + kl_coeff * kl + config.vf_loss_coeff * vf_loss
             - policy.get_coefficient("entropy_coeff") * entropy)
    return total, {"total_loss": total, "policy_loss": policy_loss, "vf_loss": vf_loss,
                   "kl": kl, "entropy": entropy}


PPO_POLICY = PolicySpec(name="ppo", torch_loss=ppo_loss_torch, tf_loss=ppo_loss_tf,
                        coefficients=("kl_coeff", "entropy_coeff"), config_class=PPOConfig,
                        recurrent_loss=True)
"""PPO's policy: sampled actions, GAE, the clipped-surrogate loss, an adaptive KL coefficient."""


def ppo_flow(experiences: LocalIterator[Any], workers: WorkerSet, config: PPOConfig,
             policy_id: str | None = None) -> LocalIterator[TrainResult]:
    """PPO's training flow for one policy: full batches, minibatch SGD, sync, adapt the KL.

    Takes the arguments of `flowrl.plans.pg.pg_flow`.
    """
    policy_ids = None if policy_id is None else [policy_id]
    # Collect a full train batch and standardize its advantages.
    batches = experiences.combine(ConcatBatches(min_batch_size=config.train_batch_size))
    batches = batches.for_each(StandardizeFields(["advantages"]))
    # Several epochs of minibatch SGD on the learner's policy.
    trained = batches.for_each(TrainOneStep(workers, num_sgd_iter=config.num_sgd_iter,
                                            sgd_minibatch_size=config.sgd_minibatch_size,
                                            policy_ids=policy_ids))
    # Weight sync is its own stage, not a side effect of training.
    synced = trained.for_each(BroadcastWeights(workers, policy_ids=policy_ids))
    # The KL coefficient follows the measured KL of this round.
    return synced.for_each(UpdateKL(workers, kl_target=config.kl_target))


def ppo_plan(workers: WorkerSet, config: PPOConfig) -> LocalIterator[TrainResult]:
    """PPO as a dataflow: sample in lock-step, train on full batches, sync, adapt the KL."""
    # Synchronous sampling keeps PPO on-policy.
    return ppo_flow(ParallelRollouts(workers, mode="bulk_sync"), workers, config)
