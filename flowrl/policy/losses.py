"""The policy-gradient loss, once per framework, in actor-critic form.

``loss = -mean(logp(actions) * advantages)
         + vf_loss_coeff * 0.5 * mean((V(obs) - value_targets)^2)   # only if use_critic
         - entropy_coeff * mean(entropy)``

With PG's defaults (`use_critic=False`, `entropy_coeff=0`) this is vanilla REINFORCE with
discounted returns; A2C/A3C reuse it with a critic. Hyperparameters are read from the typed
config by attribute (`policy.config.entropy_coeff`). Frameworks are imported inside the functions
so that importing this module stays cheap.
"""

from __future__ import annotations

from typing import Any


def pg_loss_torch(policy: Any, train_batch: dict) -> tuple[Any, dict]:
    """The actor-critic policy-gradient loss on Torch tensors; see the module docstring."""
    config = policy.config
    dist_inputs, values = policy.model_outputs(train_batch)
    dist = policy.dist_class(dist_inputs)
    policy_loss = -(dist.logp(train_batch["actions"]) * train_batch["advantages"]).mean()
    entropy = dist.entropy().mean()
    total = policy_loss - policy.get_coefficient("entropy_coeff") * entropy
    stats = {"policy_loss": policy_loss, "entropy": entropy}
    if config.use_critic:
        vf_loss = 0.5 * (values - train_batch["value_targets"]).square().mean()
        total = total + config.vf_loss_coeff * vf_loss
        stats["vf_loss"] = vf_loss
    stats["total_loss"] = total
    return total, stats


def pg_loss_tf(policy: Any, train_batch: dict) -> tuple[Any, dict]:
    """The actor-critic policy-gradient loss on TF tensors; see the module docstring."""
    import tensorflow as tf

    config = policy.config
    dist_inputs, values = policy.model_outputs(train_batch)
    dist = policy.dist_class(dist_inputs)
    policy_loss = -tf.reduce_mean(dist.logp(train_batch["actions"]) * train_batch["advantages"])
    entropy = tf.reduce_mean(dist.entropy())
    total = policy_loss - policy.get_coefficient("entropy_coeff") * entropy
    stats = {"policy_loss": policy_loss, "entropy": entropy}
    if config.use_critic:
        vf_loss = 0.5 * tf.reduce_mean(tf.square(values - train_batch["value_targets"]))
        total = total + config.vf_loss_coeff * vf_loss
        stats["vf_loss"] = vf_loss
    stats["total_loss"] = total
    return total, stats
