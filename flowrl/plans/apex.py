"""Ape-X: distributed prioritized experience replay (Horgan et al., 2018), with DQN's learner.

Paper: https://arxiv.org/abs/1803.00933

Implementation details:
1. Three flows joined by `Concurrently(mode="async")`:
   - store: asynchronous rollouts (2 sample requests in flight per worker) -> initial
     priorities on the workers (`worker_side_prioritization`) -> `WaitForLearner` (holds
     sampling while it runs ahead of `training_intensity`) -> `StoreToReplay` into a random
     one of `num_replay_buffer_shards` replay actors -> `UpdateWorkerWeights`: a worker gets the
     learner's weights once it has sampled `max_weight_sync_delay` steps since its last update
     (the weights are `put` once per learner version, however many workers receive them);
   - replay: `Replay` from the replay actors (4 requests in flight per actor) ->
     `WaitForSamples` (holds the learner while it would get ahead of `training_intensity`)
     -> `Enqueue` to the learner thread;
   - train: `Dequeue` the learner's outputs -> `UpdatePriorities` on the shard each batch came
     from -> a `TrainResult` -> `RecordReplayRatio` -> `UpdateTargetNetwork(by="trained")`.
2. The learner thread trains DQN's loss (double Q, dueling, n-step, Huber, importance
   weights) and computes the batch's TD errors with the weights it trains (as in the loss step).
3. Each rollout worker explores with a constant epsilon: 0.4^(1 + 7 i / (N - 1)) for worker
   i = 0..N-1 of N (0.4 with one worker).
4. Initial priorities on the workers bootstrap from the worker's online network (its target
   network is never synced); the learner's priorities use the target network.
5. Multi-agent: in shared-policy mode all agents' rows share one replay memory. With policies
   of their own (`policies`), the workers keep the trained policies' rows
   (`SelectExperiences`) and give them initial priorities each with its policy's network;
   every replay actor holds one buffer per policy (each sized by that policy's config);
   the learner trains each policy on its rows of a replayed `MultiAgentBatch` and returns
   its TD errors, which go back to that policy's buffer; workers get all trained policies'
   weights; each policy's target network updates every `target_network_update_freq` samples
   trained (counted over all policies).
6. `training_intensity` (rows trained per env step sampled; default 5, what the free-running
   learner reached on a quiet 2-core machine) is counted from `learning_starts` and held in
   both directions, so the replay ratio does not drift with the machine's load; None lets the
   learner train as fast as it can and sampling run as fast as the workers can (as before).
   One learner thread trains every policy, so the top-level setting governs them all.

Metrics reported: `info/learner/default_policy/{total_loss, mean_q, min_q, max_q,
mean_td_error, grad_gnorm, cur_lr}`, plus the shared `sampler/env_steps`,
`learner/steps_trained`, `learner/target_updates`, `learner/weight_broadcasts`,
`replay/rows_added`, `replay/priority_updates`, `replay/rows_released` (with
`training_intensity`), and `info/learner/replay_ratio` (rows trained per env step sampled
since `learning_starts`, cumulative). Episode statistics come from the
lowest-epsilon third of the workers (at least one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from flowrl.iter import LocalIterator
from flowrl.ops import (
    Concurrently,
    Dequeue,
    Enqueue,
    LearnerThread,
    LockedLearnStep,
    ParallelRollouts,
    RecordSampledSteps,
    Replay,
    SelectExperiences,
    StartLearnerThread,
    StoreToReplay,
    TrainResult,
    UpdatePriorities,
)
from flowrl.ops.distributed_replay import (
    LearnerOutputToResult,
    LearnWithTDErrors,
    UpdateWorkerWeights,
    WorkerSidePriorities,
)
from flowrl.ops.replay_ratio import RecordReplayRatio, WaitForLearner, WaitForSamples
from flowrl.plans.dqn import (
    DQNConfig,
    compute_online_td_errors,
    compute_td_errors,
    dqn_loss_tf,
    dqn_loss_torch,
    n_step_postprocess,
    replay_policy_configs,
    uses_prioritized_replay,
    with_target_updates,
)
from flowrl.plans.off_policy import TDErrorFn
from flowrl.policy import EpsilonGreedy, PolicySpec, q_model
from flowrl.workers import WorkerSet
from flowrl.workers.replay_actor import create_replay_actors

# Sample requests in flight per rollout worker, and replay requests per replay actor.
ROLLOUTS_IN_FLIGHT_PER_WORKER = 2
REPLAYS_IN_FLIGHT_PER_SHARD = 4
# Replayed batches waiting for the learner thread.
LEARNER_QUEUE_SIZE = 8


@dataclass(frozen=True, kw_only=True)
class ApexConfig(DQNConfig):
    """Ape-X's hyperparameters: DQN's learner, replay actors and asynchronous workers."""

    num_workers: int = 2
    """Remote rollout workers, each with its own constant epsilon."""
    num_cpus_per_worker: float = 0.5
    """CPUs reserved per rollout worker."""
    rollout_fragment_length: int = 50
    """Env steps per env per sample request."""
    train_batch_size: int = 128
    """Replayed transitions per learner update: twice DQN's (fewer, larger learner steps)."""
    buffer_size: int = 100_000
    """Replay capacity in transitions, split equally over the shards."""
    learning_starts: int = 2000
    """Transitions stored (over all shards) before the learner's first step."""
    target_network_update_freq: int = 16_000
    """Samples trained on between copies of the online network into the target network."""
    training_intensity: float | None = 5.0
    """Rows trained per env step sampled, held both ways by the plan; None: learner runs free."""
    num_replay_buffer_shards: int = 2
    """Replay actors the buffer is split over (each runs with num_cpus=0)."""
    max_weight_sync_delay: int = 400
    """Env steps a worker samples between weight updates from the learner."""
    worker_side_prioritization: bool = True
    """Rollout workers compute the initial priorities of their transitions."""

    def _validate(self) -> None:
        super()._validate()  # training_intensity > 0 or None
        check_distributed_replay_settings(self)


def check_distributed_replay_settings(config: Any) -> None:
    """Checks the settings every Ape-X plan's config shares (shards, workers, weight syncs,
    worker-side priorities), each error naming the field and the fix."""
    shards = config.num_replay_buffer_shards
    if shards < 1:
        raise ValueError(f"num_replay_buffer_shards must be at least 1, got {shards}.")
    if config.buffer_size // shards < -(-config.learning_starts // shards):
        raise ValueError(
            f"Each of the num_replay_buffer_shards={shards} replay shards holds "
            f"buffer_size // {shards} = {config.buffer_size // shards} transitions but waits "
            f"for learning_starts / {shards} = {-(-config.learning_starts // shards)} before "
            f"replaying, so the learner would never start; got buffer_size="
            f"{config.buffer_size}, learning_starts={config.learning_starts}. Raise "
            "buffer_size or lower learning_starts.")
    if config.num_workers < 1:
        raise ValueError(
            f"Ape-X samples asynchronously on remote rollout workers, so it needs "
            f"num_workers >= 1; got num_workers={config.num_workers}. Set num_workers >= 1, "
            f"or use the single-process algorithm (DQN, DDPG) to sample in the driver.")
    if config.max_weight_sync_delay < 1:
        raise ValueError(f"max_weight_sync_delay must be at least 1 env step, got "
                         f"{config.max_weight_sync_delay}.")
    if config.worker_side_prioritization and not config.prioritized_replay:
        raise ValueError("worker_side_prioritization needs prioritized_replay=True (the "
                         "workers compute initial priorities); set one of them accordingly.")


def apex_epsilon(config: ApexConfig, action_space: gym.Space, *, worker_index: int = 0,
                 num_workers: int = 0, seed: int | None = None) -> EpsilonGreedy:
    """Ape-X's constant per-worker epsilon: 0.4^(1 + 7 i / (N - 1)) for worker i of N.

    Worker indexes start at 1 (0 is the learner, which does not sample and gets
    `exploration_final_eps`).

    Examples:
        >>> [round(apex_epsilon(None, None, worker_index=i, num_workers=3).epsilon, 4)
        ...  for i in (1, 2, 3)]
        [0.4, 0.0162, 0.0007]
    """
    if worker_index < 1 or num_workers < 1:
        return EpsilonGreedy.fixed(config.exploration_final_eps, seed=seed)
    position = (worker_index - 1) / (num_workers - 1) if num_workers > 1 else 0.0
    return EpsilonGreedy.fixed(0.4 ** (1 + 7 * position), seed=seed)


APEX_POLICY = PolicySpec(name="apex", torch_loss=dqn_loss_torch, tf_loss=dqn_loss_tf,
                         model=q_model, action_selection=apex_epsilon,
                         postprocess=n_step_postprocess, target_network=True,
                         config_class=ApexConfig)
"""Ape-X's policy: DQN's network and loss, with a constant epsilon per worker."""


def replay_actor_options(config: DQNConfig) -> dict[str, Any]:
    """The `ReplayActor` settings (over all shards) a config asks for."""
    return {"capacity": config.buffer_size, "num_items": config.train_batch_size,
            "learning_starts": config.learning_starts, "prioritized": config.prioritized_replay,
            "alpha": config.prioritized_replay_alpha, "beta": config.prioritized_replay_beta,
            "eps": config.prioritized_replay_eps}


def max_sampling_lead(config: ApexConfig) -> int:
    """Env steps sampling may run ahead of `training_intensity` (`WaitForLearner`): room for a
    full learner queue and every worker's sample requests in flight, so that neither the
    learner nor the workers idle each time the gate opens.

    Examples:
        >>> max_sampling_lead(ApexConfig())  # 8 * 128 / 5 + 2 * 2 * 50
        405
    """
    queued_rows = LEARNER_QUEUE_SIZE * config.train_batch_size
    in_flight = (ROLLOUTS_IN_FLIGHT_PER_WORKER * config.num_workers
                 * config.num_envs_per_worker * config.rollout_fragment_length)
    return math.ceil(queued_rows / config.training_intensity) + in_flight


def apex_plan(workers: WorkerSet, config: ApexConfig) -> LocalIterator[TrainResult]:
    """Ape-X as a dataflow: rollouts fan into replay actors, replay feeds a DQN learner
    thread (`distributed_replay_plan` with DQN's TD errors)."""
    return distributed_replay_plan(workers, config, compute_td_errors=compute_td_errors,
                                   compute_online_td_errors=compute_online_td_errors)


def distributed_replay_plan(workers: WorkerSet, config: Any, *,
                            compute_td_errors: TDErrorFn,
                            compute_online_td_errors: TDErrorFn) -> LocalIterator[TrainResult]:
    """Ape-X's dataflow for any replay-based learner: rollouts fan into replay actors, replay
    feeds a learner thread, priorities go back to the shards.

    Args:
        workers: remote rollout workers (at least one) and the learner's local worker.
        config: an Ape-X config (`ApexConfig`, `ApexDDPGConfig`): replay, shard and sync
            settings, `training_intensity`.
        compute_td_errors: `(policy, batch) -> |TD error| per row` with the target networks:
            the learner's new priorities.
        compute_online_td_errors: the same bootstrapping from the online networks: the
            workers' initial priorities (their target networks are never synced).
    """
    if not workers.remote_workers():
        raise ValueError("Ape-X samples asynchronously on remote rollout workers, but "
                         "num_workers=0; set num_workers >= 1, or use DQN to sample in the "
                         "driver.")
    # Episode statistics come from the lowest-epsilon third of the workers (at least one):
    # the exploring workers' short episodes would hide what the learned policy does.
    num_reported = max(1, -(-config.num_workers // 3))
    workers.reported_worker_indexes = set(
        range(config.num_workers - num_reported + 1, config.num_workers + 1))
    # Policies of their own: a buffer per trained policy in every shard, each per its config.
    policies = replay_policy_configs(workers, config)
    prioritized = uses_prioritized_replay(config, policies)
    replay_actors = create_replay_actors(
        config.num_replay_buffer_shards, **replay_actor_options(config), seed=config.seed,
        policies=None if policies is None else {
            policy_id: replay_actor_options(policy_config)
            for policy_id, policy_config in policies.items()})
    # One lock between the learner thread and the plan's weight reads and target updates.
    learn_step = LockedLearnStep(
        workers, learn=LearnWithTDErrors(workers, compute_td_errors=compute_td_errors,
                                         with_td_errors=prioritized))
    learner = LearnerThread(workers, learn=learn_step, in_queue_size=LEARNER_QUEUE_SIZE)
    # The thread starts on the plan's first step, so building or pickling a plan starts none.
    start_learner = StartLearnerThread(learner)
    # Store flow: async samples (with initial priorities) into a random shard each.
    rollouts = ParallelRollouts(workers, mode="raw")
    if policies is not None:  # only the trained policies' rows are stored
        rollouts = rollouts.for_each(SelectExperiences(list(policies)))
    if any(c.worker_side_prioritization for c in (policies or {"": config}).values()):
        rollouts = rollouts.for_each(
            WorkerSidePriorities(compute_td_errors=compute_online_td_errors))
    store = rollouts.gather_async(num_async=ROLLOUTS_IN_FLIGHT_PER_WORKER).zip_with_source_actor()
    # training_intensity holds both sides to one replay ratio: sampling waits for the learner
    # here, the learner waits for samples in the replay flow (None: both run free).
    intensity = config.training_intensity
    if intensity is not None:
        store = store.for_each(WaitForLearner(
            training_intensity=intensity, learning_starts=config.learning_starts,
            max_steps_ahead=max_sampling_lead(config), timeout_s=learner.timeout_s))
    store = (store.for_each(RecordSampledSteps())
             .for_each(StoreToReplay(replay_actors, seed=config.seed))
             .for_each(UpdateWorkerWeights(learn_step,
                                           max_weight_sync_delay=config.max_weight_sync_delay)))
    # Replay flow: batches from the shards, each with the actor it came from, to the learner.
    replay = Replay(replay_actors, num_async=REPLAYS_IN_FLIGHT_PER_SHARD)
    if intensity is not None:
        replay = replay.for_each(WaitForSamples(
            training_intensity=intensity, learning_starts=config.learning_starts,
            timeout_s=learner.timeout_s))
    replay = replay.for_each(Enqueue(learner.inqueue, check=start_learner))
    # Train flow: the learner's results; priorities go back to the batch's shard.
    train = Dequeue(learner.outqueue, check=start_learner)
    if prioritized:
        train = train.for_each(UpdatePriorities(workers, replay_actors))
    train = (train.for_each(LearnerOutputToResult())
             .for_each(RecordReplayRatio(learning_starts=config.learning_starts)))
    train = with_target_updates(train, workers, config, policies, by="trained",
                                learn_step=learn_step)
    return Concurrently([store, replay, train], mode="async", output_indexes=[2])
