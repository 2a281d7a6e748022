"""Multi-agent training: each policy's algorithm, and plans that compose them.

A multi-agent config names its policies (`policies`), maps agents to them (`policy_mapping`)
and may leave some untrained (`policies_to_train`); see `docs/plans/multiagent.md`.
Any built-in plan trains all policies of its own algorithm: `flowrl.run("ppo",
env="MultiAgentArena-v0", config={...})` trains two PPO policies when two are configured.

`multiagent_plan` composes algorithms: the rollouts of all workers are split by policy
(`SelectExperiences`) and every trained policy gets its own algorithm's flow, with that
policy's own config (PPO: batching, advantage standardization, SGD epochs, KL adaptation;
DQN: a replay buffer with its store and replay-train flows), all joined with `Concurrently`:

```
ParallelRollouts ─ duplicate ─┬─ SelectExperiences([p1]) ─ PPO flow (p1's config) ──┐
                              └─ SelectExperiences([p2]) ─ DQN store + train flows ─┴ Concurrently
```
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from flowrl.config import from_dict
from flowrl.data import MultiAgentBatch, SampleBatch
from flowrl.iter import LocalIterator
from flowrl.ops import (
    BroadcastWeights,
    ConcatBatches,
    Concurrently,
    ParallelRollouts,
    Replay,
    SelectExperiences,
    StandardizeFields,
    StoreToReplay,
    TrainOneStep,
    TrainResult,
    UpdatePriorities,
    UpdateTargetNetwork,
)
from flowrl.plans.dqn import DQNConfig, compute_td_errors, make_replay_buffer
from flowrl.plans.ppo import PPOConfig, UpdateKL
from flowrl.policy import PolicySpec
from flowrl.workers import WorkerSet

SHARED_WORKER_FIELDS = ("framework", "seed", "env_config", "num_threads_per_worker",
                        "learner_num_threads")
"""Fields a policy of another algorithm takes from the trainer's config: they describe the
process all policies share, not one policy's learning. (Rollout fields such as
`rollout_fragment_length` always come from the trainer's config, which shapes the workers.)"""


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
            shared = {name: getattr(config, name) for name in SHARED_WORKER_FIELDS}
            policy_config = from_dict(other.config_class, {**shared, **overrides})
        resolved[policy_id] = (other.policy, policy_config)
    return resolved


class PolicyRows:
    """Takes one policy's rows out of each multi-agent batch (for single-agent operators such
    as `StoreToReplay`).

    Consumes: MultiAgentBatch. Yields: that policy's SampleBatch (empty when it had no rows).
    Metrics: none.

    Examples:
        >>> PolicyRows("p2")
        PolicyRows(policy_id='p2')
    """

    def __init__(self, policy_id: str) -> None:
        self.policy_id = policy_id

    def __call__(self, batch: MultiAgentBatch) -> SampleBatch:
        return batch.policy_batches.get(self.policy_id, SampleBatch())

    def __repr__(self) -> str:
        return f"PolicyRows(policy_id={self.policy_id!r})"


def ppo_policy_flow(experiences: LocalIterator[Any], workers: WorkerSet, policy_id: str,
                    config: PPOConfig) -> tuple[LocalIterator[TrainResult], float]:
    """PPO's training flow for one policy, fed by a stream of (multi-agent) batches.

    Returns the flow and how many input batches it consumes per output.
    """
    mine = experiences.for_each(SelectExperiences([policy_id]))
    batches = mine.combine(ConcatBatches(min_batch_size=config.train_batch_size))
    batches = batches.for_each(StandardizeFields(["advantages"]))
    trained = batches.for_each(TrainOneStep(workers, num_sgd_iter=config.num_sgd_iter,
                                            sgd_minibatch_size=config.sgd_minibatch_size,
                                            policy_ids=[policy_id]))
    synced = trained.for_each(BroadcastWeights(workers, policy_ids=[policy_id]))
    flow = synced.for_each(UpdateKL(workers, kl_target=config.kl_target))
    return flow, math.ceil(config.train_batch_size / workers.config.steps_per_sample_round)


def dqn_policy_flow(experiences: LocalIterator[Any], workers: WorkerSet, policy_id: str,
                    config: DQNConfig) -> tuple[LocalIterator[TrainResult], float]:
    """DQN's store and replay-train flows for one policy, fed by (multi-agent) batches.

    `training_intensity` counts this policy's rows trained per env step sampled by the shared
    workers. Returns the flow and how many input batches it consumes per output.
    """
    buffer = make_replay_buffer(config)
    store = (experiences.for_each(SelectExperiences([policy_id]))
             .for_each(PolicyRows(policy_id))
             .for_each(StoreToReplay(buffer, seed=config.seed))
             .for_each(BroadcastWeights(workers, policy_ids=[policy_id])))
    replayed = Replay(buffer, num_items=config.train_batch_size,
                      learning_starts=config.learning_starts)
    if config.prioritized_replay:
        replayed = replayed.for_each(UpdatePriorities(
            workers, buffer, compute_td_errors=compute_td_errors, policy_id=policy_id))
    train = (replayed
             .for_each(TrainOneStep(workers, policy_ids=[policy_id]))
             .for_each(UpdateTargetNetwork(workers, config.target_network_update_freq,
                                           by="sampled", policy_id=policy_id)))
    steps_per_round = workers.config.steps_per_sample_round
    intensity = config.training_intensity
    batches_per_round = 1 if intensity is None else max(
        1, round(intensity * steps_per_round / config.train_batch_size))
    flow = Concurrently([store, train], mode="round_robin", output_indexes=[1],
                        round_robin_weights=[1, batches_per_round])
    return flow, 1 / batches_per_round


PolicyFlow = Callable[..., tuple[LocalIterator[TrainResult], float]]
"""`flow(experiences, workers, policy_id, policy_config) -> (flow, inputs per output)`."""

POLICY_FLOWS: dict[type, PolicyFlow] = {
    PPOConfig: ppo_policy_flow,
    DQNConfig: dqn_policy_flow,
}
"""Config class of a policy's algorithm -> the flow that trains one such policy."""


def multiagent_plan(workers: WorkerSet, config: Any) -> LocalIterator[TrainResult]:
    """Every trained policy learns with its own algorithm's flow over shared rollouts.

    Raises:
        ValueError: the env is not multi-agent, or a policy's algorithm has no flow here.
    """
    setup = workers.multi_agent
    if setup is None:
        raise ValueError("multiagent_plan needs a multi-agent env (a PettingZoo parallel env, "
                         "e.g. 'MultiAgentArena-v0'); for a single-agent env use a built-in "
                         "algorithm's own plan.")
    trained = list(setup.policies_to_train)
    flows = []
    for policy_id in trained:
        policy_config = setup.entries[policy_id].config
        flow = POLICY_FLOWS.get(type(policy_config))
        if flow is None:
            raise ValueError(
                f"Policy {policy_id!r} uses {type(policy_config).__name__}, which "
                f"multiagent_plan cannot train yet; algorithms it composes: "
                f"{[cls.__name__ for cls in POLICY_FLOWS]}.")
        flows.append((policy_id, policy_config, flow))
    # On-policy algorithms need samples from their current weights: one lock-step source.
    rollouts = ParallelRollouts(workers, mode="bulk_sync")
    branches = rollouts.duplicate(len(flows)) if len(flows) > 1 else [rollouts]
    built = [flow(branch, workers, policy_id, policy_config)
             for branch, (policy_id, policy_config, flow) in zip(branches, flows)]
    if len(built) == 1:
        return built[0][0]
    # Each rotation pulls as many outputs from each branch as consume the same rollouts.
    slowest = max(inputs_per_output for _, inputs_per_output in built)
    weights = [max(1, round(slowest / inputs_per_output)) for _, inputs_per_output in built]
    return Concurrently([branch for branch, _ in built], mode="round_robin",
                        round_robin_weights=weights)


__all__ = ["POLICY_FLOWS", "SHARED_WORKER_FIELDS", "PolicyRows", "dqn_policy_flow",
           "multiagent_plan", "ppo_policy_flow", "resolve_policies"]
