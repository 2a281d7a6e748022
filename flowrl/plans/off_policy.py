"""What every replay-based algorithm (DQN, SAC, DDPG, TD3, Ape-X) shares: the replay settings
of its config, its buffers, and the two-flow plan that stores samples and trains on replays.

The flow (`replay_train_flow`) is two flows joined by `Concurrently(mode="round_robin")`:

- store: sample -> `StoreToReplay` -> `BroadcastWeights` to the remote workers;
- train: `Replay` (nothing until `learning_starts` rows are stored) -> `UpdatePriorities`
  (prioritized replay only) -> `TrainOneStep` -> `UpdateTargetNetwork`.

`training_intensity` (rows trained per env step sampled) sets the round-robin weights, so the
replay ratio is a property of the config and not of the machine's speed. An algorithm supplies
its TD-error function (for priorities) and says how its target network moves: DQN copies it
every `target_network_update_freq` env steps sampled (`target_update_by = "sampled"`, tau 1);
SAC, DDPG and TD3 move it by `tau` every `target_network_update_freq` optimizer updates
(`target_update_by = "updates"`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from flowrl.config import AlgorithmConfig
from flowrl.data import SampleBatch
from flowrl.iter import LocalIterator
from flowrl.ops import (
    DEFAULT_POLICY_ID,
    BroadcastWeights,
    Concurrently,
    PolicyRows,
    Replay,
    StoreToReplay,
    TrainOneStep,
    TrainResult,
    UpdatePriorities,
    UpdateTargetNetwork,
)
from flowrl.replay import MultiAgentReplayBuffer, PrioritizedReplayBuffer, ReplayBuffer
from flowrl.workers import WorkerSet

TDErrorFn = Callable[[Any, SampleBatch], np.ndarray]


@dataclass(frozen=True, kw_only=True)
class ReplayConfig(AlgorithmConfig):
    """The replay settings every replay-based algorithm's config shares."""

    num_workers: int = 0
    """Remote rollout workers; 0 samples in the driver, which is fastest for small envs."""
    rollout_fragment_length: int = 4
    """Env steps per env per sampling round (each round is one store)."""
    train_batch_size: int = 64
    """Rows per replayed batch (one gradient step each)."""
    learner_num_threads: int | None = 1
    """Intra-op threads of the learner: small batches train fastest on one."""
    min_steps_per_iteration: int = 1000
    """Env steps per `train()` call (one reported iteration)."""
    buffer_size: int = 50_000
    """Replay capacity in transitions."""
    store_buffer_in_checkpoints: bool = False
    """Save the replay buffer's contents with each Trainer checkpoint (large: every stored
    transition), so a restored run resumes with a full buffer; off: it starts empty."""
    learning_starts: int = 1000
    """Transitions stored before the first gradient step."""
    target_network_update_freq: int = 500
    """Env steps sampled between copies of the online network into the target network."""
    tau: float = 1.0
    """Each target update moves the target network this far toward the online one (1: copy)."""
    n_step: int = 3
    """Rewards summed into each transition's return before bootstrapping."""
    prioritized_replay: bool = True
    """Sample transitions in proportion to |TD error|^alpha (else uniformly)."""
    prioritized_replay_alpha: float = 0.6
    """How strongly priorities skew sampling; 0 is uniform."""
    prioritized_replay_beta: float = 0.4
    """Importance-weight exponent; 1 fully corrects the sampling bias."""
    prioritized_replay_eps: float = 1e-6
    """Added to every |TD error| priority so no transition becomes unreachable."""
    training_intensity: float | None = 16.0
    """Samples trained on per env step sampled; None trains one batch per sampling round."""

    target_update_by: ClassVar[str] = "sampled"
    """What `target_network_update_freq` counts: env steps "sampled", or optimizer "updates"."""

    @property
    def replayed_steps_per_row(self) -> int:
        """Env steps one replayed row trains on: 1 for a transition (R2D2's sequences: their
        trained steps), so `training_intensity` counts steps whatever a row holds."""
        return 1

    def _warn_if_batch_smaller_than_sample_round(self) -> None:
        """Nothing to warn about: replayed batches are drawn from the buffer, not from one
        sampling round, so a train batch smaller than a round is normal."""

    def _validate(self) -> None:
        super()._validate()
        for name in ("buffer_size", "n_step", "target_network_update_freq", "train_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {name}={getattr(self, name)}.")
        if self.learning_starts < 0:
            raise ValueError(f"learning_starts must be >= 0, got {self.learning_starts}.")
        if self.learning_starts > self.buffer_size:
            # Training starts once the buffer holds learning_starts rows: it never would.
            raise ValueError(
                f"learning_starts must be <= buffer_size: training waits for the replay buffer "
                f"to hold learning_starts transitions, which a buffer of buffer_size never "
                f"does, so the run would sample forever without training; got "
                f"learning_starts={self.learning_starts}, buffer_size={self.buffer_size}. "
                f"Raise buffer_size or lower learning_starts.")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1] (1 copies the online network into the "
                             f"target network), got tau={self.tau}.")
        if self.training_intensity is not None and not self.training_intensity > 0:
            raise ValueError(f"training_intensity must be > 0 (samples trained per env step), "
                             f"or None for one batch per round; got {self.training_intensity}.")
        for name in ("prioritized_replay_alpha", "prioritized_replay_beta",
                     "prioritized_replay_eps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {name}={getattr(self, name)}.")


def replay_policy_configs(workers: WorkerSet, config: ReplayConfig
                          ) -> dict[str, ReplayConfig] | None:
    """Trained policy id -> its own config, when the workers' policies are the config's
    `policies` (each then gets its own replay buffer and target updates); None for a
    single-agent env or shared-policy mode (every agent on "default_policy": one buffer).

    Raises:
        ValueError: a trained policy of an algorithm without replay (use `multiagent_plan`).
    """
    setup = getattr(workers, "multi_agent", None)
    if setup is None or set(setup.policy_ids) == {DEFAULT_POLICY_ID}:
        return None
    configs = {}
    for policy_id in setup.policies_to_train:
        policy_config = setup.entries[policy_id].config
        if not isinstance(policy_config, type(config)):
            raise ValueError(
                f"Policy {policy_id!r} uses {type(policy_config).__name__}, but this plan "
                f"trains {type(config).__name__} policies only; compose algorithms with "
                "flowrl.plans.multiagent.multiagent_plan, or leave it out of policies_to_train.")
        configs[policy_id] = policy_config
    return configs


def make_replay_buffer(config: ReplayConfig, policy_configs: dict[str, ReplayConfig] | None = None
                       ) -> ReplayBuffer | MultiAgentReplayBuffer:
    """The local replay buffer `config` asks for (prioritized or uniform); with
    `policy_configs`, one per policy, each as its own config asks."""
    if policy_configs:
        return MultiAgentReplayBuffer({
            policy_id: make_replay_buffer(dataclasses.replace(
                policy_config, seed=None if policy_config.seed is None
                else policy_config.seed + index))
            for index, (policy_id, policy_config) in enumerate(policy_configs.items())})
    if config.prioritized_replay:
        return PrioritizedReplayBuffer(
            config.buffer_size, alpha=config.prioritized_replay_alpha,
            beta=config.prioritized_replay_beta, eps=config.prioritized_replay_eps,
            seed=config.seed)
    return ReplayBuffer(config.buffer_size, seed=config.seed)


def replay_sizes(config: ReplayConfig, policy_configs: dict[str, ReplayConfig] | None = None
                 ) -> dict[str, Any]:
    """`Replay`'s `num_items` and `learning_starts`: the config's, or each policy's."""
    if not policy_configs:
        return {"num_items": config.train_batch_size, "learning_starts": config.learning_starts}
    return {"num_items": {pid: c.train_batch_size for pid, c in policy_configs.items()},
            "learning_starts": {pid: c.learning_starts for pid, c in policy_configs.items()}}


def uses_prioritized_replay(config: ReplayConfig,
                            policy_configs: dict[str, ReplayConfig] | None = None) -> bool:
    """True if the buffer (or some policy's buffer) is prioritized."""
    return any(c.prioritized_replay for c in (policy_configs or {"": config}).values())


def with_target_updates(flow: LocalIterator[Any], workers: WorkerSet, config: ReplayConfig,
                        policy_configs: dict[str, ReplayConfig] | None = None,
                        **options: Any) -> LocalIterator[Any]:
    """`flow` followed by `UpdateTargetNetwork`: the config's, or one per policy with that
    policy's `target_network_update_freq` and `tau`. `options` go to each (`by`,
    `learn_step`); `by` defaults to the config's `target_update_by`."""
    for policy_id, policy_config in (policy_configs or {DEFAULT_POLICY_ID: config}).items():
        settings = {"by": policy_config.target_update_by, "tau": policy_config.tau, **options}
        if policy_configs:
            settings["policy_id"] = policy_id
        flow = flow.for_each(UpdateTargetNetwork(
            workers, policy_config.target_network_update_freq, **settings))
    return flow


def round_robin_weights(config: ReplayConfig, steps_per_round: int | None = None) -> list[int]:
    """[store, train] items per rotation, so training consumes `training_intensity` samples
    per env step sampled (rounded to whole batches; None: one train batch per round).
    `steps_per_round` is the env steps one stored item holds (default: what `config`'s own
    rollout settings sample; a policy composed into another trainer's run passes the
    workers').

    Examples:
        >>> round_robin_weights(ReplayConfig(training_intensity=32, rollout_fragment_length=4))
        [1, 2]
        >>> round_robin_weights(ReplayConfig(training_intensity=4, rollout_fragment_length=4))
        [4, 1]
    """
    if config.training_intensity is None:
        return [1, 1]
    if steps_per_round is None:
        steps_per_round = config.steps_per_sample_round
    steps_per_batch = config.train_batch_size * config.replayed_steps_per_row
    batches_per_round = config.training_intensity * steps_per_round / steps_per_batch
    if batches_per_round >= 1:
        return [1, max(1, round(batches_per_round))]
    return [max(1, round(1 / batches_per_round)), 1]


def replay_train_flow(experiences: LocalIterator[Any], workers: WorkerSet, config: ReplayConfig,
                      policy_id: str | None = None, *, compute_td_errors: TDErrorFn,
                      rows_to_store: Callable[[Any], Any] | None = None
                      ) -> LocalIterator[TrainResult]:
    """A replay-based algorithm's flows for one policy: store its experiences, and
    replay-train them, in a rotation fixed by `training_intensity`.

    Args:
        experiences: the policy's experiences.
        workers: the rollout workers (the learner's policy is the local worker's).
        config: the policy's typed config.
        policy_id: the policy this flow trains, with a replay buffer of its own; None trains
            the workers' own trained policies (the default policy of a single-agent run, or
            every policy of a multi-agent run of this algorithm, each with its own buffer in a
            `MultiAgentReplayBuffer`).
        compute_td_errors: `(policy, batch) -> |TD error| per row`, for replay priorities.
        rows_to_store: an operator turning each batch of steps into the rows the buffer
            stores (R2D2: `SequenceBuilder`'s sequences); None stores the steps themselves.
    """
    policies = replay_policy_configs(workers, config) if policy_id is None else None
    buffer = make_replay_buffer(config, policies)
    policy_ids = None if policy_id is None else [policy_id]
    chosen = {} if policy_id is None else {"policy_id": policy_id}
    # Store flow: sample with the current exploration, remember, keep remote workers current.
    if policy_id is not None:
        experiences = experiences.for_each(PolicyRows(policy_id))
    if rows_to_store is not None:
        experiences = experiences.for_each(rows_to_store)
    store = (experiences.for_each(StoreToReplay(buffer, seed=config.seed))
             .for_each(BroadcastWeights(workers, policy_ids=policy_ids)))
    # Train flow: nothing until learning_starts transitions are stored.
    replayed = Replay(buffer, **replay_sizes(config, policies))
    if uses_prioritized_replay(config, policies):
        replayed = replayed.for_each(UpdatePriorities(
            workers, buffer, compute_td_errors=compute_td_errors, **chosen))
    train = replayed.for_each(TrainOneStep(workers, policy_ids=policy_ids))
    train = with_target_updates(train, workers, config, policies, **chosen)
    # training_intensity fixes how many replayed batches follow each stored one.
    return Concurrently([store, train], mode="round_robin", output_indexes=[1],
                        round_robin_weights=round_robin_weights(
                            config, workers.config.steps_per_sample_round))


def replay_steps_per_output(workers: WorkerSet, config: ReplayConfig) -> float:
    """Env steps `replay_train_flow` samples per training result it yields (balances
    composed flows)."""
    steps_per_round = workers.config.steps_per_sample_round
    store, train = round_robin_weights(config, steps_per_round)
    return store * steps_per_round / train
