"""Optimizer groups: named sets of weights, each with its own optimizer, learning rate,
gradient clipping and update period.

A `PolicySpec` without groups trains every weight with one Adam on the config's `lr`,
`lr_schedule` and `grad_clip`, and its loss returns one scalar: every algorithm written before
groups existed is unchanged. A spec that declares groups (SAC: actor, critics, temperature;
TD3: an actor stepped every second critic step) gets one loss per group from its loss function,
`loss(policy, batch) -> ({group: loss}, stats)`, and each group's weights are moved by the
gradient of its own loss only::

    SAC_POLICY = PolicySpec(
        name="sac", torch_loss=sac_loss_torch, tf_loss=sac_loss_tf, model=sac_model,
        optimizer_groups=(
            OptimizerGroup("actor", weights=("pi/",), lr="actor_lr"),
            OptimizerGroup("critic", weights=("q1/", "q2/"), lr="critic_lr", grad_clip=10.0),
            OptimizerGroup("alpha", weights=("log_alpha",), lr=3e-4),
        ))

A group's settings are values or names of config fields (`lr="actor_lr"` reads
`config.actor_lr`), so they stay configurable and typed in the algorithm's config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from flowrl.policy.schedules import PiecewiseSchedule

OptimizerName = Literal["adam", "sgd"]
OPTIMIZERS = ("adam", "sgd")


@dataclasses.dataclass(frozen=True)
class OptimizerGroup:
    """One named group of a policy's weights and how it is optimized.

    Attributes are plain values, or strings naming the config field that holds the value.
    """

    name: str
    """The group's name: the key of its loss in the loss's dict, and of its stats."""
    weights: tuple[str, ...] = ()
    """Weight-name prefixes the group owns (e.g. ("pi/",)); () = every weight no other group
    claims. Each weight belongs to exactly one group."""
    optimizer: OptimizerName = "adam"
    """"adam" (torch.optim.Adam's maths, betas 0.9/0.999, eps 1e-8) or "sgd" (plain steps)."""
    lr: float | str = "lr"
    """The learning rate, or the config field holding it."""
    lr_schedule: Sequence[Sequence[float]] | str | None = "lr_schedule"
    """[[timestep, lr], ...], or the config field holding it; None = a constant lr."""
    grad_clip: float | str | None = "grad_clip"
    """Clip this group's gradients to this global L2 norm, or the config field; None = never."""
    update_period: int | str = 1
    """Step on updates 0, k, 2k, ... of the policy (k=2: TD3's delayed actor), or the config
    field; the other updates leave the group's weights and optimizer state alone."""


@dataclasses.dataclass
class ResolvedGroup:
    """A group with its values read from the config and its weights named (in a policy)."""

    name: str
    weight_names: list[str]
    indices: list[int]
    """Positions of the group's weights in the policy's weight order."""
    optimizer: OptimizerName
    lr: float
    schedule: PiecewiseSchedule | None
    grad_clip: float | None
    update_period: int

    def due(self, update_index: int) -> bool:
        """Whether the group steps on the policy's `update_index`-th update (from 0)."""
        return update_index % self.update_period == 0


DEFAULT_GROUP = OptimizerGroup("default")
"""The one group of a spec that declares none: all weights, the config's lr and clipping."""


def resolve_groups(groups: Sequence[OptimizerGroup], config: Any, weight_names: Sequence[str],
                   *, policy_name: str) -> list[ResolvedGroup]:
    """The spec's groups (or the default one) with config values read and weights assigned.

    Raises:
        ValueError: a group names a missing config field, has a bad value, owns no weight, or
            a weight belongs to no group or to two (each message names them and the fix).
    """
    groups = list(groups) or [DEFAULT_GROUP]
    names = [group.name for group in groups]
    if len(set(names)) != len(names):
        raise ValueError(f"PolicySpec {policy_name!r} has duplicate optimizer group names "
                         f"{names}; give each group its own name.")
    owners: dict[str, str] = {}
    for weight in weight_names:
        claimed = [g.name for g in groups if g.weights and weight.startswith(g.weights)]
        if len(claimed) > 1:
            raise ValueError(
                f"weight {weight!r} of policy {policy_name!r} matches the prefixes of optimizer "
                f"groups {claimed}; make the groups' `weights` prefixes disjoint.")
        if claimed:
            owners[weight] = claimed[0]
    rest = [g.name for g in groups if not g.weights]
    if len(rest) > 1:
        raise ValueError(f"optimizer groups {rest} of policy {policy_name!r} all take the "
                         "remaining weights (weights=()); give all but one of them prefixes.")
    unclaimed = [w for w in weight_names if w not in owners]
    if unclaimed and not rest:
        raise ValueError(
            f"weights {unclaimed} of policy {policy_name!r} belong to no optimizer group "
            f"(groups: {[(g.name, g.weights) for g in groups]}); add their prefix to a group "
            "or add a group with weights=() that takes the rest.")
    for weight in unclaimed:
        owners[weight] = rest[0]
    resolved = []
    for group in groups:
        members = [w for w in weight_names if owners[w] == group.name]
        if not members:
            raise ValueError(
                f"optimizer group {group.name!r} of policy {policy_name!r} owns no weight "
                f"(prefixes {group.weights}); the model's weights are {list(weight_names)}.")
        resolved.append(_resolve_one(group, config, members, list(weight_names), policy_name))
    return resolved


def _resolve_one(group: OptimizerGroup, config: Any, members: list[str], all_names: list[str],
                 policy_name: str) -> ResolvedGroup:
    def read(value: Any, what: str) -> Any:
        if not isinstance(value, str):
            return value
        if not hasattr(config, value):
            raise ValueError(
                f"optimizer group {group.name!r} of policy {policy_name!r} reads its {what} "
                f"from config field {value!r}, but {type(config).__name__} has no such field; "
                "add the field to the config class or give the value itself.")
        return getattr(config, value)

    if group.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer group {group.name!r}: unknown optimizer="
                         f"{group.optimizer!r}; valid: {list(OPTIMIZERS)}.")
    period = int(read(group.update_period, "update_period"))
    if period < 1:
        raise ValueError(f"optimizer group {group.name!r}: update_period must be >= 1; got "
                         f"update_period={period}.")
    schedule = read(group.lr_schedule, "lr_schedule")
    clip = read(group.grad_clip, "grad_clip")
    return ResolvedGroup(
        name=group.name, weight_names=members, indices=[all_names.index(w) for w in members],
        optimizer=group.optimizer, lr=float(read(group.lr, "lr")),
        schedule=PiecewiseSchedule(schedule) if schedule else None,
        grad_clip=float(clip) if clip else None, update_period=period)


def group_losses(loss: Any, groups: Sequence[ResolvedGroup], policy_name: str) -> dict[str, Any]:
    """The loss's per-group values; a clear error when a multi-group loss returns a scalar or
    names other groups."""
    if not isinstance(loss, Mapping):
        raise TypeError(
            f"policy {policy_name!r} has optimizer groups {[g.name for g in groups]}, so its "
            f"loss must return ({{group: loss}}, stats); it returned a "
            f"{type(loss).__name__}.")
    expected, got = {g.name for g in groups}, set(loss)
    if expected != got:
        raise ValueError(
            f"policy {policy_name!r}'s loss returned losses for groups {sorted(got)}, "
            f"expected exactly {sorted(expected)} (one per optimizer group).")
    return dict(loss)
