"""APPO: asynchronous PPO, IMPALA's dataflow with PPO's clipped surrogate on V-trace advantages.

Paper: IMPALA (Espeholt et al., 2018, https://arxiv.org/abs/1802.01561) for the architecture
and V-trace; PPO (Schulman et al., 2017, https://arxiv.org/abs/1707.06347) for the surrogate.

Implementation details:
1. Sampling, batching, the learner thread and the weight broadcasts are IMPALA's
   (`flowrl.plans.impala.build_learner_flows`, operators in `flowrl.ops.learner_flows`).
2. A target network plays PPO's "old policy": V-trace corrects from the workers' behaviour
   policy to it, and the surrogate ratio is new policy / target policy, clipped to
   1 +- `clip_param`. It is computed as (behaviour / target, clipped to [0, 2]) x (new /
   behaviour), as in RLlib's APPO, so far-off-policy samples cannot inflate it.
3. The target network is set to the learner's weights every `target_update_frequency`
   learner updates, by its own operator on the plan side (`UpdateTargetNetwork(by="updates")`).
4. Optional KL loss (`use_kl_loss`): `kl_coeff` * KL(target || new), its coefficient adapted
   at each target update toward `kl_target` (x1.5 above 2 x target, x0.5 below half of it;
   `AdaptKLCoefficient`).
5. Value loss to the V-trace targets `vs` and an entropy bonus, as in IMPALA.

Metrics reported: IMPALA's, plus `info/learner/default_policy/{kl, kl_coeff, mean_ratio}` and
the counter `learner/target_updates`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowrl.data import DEFAULT_POLICY_ID
from flowrl.iter import LocalIterator
from flowrl.ops import AdaptKLCoefficient, Concurrently, UpdateTargetNetwork
from flowrl.ops.learner_flows import BroadcastToSourceWorkers
from flowrl.plans.impala import IMPALAConfig, build_learner_flows, fragments_with_sources
from flowrl.policy import PolicySpec
from flowrl.policy.vtrace import vtrace_targets_tf, vtrace_targets_torch
from flowrl.workers import WorkerSet


@dataclass(frozen=True, kw_only=True)
class APPOConfig(IMPALAConfig):
    """APPO's hyperparameters: IMPALA's, plus the clipped surrogate, target network and KL."""

    train_batch_size: int = 800
    """Env steps per learner update: one worker's sample (each is trained on twice)."""
    lr: float = 1e-3
    """Adam learning rate; typical 1e-4 to 2e-3."""
    num_sgd_iter: int = 2
    """Learner updates per train batch; the clipping keeps repeated updates near the target."""
    clip_param: float = 0.3
    """Surrogate clipping epsilon around the target (old) policy; typical 0.1-0.4."""
    target_update_frequency: int = 2
    """Learner updates between two refreshes of the target network (the old policy)."""
    use_kl_loss: bool = False
    """Add kl_coeff * KL(target || new) to the loss, with an adaptive coefficient."""
    kl_coeff: float = 1.0
    """Initial KL coefficient (with use_kl_loss), adapted toward kl_target."""
    kl_target: float = 0.01
    """Mean KL per target period the adaptive coefficient aims for."""

    def _validate(self) -> None:
        super()._validate()
        if self.clip_param <= 0:
            raise ValueError(f"clip_param must be positive, got clip_param={self.clip_param}.")
        self._check_at_least("target_update_frequency", 1)
        self._check_at_least("kl_coeff", 0.0)
        if self.kl_target <= 0:
            raise ValueError(f"kl_target must be positive, got kl_target={self.kl_target}.")


def appo_loss_torch(policy: Any, batch: dict) -> tuple[Any, dict]:
    """APPO's loss in PyTorch: clipped surrogate on V-trace advantages, value loss, entropy,
    optional KL to the target network."""
    import torch

    config = policy.config
    dist_inputs, values = policy.model_outputs(batch)
    dist = policy.dist_class(dist_inputs)
    logp = dist.logp(batch["actions"])
    with torch.no_grad():
        old_inputs, _ = policy.model_outputs(batch, policy.target_model)
    old_dist = policy.dist_class(old_inputs)
    old_logp = old_dist.logp(batch["actions"])
    targets = vtrace_targets_torch(policy, batch, batch["action_logp"], old_logp, values)
    behaviour_logp = batch["action_logp"]
    importance = torch.clamp(torch.exp(behaviour_logp - old_logp), 0.0, 2.0)
    ratio = importance * torch.exp(logp - behaviour_logp)
    advantages = _to_rows_torch(targets["pg_advantages"])
    clip = config.clip_param
    surrogate = torch.minimum(advantages * ratio,
                              advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip))
    policy_loss = -surrogate.mean()
    vf_loss = 0.5 * ((targets["values"] - targets["vs"]) ** 2).mean()
    entropy = dist.entropy().mean()
    kl = old_dist.kl(dist).mean()
    total = (policy_loss + config.vf_loss_coeff * vf_loss
             - policy.get_coefficient("entropy_coeff") * entropy)
    if config.use_kl_loss:
        total = total + policy.get_coefficient("kl_coeff") * kl
    return total, {"total_loss": total, "policy_loss": policy_loss, "vf_loss": vf_loss,
                   "entropy": entropy, "kl": kl, "mean_ratio": ratio.mean(),
                   "mean_rho": targets["rhos"].mean()}


def appo_loss_tf(policy: Any, batch: dict) -> tuple[Any, dict]:
    """APPO's loss in TensorFlow, the same terms as `appo_loss_torch`."""
    import tensorflow as tf

    config = policy.config
    dist_inputs, values = policy.model_outputs(batch)
    dist = policy.dist_class(dist_inputs)
    logp = dist.logp(batch["actions"])
    old_inputs, _ = policy.model_outputs(batch, policy.target_model)
    old_dist = policy.dist_class(tf.stop_gradient(old_inputs))
    old_logp = old_dist.logp(batch["actions"])
    targets = vtrace_targets_tf(policy, batch, batch["action_logp"], old_logp, values)
    behaviour_logp = batch["action_logp"]
    importance = tf.clip_by_value(tf.exp(behaviour_logp - old_logp), 0.0, 2.0)
    ratio = importance * tf.exp(logp - behaviour_logp)
    advantages = tf.reshape(tf.transpose(targets["pg_advantages"]), [-1])
    clip = config.clip_param
    surrogate = tf.minimum(advantages * ratio,
                           advantages * tf.clip_by_value(ratio, 1.0 - clip, 1.0 + clip))
    policy_loss = -tf.reduce_mean(surrogate)
    vf_loss = 0.5 * tf.reduce_mean(tf.square(targets["values"] - targets["vs"]))
    entropy = tf.reduce_mean(dist.entropy())
    kl = tf.reduce_mean(old_dist.kl(dist))
    total = (policy_loss + config.vf_loss_coeff * vf_loss
             - policy.get_coefficient("entropy_coeff") * entropy)
    if config.use_kl_loss:
        total = total + policy.get_coefficient("kl_coeff") * kl
    return total, {"total_loss": total, "policy_loss": policy_loss, "vf_loss": vf_loss,
                   "entropy": entropy, "kl": kl, "mean_ratio": tf.reduce_mean(ratio),
                   "mean_rho": tf.reduce_mean(targets["rhos"])}


def _to_rows_torch(time_major: Any) -> Any:
    """Time-major [T, B] back to the batch's env-major rows [B * T]."""
    return time_major.transpose(0, 1).reshape(-1)


APPO_POLICY = PolicySpec(name="appo", torch_loss=appo_loss_torch, tf_loss=appo_loss_tf,
                         postprocess=None, coefficients=("kl_coeff", "entropy_coeff"),
                         target_network=True, config_class=APPOConfig,
                         time_major=True, recurrent_loss=True)
"""APPO's policy: sampled actions, raw fragments, a target network as the old policy."""


def appo_flow(fragments: LocalIterator[tuple[Any, Any]], workers: WorkerSet,
              config: APPOConfig, policy_id: str | None = None) -> LocalIterator:
    """APPO's training flow for one policy: IMPALA's learner thread and broadcasts, plus
    target-network (and KL coefficient) updates.

    Args:
        fragments: the policy's fragments, each paired with the rollout worker that sampled
            it (`flowrl.plans.impala.fragments_with_sources`).
        workers: the rollout workers (the learner's policy is the local worker's).
        config: the policy's typed config.
        policy_id: the policy this flow trains; None trains the workers' own trained policies
            (the default policy of a single-agent run).
    """
    flows = build_learner_flows(fragments, workers, config, policy_id)
    # The target network (the "old policy") follows the learner every few updates ...
    updated = flows.dequeue
    for trained in flows.learn_step.trained_policies():
        updated = updated.for_each(UpdateTargetNetwork(
            workers, config.target_update_frequency, by="updates", learn_step=flows.learn_step,
            **({} if trained == DEFAULT_POLICY_ID else {"policy_id": trained})))
    # ... and the KL coefficient (with use_kl_loss) is adapted at the same updates.
    updated = updated.for_each(AdaptKLCoefficient(
        flows.learn_step, kl_target=config.kl_target,
        every_updates=config.target_update_frequency, adapt=config.use_kl_loss))
    # Each learner update sends fresh weights to the worker(s) that sent its batch.
    broadcast = updated.for_each(BroadcastToSourceWorkers(
        workers, flows.learn_step, flows.versions,
        broadcast_interval=config.broadcast_interval))
    return Concurrently([flows.enqueue, broadcast], mode="async", output_indexes=[1])


def appo_plan(workers: WorkerSet, config: APPOConfig) -> LocalIterator:
    """APPO as a dataflow: IMPALA's learner thread and broadcasts, plus target-network updates."""
    return appo_flow(fragments_with_sources(workers, config), workers, config)
