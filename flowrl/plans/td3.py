"""TD3: twin delayed DDPG (Fujimoto et al., 2018).

Paper: https://arxiv.org/abs/1802.09477

TD3 is DDPG's plan and losses (`flowrl.plans.ddpg`) with the paper's three changes switched on
by its defaults:
1. Clipped double Q (`twin_q`): two critics, the target takes the smaller target value.
2. Delayed policy updates (`policy_delay` 2): the actor steps on every second critic update,
   and the target networks move with it (`target_network_update_freq` 2 optimizer updates,
   as the paper does; keep it equal to `policy_delay`).
3. Target policy smoothing (`smooth_target_policy`): the target action mu'(s') gets
   N(0, `target_noise`) noise clipped to +-`target_noise_clip` (unit action space).

Exploration is Gaussian (`exploration_noise_type` "gaussian", std 0.1 in unit space) after
`random_timesteps` uniformly random actions; no L2 penalty; batch 256, tau 0.005.
Metrics are DDPG's: `actor_loss`, `critic_loss`, `mean_q`, `max_q`, `min_q`, `mean_td_error`.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowrl.iter import LocalIterator
from flowrl.ops import ParallelRollouts, TrainResult
from flowrl.plans.ddpg import (
    ACTOR_CRITIC_GROUPS,
    DDPGConfig,
    ddpg_flow,
    ddpg_loss_tf,
    ddpg_loss_torch,
    deterministic_actor_noise,
)
from flowrl.policy import PolicySpec, deterministic_actor_critic_model
from flowrl.policy.actor_exploration import NoiseType
from flowrl.policy.postprocessing import n_step_postprocess
from flowrl.workers import WorkerSet


@dataclass(frozen=True, kw_only=True)
class TD3Config(DDPGConfig):
    """TD3's hyperparameters: DDPG's, with twin critics, delayed actor and target smoothing."""

    tau: float = 0.005
    """Each target update moves the target networks this far toward the online ones."""
    target_network_update_freq: int = 2
    """Optimizer updates between target moves: with the delayed actor (keep = policy_delay)."""
    twin_q: bool = True
    """Two critics; targets take the smaller value (clipped double Q)."""
    policy_delay: int = 2
    """The actor steps on every policy_delay-th update (the critics on every one)."""
    smooth_target_policy: bool = True
    """Add clipped Gaussian noise to the target actor's action (target policy smoothing)."""
    exploration_noise_type: NoiseType = "gaussian"
    """Exploration noise added to the actor's action: "gaussian" or "ou" (Ornstein-Uhlenbeck)."""
    l2_reg: float = 0.0
    """L2 penalty on each network's kernels (not biases), added to its own loss."""


TD3_POLICY = PolicySpec(
    name="td3", torch_loss=ddpg_loss_torch, tf_loss=ddpg_loss_tf,
    model=deterministic_actor_critic_model, action_selection=deterministic_actor_noise,
    postprocess=n_step_postprocess, target_network=True, config_class=TD3Config,
    optimizer_groups=ACTOR_CRITIC_GROUPS)
"""TD3's policy: DDPG's with twin critics, a delayed actor and Gaussian exploration."""

td3_flow = ddpg_flow


def td3_plan(workers: WorkerSet, config: TD3Config) -> LocalIterator[TrainResult]:
    """TD3 as a dataflow: DDPG's store flow and replay-train flow, in a fixed rotation."""
    return td3_flow(ParallelRollouts(workers, mode="bulk_sync"), workers, config)


__all__ = ["TD3_POLICY", "TD3Config", "td3_flow", "td3_plan"]
