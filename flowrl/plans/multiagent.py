"""Multi-agent training: each policy's algorithm, and the plan that composes them.

A multi-agent config names its policies (`policies`), maps agents to them (`policy_mapping`)
and may leave some untrained (`policies_to_train`); see `docs/plans/multiagent.md`.
A built-in plan trains all policies of its own algorithm: `flowrl.run("ppo",
env="MultiAgentArena-v0", config={...})` trains two PPO policies when two are configured.

`multiagent_plan` composes algorithms. Every algorithm module exports the flow that trains one
policy (`ppo_flow(experiences, workers, config, policy_id)`, `dqn_flow`, ...; the algorithm's
own plan is that flow over all rollouts), and the registry `flowrl.plans.ALGORITHMS` names it.
The rollouts of all workers are split by policy (`SelectExperiences`) and every trained policy
runs its own algorithm's flow with its own config, all joined with `Concurrently`:

```
ParallelRollouts ─ duplicate ─┬─ SelectExperiences([p1]) ─ ppo_flow(p1's config) ─┐
                              └─ SelectExperiences([p2]) ─ dqn_flow(p2's config) ─┴ Concurrently
```

The Trainer picks this plan by itself when a trained policy's algorithm is not the trainer's
(`{"policies": {"p2": {"algo": "dqn"}}}` under a PPO trainer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flowrl.config import from_dict
from flowrl.iter import LocalIterator
from flowrl.ops import (
    Concurrently,
    DropSource,
    ParallelRollouts,
    SelectExperiences,
    TrainResult,
)
from flowrl.plans.impala import fragments_with_sources
from flowrl.policy import PolicySpec
from flowrl.workers import WorkerSet

SHARED_WORKER_FIELDS = ("framework", "seed", "env_config", "num_threads_per_worker",
                        "learner_num_threads", "num_workers", "num_envs_per_worker",
                        "rollout_fragment_length", "batch_mode")
"""Fields a policy of another algorithm takes from the trainer's config: they describe the
workers and the process all policies share, not one policy's learning (the trainer's config
shapes the workers, so a policy's config says what they really sample)."""


def resolve_policies(config: Any, algorithm: Any,
                     lookup: Callable[[str], Any] | None = None
                     ) -> dict[str, tuple[PolicySpec, Any]]:
    """Policy id -> (PolicySpec, typed config) for every entry of `config.policies`.

    A policy without `algo` uses the trainer's algorithm and `config` with its overrides; a
    policy of another algorithm starts from that algorithm's defaults plus the trainer's
    worker settings (`SHARED_WORKER_FIELDS`), then its overrides.

    Args:
        config: the trainer's typed config.
        algorithm: the trainer's `AlgorithmSpec`.
        lookup: algorithm name -> `AlgorithmSpec` (default `flowrl.plans.get_algorithm`).

    Returns:
        An empty dict for a config without `policies` (single-agent, or all agents sharing
        the trainer's policy).
    """
    if lookup is None:
        from flowrl.plans import get_algorithm as lookup
    resolved = {}
    for policy_id, entry in getattr(config, "policies", {}).items():
        overrides = dict(entry.get("config", {}))
        other = lookup(entry["algo"]) if entry.get("algo") else algorithm
        if other.config_class is type(config):
            policy_config = config.replace(**overrides) if overrides else config
        else:
            if policy_id in (getattr(config, "policies_to_train", None) or [policy_id]):
                _composable(policy_id, other)  # only a flow trains beside another algorithm
            shared = {name: getattr(config, name) for name in SHARED_WORKER_FIELDS}
            policy_config = from_dict(other.config_class, {**shared, **overrides})
        resolved[policy_id] = (other.policy, policy_config)
    return resolved


def algorithm_of(policy_config: Any, lookup: Callable[[], Any] | None = None) -> Any:
    """The built-in `AlgorithmSpec` whose config class `policy_config` is an instance of
    (exactly: Ape-X's config subclasses DQN's, yet Ape-X is its own algorithm)."""
    if lookup is None:
        from flowrl.plans import ALGORITHMS as table
    else:
        table = lookup()
    for spec in table.values():
        if type(policy_config) is spec.config_class:
            return spec
    raise ValueError(f"No built-in algorithm has the config class "
                     f"{type(policy_config).__name__}.")


def composable_algorithms() -> list[str]:
    """Names of the built-in algorithms whose flow `multiagent_plan` can compose."""
    from flowrl.plans import ALGORITHMS

    return [spec.name for spec in ALGORITHMS.values() if spec.flow is not None]


def needs_composed_plan(config: Any, resolved: dict[str, tuple[PolicySpec, Any]]) -> bool:
    """True when a trained policy's algorithm is not the trainer's: only `multiagent_plan`
    trains such a mix (each algorithm's own plan trains its own policies)."""
    return any(type(resolved[pid][1]) is not type(config) for pid in _trained(config, resolved))


def plan_for(algorithm: Any, config: Any, resolved: dict[str, tuple[PolicySpec, Any]]
             ) -> Callable[[WorkerSet, Any], LocalIterator[TrainResult]]:
    """The plan a Trainer of `algorithm` runs: its own, or `multiagent_plan` when a trained
    policy belongs to another algorithm.

    Raises:
        ValueError: (before any worker starts) a mix with an algorithm that cannot be composed.
    """
    if not needs_composed_plan(config, resolved):
        return algorithm.plan
    for policy_id in _trained(config, resolved):
        _composable(policy_id, algorithm_of(resolved[policy_id][1]))
    return multiagent_plan


def _trained(config: Any, resolved: dict[str, tuple[PolicySpec, Any]]) -> list[str]:
    trained = getattr(config, "policies_to_train", None) or list(resolved)
    return [pid for pid in trained if pid in resolved]


def _composable(policy_id: str, algorithm: Any) -> Any:
    """`algorithm`, if it has a flow `multiagent_plan` can compose; else a clear error."""
    if algorithm.flow is None:
        raise ValueError(
            f"Policy {policy_id!r} uses {algorithm.name}, whose plan trains only policies of "
            f"its own, so it cannot yet be composed with other algorithms. Algorithms "
            f"multiagent_plan composes: {composable_algorithms()}; or give every trained "
            f"policy the algorithm {algorithm.name}.")
    return algorithm


def multiagent_plan(workers: WorkerSet, config: Any) -> LocalIterator[TrainResult]:
    """Every trained policy learns with its own algorithm's flow over shared rollouts.

    Raises:
        ValueError: the env is not multi-agent, or a policy's algorithm has no flow to
            compose (the message lists those that have one).
    """
    setup = workers.multi_agent
    if setup is None:
        raise ValueError("multiagent_plan needs a multi-agent env (a PettingZoo parallel env, "
                         "e.g. 'MultiAgentArena-v0'); for a single-agent env use a built-in "
                         "algorithm's own plan.")
    chosen = []
    for policy_id in setup.policies_to_train:
        policy_config = setup.entries[policy_id].config
        algorithm = _composable(policy_id, algorithm_of(policy_config))
        chosen.append((policy_id, policy_config, algorithm))
    # One source for all: lock-step rounds, or (worker, fragment) pairs as workers finish
    # when a learner-thread flow is among them (IMPALA, APPO).
    sourced = [config_ for _, config_, algorithm in chosen if algorithm.flow_input == "sourced"]
    rollouts = (fragments_with_sources(workers, sourced[0]) if sourced
                else ParallelRollouts(workers, mode="bulk_sync"))
    branches = rollouts.duplicate(len(chosen)) if len(chosen) > 1 else [rollouts]
    flows, rates = [], []
    for branch, (policy_id, policy_config, algorithm) in zip(branches, chosen):
        mine = branch.for_each(SelectExperiences([policy_id]))
        if sourced and algorithm.flow_input == "batches":
            mine = mine.for_each(DropSource())
        flows.append(algorithm.flow(mine, workers, policy_config, policy_id))
        rates.append(algorithm.steps_per_output(workers, policy_config))
    if len(flows) == 1:
        return flows[0]
    # Each rotation pulls as many outputs from each flow as consume the same env steps.
    slowest = max(rates)
    weights = [max(1, round(slowest / rate)) for rate in rates]
    return Concurrently(flows, mode="round_robin", round_robin_weights=weights)


__all__ = ["SHARED_WORKER_FIELDS", "algorithm_of", "composable_algorithms", "multiagent_plan",
           "needs_composed_plan", "plan_for", "resolve_policies"]
