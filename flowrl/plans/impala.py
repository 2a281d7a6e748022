"""IMPALA: importance-weighted actor-learner architecture with V-trace (Espeholt et al., 2018).

Paper: https://arxiv.org/abs/1802.01561

Implementation details:
1. Rollout workers sample asynchronously (`max_sample_requests_in_flight_per_worker` requests
   in flight each) with whatever weights they last received; nobody waits for the learner.
2. Optionally, each new fragment is mixed with `replay_proportion` replayed ones from a ring of
   the last `replay_buffer_num_slots` fragments (V-trace corrects for their older policy).
3. Fragments are concatenated to `train_batch_size` steps and put on the learner thread's queue;
   the learner trains on each batch `num_sgd_iter` times, cycling over `minibatch_buffer_size`
   batches, while the plan goes on sampling.
4. Loss: the policy gradient on V-trace advantages, the squared error to the V-trace targets
   `vs` (times `vf_loss_coeff`, halved), minus `entropy_coeff` times the entropy. The loss
   reshapes the env-major rows of the batch into time-major `[T, B]` arrays with
   T = `rollout_fragment_length`. Gymnasium semantics: a terminated step does not bootstrap; a
   truncated step bootstraps from V(new_obs) of its final observation (folded into its reward,
   see docs/vtrace.md); each stream's last row bootstraps from V(new_obs) of that row.
5. After each learner update, the worker(s) whose samples it trained on get the learner's
   newest weights; the weights are read and `put` at most once per learner version, and
   refreshed at most once every `broadcast_interval` updates.

Metrics reported: `info/learner/default_policy/{total_loss, policy_loss, vf_loss, entropy,
mean_rho, ...}`; `info/learner_thread/{queue_fill, inqueue_size, updates_per_s, num_updates,
weights_version, policy_lag_mean, policy_lag_max, learn_time_ms}`; the shared
`sampler/env_steps`, `learner/steps_trained`, `learner/weight_broadcasts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from flowrl.config import AlgorithmConfig
from flowrl.data import SampleBatch
from flowrl.iter import LocalIterator
from flowrl.ops import (
    Concurrently,
    Dequeue,
    Enqueue,
    LearnerThread,
    LockedLearnStep,
    ParallelRollouts,
    StartLearnerThread,
    TrainResult,
)
from flowrl.ops.learner_flows import (
    BroadcastToSourceWorkers,
    ConcatFragments,
    MixInReplay,
    PairWithDriver,
    RecordLearnerOutput,
    TagWeightsVersion,
    WorkerWeightVersions,
)
from flowrl.policy import PolicySpec
from flowrl.policy.vtrace import vtrace_targets_tf, vtrace_targets_torch
from flowrl.workers import WorkerSet


@dataclass(frozen=True, kw_only=True)
class IMPALAConfig(AlgorithmConfig):
    """IMPALA's hyperparameters (on top of the shared rollout and resource settings)."""

    num_workers: int = 2
    """Rollout workers sampling asynchronously; the learner trains in the driver."""
    num_envs_per_worker: int = 16
    """Envs stepped together per worker with batched inference."""
    rollout_fragment_length: int = 50
    """Steps per env per sample: the T of V-trace's time-major [T, B] arrays."""
    train_batch_size: int = 1600
    """Env steps per learner update (whole fragments: two workers' samples by default)."""
    lr: float = 1e-3
    """Adam learning rate; typical 1e-4 to 2e-3. On CartPole 1e-3 ends 2M steps solved in 5 of 5
    seeds; with 2e-3 the policy collapsed to one action in 4 of 5 (docs/plans/impala.md)."""
    grad_clip: float | None = 40.0
    """Global-norm gradient clipping; None disables it."""
    vf_loss_coeff: float = 0.5
    """Weight of the value loss; typical 0.25-1."""
    entropy_coeff: float = 0.01
    """Weight of the entropy bonus; typical 0-0.01. Without it the policy can collapse to one
    action and take a million steps to recover."""
    vtrace: bool = True
    """Correct for the workers' older policy with V-trace; False: plain n-step targets."""
    vtrace_clip_rho_threshold: float | None = 1.0
    """rho-bar, the cap on importance weights in the value targets; None: no cap."""
    vtrace_clip_pg_rho_threshold: float | None = 1.0
    """The cap on importance weights in the policy-gradient advantages; None: no cap."""
    num_sgd_iter: int = 1
    """Learner updates per train batch (the minibatch buffer replays each batch this often)."""
    minibatch_buffer_size: int = 1
    """Train batches the learner cycles over while replaying them (with num_sgd_iter > 1)."""
    learner_queue_size: int = 3
    """Train batches waiting for the learner; small keeps the policy lag low on few cores."""
    learner_queue_timeout: float = 300.0
    """Seconds the learner queue may stay full or empty before the plan fails saying why."""
    broadcast_interval: int = 1
    """Learner updates between two refreshes of the weights sent to the workers."""
    max_sample_requests_in_flight_per_worker: int = 2
    """Sample requests kept running on each worker, so it never waits for the driver."""
    replay_proportion: float = 0.0
    """Replayed fragments mixed in per new one (e.g. 0.5: one every other); 0 disables replay."""
    replay_buffer_num_slots: int = 100
    """Fragments the mix-in replay keeps (a ring, oldest replaced first)."""
    min_time_s_per_iteration: float = 1.0
    """Seconds of training per reported iteration."""
    learner_num_threads: int | None = 1
    """Intra-op threads of the learner; 1, since the learner shares the cores with the workers."""
    batch_mode: Literal["truncate_episodes", "complete_episodes"] = "truncate_episodes"
    """IMPALA needs fixed-length fragments ("truncate_episodes")."""

    def _validate(self) -> None:
        super()._validate()
        if self.batch_mode != "truncate_episodes":
            raise ValueError(
                f"{type(self).__name__} trains on time-major [T, B] fragments of exactly "
                f"rollout_fragment_length steps per env, so batch_mode must be "
                f"'truncate_episodes'; got batch_mode={self.batch_mode!r}.")
        for name in ("vf_loss_coeff", "entropy_coeff", "replay_proportion"):
            self._check_at_least(name, 0.0)
        for name in ("num_sgd_iter", "minibatch_buffer_size", "learner_queue_size",
                     "broadcast_interval", "max_sample_requests_in_flight_per_worker",
                     "replay_buffer_num_slots"):
            self._check_at_least(name, 1)
        if self.learner_queue_timeout <= 0:
            raise ValueError(
                f"learner_queue_timeout must be > 0 seconds; got "
                f"learner_queue_timeout={self.learner_queue_timeout!r}. Typical: 300.")
        for name in ("vtrace_clip_rho_threshold", "vtrace_clip_pg_rho_threshold"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 or None (no clipping); got {name}={value!r}.")

    def _warn_if_batch_smaller_than_sample_round(self) -> None:
        # Workers sample asynchronously: a train batch is built from single workers' samples.
        per_worker = self.num_envs_per_worker * self.rollout_fragment_length
        if self.train_batch_size < per_worker:
            self._warn(
                f"train_batch_size={self.train_batch_size} is smaller than one worker's sample: "
                f"num_envs_per_worker={self.num_envs_per_worker} * rollout_fragment_length="
                f"{self.rollout_fragment_length} = {per_worker} steps, so each learner update "
                f"trains on at least {per_worker} steps. Lower rollout_fragment_length or raise "
                f"train_batch_size.")


# ---- the IMPALA loss -------------------------------------------------------------------------


def impala_loss_torch(policy: Any, batch: dict) -> tuple[Any, dict]:
    """IMPALA's loss in PyTorch: V-trace policy gradient, value loss to `vs`, entropy bonus."""
    config = policy.config
    dist_inputs, values = policy.model_outputs(batch)
    dist = policy.dist_class(dist_inputs)
    targets = vtrace_targets_torch(policy, batch, batch["action_logp"],
                                   dist.logp(batch["actions"]), values)
    policy_loss = -(targets["target_logp"] * targets["pg_advantages"]).mean()
    vf_loss = 0.5 * ((targets["values"] - targets["vs"]) ** 2).mean()
    entropy = dist.entropy().mean()
    total = (policy_loss + config.vf_loss_coeff * vf_loss
             - policy.get_coefficient("entropy_coeff") * entropy)
    return total, {"total_loss": total, "policy_loss": policy_loss, "vf_loss": vf_loss,
                   "entropy": entropy, "mean_rho": targets["rhos"].mean(),
                   "mean_vs": targets["vs"].mean()}


def impala_loss_tf(policy: Any, batch: dict) -> tuple[Any, dict]:
    """IMPALA's loss in TensorFlow, the same terms as `impala_loss_torch`."""
    import tensorflow as tf

    config = policy.config
    dist_inputs, values = policy.model_outputs(batch)
    dist = policy.dist_class(dist_inputs)
    targets = vtrace_targets_tf(policy, batch, batch["action_logp"],
                                dist.logp(batch["actions"]), values)
    policy_loss = -tf.reduce_mean(targets["target_logp"] * targets["pg_advantages"])
    vf_loss = 0.5 * tf.reduce_mean(tf.square(targets["values"] - targets["vs"]))
    entropy = tf.reduce_mean(dist.entropy())
    total = (policy_loss + config.vf_loss_coeff * vf_loss
             - policy.get_coefficient("entropy_coeff") * entropy)
    return total, {"total_loss": total, "policy_loss": policy_loss, "vf_loss": vf_loss,
                   "entropy": entropy, "mean_rho": tf.reduce_mean(targets["rhos"]),
                   "mean_vs": tf.reduce_mean(targets["vs"])}


IMPALA_POLICY = PolicySpec(name="impala", torch_loss=impala_loss_torch, tf_loss=impala_loss_tf,
                           postprocess=None, coefficients=("entropy_coeff",),
                           config_class=IMPALAConfig, time_major=True,
                           recurrent_loss=True)
"""IMPALA's policy: sampled actions, raw fragments (no GAE), the V-trace loss."""


# ---- the flow ---------------------------------------------------------------------------------


def fragments_with_sources(workers: WorkerSet, config: IMPALAConfig
                           ) -> LocalIterator[tuple[Any, SampleBatch]]:
    """Every worker's fragments as they finish, each paired with the worker that sampled it
    (None: the driver, which samples itself when there are no remote workers)."""
    if workers.remote_workers():
        # Workers sample with the weights they have; several requests in flight each.
        return ParallelRollouts(
            workers, mode="async",
            num_async=config.max_sample_requests_in_flight_per_worker).zip_with_source_actor()
    return ParallelRollouts(workers).for_each(PairWithDriver())


@dataclass
class LearnerFlows:
    """The pieces a learner-thread flow is built from (shared by IMPALA and APPO)."""

    learner: LearnerThread
    learn_step: LockedLearnStep
    versions: WorkerWeightVersions
    enqueue: LocalIterator
    dequeue: LocalIterator


def build_learner_flows(fragments: LocalIterator[tuple[Any, SampleBatch]], workers: WorkerSet,
                        config: IMPALAConfig, policy_id: str | None = None) -> LearnerFlows:
    """(worker, fragment) pairs -> (mix-in replay) -> train batches -> learner thread -> its
    outputs, for the policy `policy_id` (None: the workers' own trained policies).

    Returns the enqueue flow and the dequeue flow (recorded, not yet broadcast), for a flow to
    finish and join with `Concurrently`.
    """
    setup = getattr(workers, "multi_agent", None)
    policy_ids = ([policy_id] if policy_id is not None
                  else None if setup is None else list(setup.policies_to_train))
    learn_step = LockedLearnStep(workers, policy_ids=None if policy_id is None else policy_ids)
    learner = LearnerThread(
        workers, learn=learn_step, in_queue_size=config.learner_queue_size,
        num_sgd_iter=config.num_sgd_iter, minibatch_buffer_size=config.minibatch_buffer_size,
        timeout_s=config.learner_queue_timeout,
        **({} if policy_id is None else {"policy_id": policy_id}))
    start = StartLearnerThread(learner)
    versions = WorkerWeightVersions()
    # Each fragment remembers which weights sampled it (the policy lag).
    tagged = fragments.for_each(TagWeightsVersion(versions, learn_step))
    if config.replay_proportion > 0:
        tagged = tagged.combine(MixInReplay(
            num_slots=config.replay_buffer_num_slots,
            replay_proportion=config.replay_proportion, seed=config.seed))
    train_batches = tagged.combine(ConcatFragments(
        min_batch_size=config.train_batch_size, policy_ids=policy_ids))
    # The learner thread trains while the plan keeps sampling.
    enqueue = train_batches.for_each(Enqueue(learner.inqueue, check=start))
    dequeue = Dequeue(learner.outqueue, check=start).for_each(
        RecordLearnerOutput(learner, learn_step))
    return LearnerFlows(learner, learn_step, versions, enqueue, dequeue)


def impala_flow(fragments: LocalIterator[tuple[Any, SampleBatch]], workers: WorkerSet,
                config: IMPALAConfig, policy_id: str | None = None
                ) -> LocalIterator[TrainResult]:
    """IMPALA's training flow for one policy: its fragments feed a learner thread; weights go
    back to the workers whose samples were trained on.

    Args:
        fragments: the policy's fragments, each paired with the rollout worker that sampled
            it (`fragments_with_sources`).
        workers: the rollout workers (the learner's policy is the local worker's).
        config: the policy's typed config.
        policy_id: the policy this flow trains; None trains the workers' own trained policies
            (the default policy of a single-agent run).
    """
    flows = build_learner_flows(fragments, workers, config, policy_id)
    # Each learner update sends fresh weights to the worker(s) that sent its batch.
    updated = flows.dequeue.for_each(BroadcastToSourceWorkers(
        workers, flows.learn_step, flows.versions,
        broadcast_interval=config.broadcast_interval))
    return Concurrently([flows.enqueue, updated], mode="async", output_indexes=[1])


def learner_steps_per_output(workers: WorkerSet, config: IMPALAConfig) -> float:
    """Env steps a learner-thread flow consumes per output: one train batch gives
    `num_sgd_iter` learner updates (balances composed flows)."""
    del workers
    return config.train_batch_size / config.num_sgd_iter


def impala_plan(workers: WorkerSet, config: IMPALAConfig) -> LocalIterator[TrainResult]:
    """IMPALA as a dataflow: async sampling feeds a learner thread; weights go back to the
    workers whose samples were trained on."""
    return impala_flow(fragments_with_sources(workers, config), workers, config)
