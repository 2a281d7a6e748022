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

import collections
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from flowrl.config import AlgorithmConfig
from flowrl.data import MultiAgentBatch, SampleBatch, concat_samples
from flowrl.iter import GraphLink, LocalIterator, NonBlockingStep, executor
from flowrl.ops import (
    NUM_WEIGHT_BROADCASTS_COUNTER,
    STEPS_SAMPLED_COUNTER,
    STEPS_TRAINED_COUNTER,
    Concurrently,
    Dequeue,
    Enqueue,
    LearnerOutput,
    LearnerThread,
    LockedLearnStep,
    ParallelRollouts,
    SelectExperiences,
    StartLearnerThread,
    TrainResult,
)
from flowrl.ops.graph_links import workers_graph_link
from flowrl.ops.learner_thread import stats_by_policy
from flowrl.policy import PolicySpec
from flowrl.workers import WorkerSet

LEARNER_THREAD_INFO = "learner_thread"
"""Key of the learner thread's statistics in the metrics context's `info` (and result dict)."""

_LAG_WINDOW = 100  # policy lags averaged over the last this many fragments


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
    lr: float = 2e-3
    """Adam learning rate; typical 1e-4 to 2e-3 (for long runs decay it with lr_schedule)."""
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


# ---- V-trace targets from a batch of fragments, per framework ------------------------------------


def vtrace_targets_torch(policy: Any, batch: dict, behaviour_logp: Any, target_logp: Any,
                         values: Any) -> dict[str, Any]:
    """Time-major V-trace targets for a batch of env-major fragments, in PyTorch.

    `behaviour_logp`, `target_logp` and `values` are per-row tensors ([N]); the rows are
    reshaped to `[T, B]` with T = `config.rollout_fragment_length`. Returns time-major
    `target_logp`, `values`, `vs`, `pg_advantages` and `rhos` (the latter three without
    gradient). With `config.vtrace` False the importance weights are 1 (no correction).
    """
    import torch

    from flowrl.policy.vtrace import vtrace_torch

    config = policy.config
    length = config.rollout_fragment_length
    rows = batch["rewards"].shape[0]
    if rows % length:
        raise ValueError(_not_whole_fragments(rows, length))
    terminateds, truncateds = batch["terminateds"], batch["truncateds"]
    device = batch["rewards"].device  # the learner's (a GPU with num_gpus > 0)
    last_row = torch.arange(rows, device=device) % length == length - 1
    needs_value = last_row | (truncateds & ~terminateds)
    index = torch.nonzero(needs_value).squeeze(1)
    with torch.no_grad():
        _, bootstrap_rows = policy.model(batch["new_obs"][index])
    next_values = torch.zeros(rows, dtype=torch.float32, device=device).index_put(
        (index,), bootstrap_rows)
    gamma = float(config.gamma)
    rewards = batch["rewards"]
    rewards = torch.where(truncateds & ~terminateds, rewards + gamma * next_values, rewards)
    discounts = torch.where(terminateds | truncateds, 0.0, gamma)

    def time_major(tensor: Any) -> Any:
        return tensor.reshape(rows // length, length).transpose(0, 1)

    terminated_last = time_major(terminateds)[-1]
    bootstrap_value = torch.where(terminated_last, 0.0, time_major(next_values)[-1])
    if not config.vtrace:
        behaviour_logp = target_logp
    behaviour_logp, target_logp, values = (time_major(t) for t in (behaviour_logp, target_logp,
                                                                   values))
    vs, pg_advantages = vtrace_torch(
        behaviour_logp, target_logp, time_major(rewards), values, bootstrap_value,
        time_major(discounts), clip_rho_threshold=_threshold(config, "vtrace_clip_rho_threshold"),
        clip_pg_rho_threshold=_threshold(config, "vtrace_clip_pg_rho_threshold"))
    rhos = torch.exp(target_logp.detach() - behaviour_logp.detach())
    return {"target_logp": target_logp, "values": values, "vs": vs,
            "pg_advantages": pg_advantages, "rhos": rhos, "behaviour_logp": behaviour_logp}


def vtrace_targets_tf(policy: Any, batch: dict, behaviour_logp: Any, target_logp: Any,
                      values: Any) -> dict[str, Any]:
    """`vtrace_targets_torch` in TensorFlow (works inside `tf.function`, batch size unknown)."""
    import tensorflow as tf

    from flowrl.policy.vtrace import vtrace_tf

    config = policy.config
    length = config.rollout_fragment_length
    rows = tf.shape(batch["rewards"])[0]
    check = tf.debugging.assert_equal(
        rows % length, 0, message=_not_whole_fragments("the batch's", length))
    terminateds, truncateds = batch["terminateds"], batch["truncateds"]
    with tf.control_dependencies([check]):
        last_row = tf.equal(tf.range(rows) % length, length - 1)
    bootstraps_at_truncation = tf.logical_and(truncateds, tf.logical_not(terminateds))
    index = tf.where(tf.logical_or(last_row, bootstraps_at_truncation))
    _, bootstrap_rows = policy.model(tf.gather_nd(batch["new_obs"], index))
    next_values = tf.stop_gradient(
        tf.scatter_nd(index, bootstrap_rows, tf.cast(rows, tf.int64)[None]))
    gamma = float(config.gamma)
    rewards = batch["rewards"]
    rewards = tf.where(bootstraps_at_truncation, rewards + gamma * next_values, rewards)
    discounts = tf.where(tf.logical_or(terminateds, truncateds), 0.0, gamma)

    def time_major(tensor: Any) -> Any:
        return tf.transpose(tf.reshape(tensor, [-1, length]))

    bootstrap_value = tf.where(time_major(terminateds)[-1], 0.0, time_major(next_values)[-1])
    if not config.vtrace:
        behaviour_logp = target_logp
    behaviour_logp, target_logp, values = (time_major(t) for t in (behaviour_logp, target_logp,
                                                                   values))
    vs, pg_advantages = vtrace_tf(
        behaviour_logp, target_logp, time_major(rewards), values, bootstrap_value,
        time_major(discounts), clip_rho_threshold=_threshold(config, "vtrace_clip_rho_threshold"),
        clip_pg_rho_threshold=_threshold(config, "vtrace_clip_pg_rho_threshold"))
    rhos = tf.exp(tf.stop_gradient(target_logp - behaviour_logp))
    return {"target_logp": target_logp, "values": values, "vs": vs,
            "pg_advantages": pg_advantages, "rhos": rhos, "behaviour_logp": behaviour_logp}


def _threshold(config: Any, name: str) -> float | None:
    value = getattr(config, name)
    return None if value is None else float(value)


def _not_whole_fragments(rows: Any, length: int) -> str:
    return (f"V-trace needs whole fragments of rollout_fragment_length={length} rows per env "
            f"stream, but {rows} rows are not a multiple of it; train on batches built from "
            "whole sampled fragments (batch_mode='truncate_episodes', no row shuffling).")


# ---- the IMPALA loss -------------------------------------------------------------------------


def impala_loss_torch(policy: Any, batch: dict) -> tuple[Any, dict]:
    """IMPALA's loss in PyTorch: V-trace policy gradient, value loss to `vs`, entropy bonus."""
    config = policy.config
    dist_inputs, values = policy.model(batch["obs"])
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
    dist_inputs, values = policy.model(batch["obs"])
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
                           config_class=IMPALAConfig, time_major=True)
"""IMPALA's policy: sampled actions, raw fragments (no GAE), the V-trace loss."""


# ---- where samples came from, and which weights sampled them ----------------------------------


@dataclass
class FragmentSource:
    """The rollout worker that sampled a fragment, and the learner version it last received."""

    worker: Any
    weights_version: int


@dataclass(eq=False)
class TrainBatchSource:
    """The fragments one train batch was built from; travels through the learner thread."""

    fragments: tuple[FragmentSource, ...]
    counted: bool = field(default=False)
    """Set once the plan has counted this batch's steps and lag (it comes back per SGD pass)."""

    def workers(self) -> list[Any]:
        """The distinct workers (None for the driver) whose fragments are in the batch."""
        distinct: list[Any] = []
        for fragment in self.fragments:
            if not any(fragment.worker is known for known in distinct):
                distinct.append(fragment.worker)
        return distinct


class WorkerWeightVersions:
    """Which learner version of the weights each rollout worker was last sent (0 at start)."""

    def __init__(self) -> None:
        self._versions: dict[int, tuple[Any, int]] = {}

    def get(self, worker: Any) -> int:
        """The version last sent to `worker` (0: the weights synced at start)."""
        entry = self._versions.get(id(worker))
        return entry[1] if entry is not None and entry[0] is worker else 0

    def set(self, worker: Any, version: int) -> None:
        """Records that `worker` was sent the weights of learner `version`."""
        self._versions[id(worker)] = (worker, version)

    def __getstate__(self) -> dict[str, Any]:
        return {"_versions": {}}  # handles do not outlive a run

    def __repr__(self) -> str:
        return "WorkerWeightVersions()"


class TagWeightsVersion:
    """Pairs each sampled fragment with its worker and the weights version it sampled with.

    Consumes: (worker, SampleBatch), worker None for the driver. Yields: (FragmentSource,
    SampleBatch).
    Metrics: none.
    """

    def __init__(self, versions: WorkerWeightVersions, learn_step: LockedLearnStep) -> None:
        self.versions = versions
        self.learn_step = learn_step

    def __call__(self, item: tuple[Any, SampleBatch]) -> tuple[FragmentSource, SampleBatch]:
        worker, batch = item
        version = self.learn_step.version if worker is None else self.versions.get(worker)
        return FragmentSource(worker, version), batch

    def __repr__(self) -> str:
        return "TagWeightsVersion()"


class PairWithDriver:
    """Pairs batches the driver sampled itself (num_workers=0) with the source None."""

    def __call__(self, batch: SampleBatch) -> tuple[None, SampleBatch]:
        return None, batch

    def __repr__(self) -> str:
        return "PairWithDriver()"


class MixInReplay:
    """Follows each new fragment with `replay_proportion` replayed ones (on average).

    Keeps the last `num_slots` fragments in a ring. With proportion p, each new fragment is
    followed by floor(p) replayed fragments and one more with probability p - floor(p), drawn
    uniformly from the ring. Use with `.combine()`.

    Consumes: (FragmentSource, SampleBatch). Yields: the same item, then replayed items.
    Metrics: none.

    Examples:
        >>> mix = MixInReplay(num_slots=2, replay_proportion=1.0, seed=0)
        >>> mix("a")
        ['a', 'a']
        >>> len(mix("b")), mix("c")[0]
        (2, 'c')
    """

    def __init__(self, *, num_slots: int, replay_proportion: float, seed: int | None = None
                 ) -> None:
        if num_slots < 1:
            raise ValueError(f"MixInReplay needs num_slots >= 1, got {num_slots=}.")
        if replay_proportion < 0:
            raise ValueError(f"MixInReplay needs replay_proportion >= 0, got "
                             f"{replay_proportion=}.")
        self.num_slots = num_slots
        self.replay_proportion = replay_proportion
        self.rng = np.random.default_rng(seed)
        self.slots: list[Any] = []
        self.next_slot = 0

    def __call__(self, item: Any) -> list[Any]:
        output = [item]
        if len(self.slots) < self.num_slots:
            self.slots.append(item)
        else:
            self.slots[self.next_slot] = item
            self.next_slot = (self.next_slot + 1) % self.num_slots
        whole, fraction = divmod(self.replay_proportion, 1.0)
        count = int(whole) + int(self.rng.random() < fraction)
        output.extend(self.slots[int(i)] for i in self.rng.integers(len(self.slots), size=count))
        return output

    def __repr__(self) -> str:
        return (f"MixInReplay(num_slots={self.num_slots}, "
                f"replay_proportion={self.replay_proportion})")


class ConcatFragments:
    """Concatenates (source, fragment) pairs until `min_batch_size` steps; use with `.combine()`.

    Consumes: (FragmentSource, SampleBatch or MultiAgentBatch). Yields: (TrainBatchSource,
    batch) of at least `min_batch_size` env steps, its rows the fragments' rows in order
    (env-major fragments stay whole, so the loss can reshape them time-major). Multi-agent
    fragments are concatenated per policy (env steps summed), keeping only `policy_ids`'
    rows when given (the policies the learner trains).
    Metrics: none.

    Examples:
        >>> op = ConcatFragments(min_batch_size=4)
        >>> op((FragmentSource(None, 0), SampleBatch({"x": np.arange(3)})))
        []
        >>> [len(b) for _, b in op((FragmentSource(None, 0), SampleBatch({"x": np.arange(3)})))]
        [6]
    """

    def __init__(self, min_batch_size: int, *, policy_ids: list[str] | None = None) -> None:
        if min_batch_size < 1:
            raise ValueError(f"min_batch_size must be at least 1, got {min_batch_size=}.")
        self.min_batch_size = min_batch_size
        self.policy_ids = None if policy_ids is None else list(policy_ids)
        self._sources: list[FragmentSource] = []
        self._batches: list[SampleBatch] = []
        self._count = 0

    def __call__(self, item: tuple[FragmentSource, SampleBatch]
                 ) -> list[tuple[TrainBatchSource, SampleBatch]]:
        source, batch = item
        self._sources.append(source)
        self._batches.append(batch)
        self._count += len(batch)
        if self._count < self.min_batch_size:
            return []
        batch = concat_samples(self._batches)
        if self.policy_ids is not None and isinstance(batch, MultiAgentBatch):
            batch = SelectExperiences(self.policy_ids)(batch)
        out = (TrainBatchSource(tuple(self._sources)), batch)
        self._sources, self._batches, self._count = [], [], 0
        return [out]

    def __repr__(self) -> str:
        chosen = "" if self.policy_ids is None else f", policy_ids={self.policy_ids}"
        return f"ConcatFragments(min_batch_size={self.min_batch_size}{chosen})"


# ---- after each learner update ------------------------------------------------------------------


class RecordLearnerOutput(NonBlockingStep):
    """Counts what the learner trained on and reports the learner thread's health.

    Steps trained and the policy lag (learner versions between the weights that sampled a
    fragment and the weights it was trained on) count once per train batch, however often it
    is replayed. It also passes the sampled-steps counter to the learner (lr schedules). A
    `NonBlockingStep` that is always ready, so its `extra_stats` (queue fill, updates/s, lag)
    annotate this node of the plan graph.

    Consumes: LearnerOutput. Yields: the same LearnerOutput.
    Metrics: counter `learner/steps_trained`; info `learner_thread/...`.
    """

    metrics_written = (STEPS_TRAINED_COUNTER, LEARNER_THREAD_INFO)

    def __init__(self, learner: LearnerThread, learn_step: LockedLearnStep) -> None:
        self.learner = learner
        self.learn_step = learn_step
        self.lags: collections.deque[int] = collections.deque(maxlen=_LAG_WINDOW)

    def try_apply(self, output: LearnerOutput) -> tuple[bool, LearnerOutput]:
        metrics = LocalIterator.get_metrics()
        source = output.source
        if isinstance(source, TrainBatchSource) and not source.counted:
            source.counted = True
            metrics.counters[STEPS_TRAINED_COUNTER] += output.batch_count
            trained_version = output.learner_version - 1
            self.lags.extend(max(trained_version - fragment.weights_version, 0)
                             for fragment in source.fragments)
        elif not isinstance(source, TrainBatchSource):
            metrics.counters[STEPS_TRAINED_COUNTER] += output.batch_count
        self.learn_step.timestep = int(metrics.counters[STEPS_SAMPLED_COUNTER])
        metrics.info[LEARNER_THREAD_INFO] = self.extra_stats()
        return True, output

    def extra_stats(self) -> dict[str, Any]:
        stats = self.learner.stats()
        lags = list(self.lags)
        return {
            "queue_fill": stats["inqueue_size"] / max(stats["inqueue_maxsize"], 1),
            "inqueue_size": stats["inqueue_size"],
            "outqueue_size": stats["outqueue_size"],
            "updates_per_s": float(stats["updates_per_s"]),
            "num_updates": stats["num_updates"],
            "weights_version": stats["weights_version"],
            "learn_time_ms": float(stats["learn_time_ms"]),
            "policy_lag_mean": float(np.mean(lags)) if lags else 0.0,
            "policy_lag_max": int(max(lags)) if lags else 0,
        }

    def __repr__(self) -> str:
        return "RecordLearnerOutput()"


class BroadcastToSourceWorkers:
    """Sends the learner's newest weights to the worker(s) whose samples were just trained on.

    The weights are read (under the learner's lock) and `put` once per learner version, and
    refreshed at most once every `broadcast_interval` learner updates; a worker that already
    has the current weights is not sent them again.

    Consumes: LearnerOutput whose source is a TrainBatchSource. Yields: TrainResult.
    Metrics: counter `learner/weight_broadcasts` (one per worker sent weights).

    Examples:
        >>> BroadcastToSourceWorkers(workers, learn_step, versions, broadcast_interval=1)
        ... # doctest: +SKIP
        BroadcastToSourceWorkers(broadcast_interval=1)
    """

    metrics_written = (NUM_WEIGHT_BROADCASTS_COUNTER,)

    def __init__(self, workers: WorkerSet, learn_step: LockedLearnStep,
                 versions: WorkerWeightVersions, *, broadcast_interval: int = 1) -> None:
        if broadcast_interval < 1:
            raise ValueError(f"broadcast_interval must be at least 1, got {broadcast_interval=}.")
        self.workers = workers
        self.learn_step = learn_step
        self.versions = versions
        self.broadcast_interval = broadcast_interval
        self.num_weight_puts = 0
        self._weights_ref: Any = None
        self._weights_version = 0
        self._updates_since_refresh = 0

    def __call__(self, output: LearnerOutput) -> TrainResult:
        self._updates_since_refresh += 1
        source = output.source
        targets = [w for w in source.workers() if w is not None] if isinstance(
            source, TrainBatchSource) else []
        if targets:
            self._refresh_weights_if_due()
            metrics = LocalIterator.get_metrics()
            global_vars = {"timestep": int(metrics.counters[STEPS_SAMPLED_COUNTER])}
            for worker in targets:
                if self.versions.get(worker) == self._weights_version:
                    continue
                self.workers.set_weights_of(worker, self._weights_ref, global_vars)
                self.versions.set(worker, self._weights_version)
                metrics.counters[NUM_WEIGHT_BROADCASTS_COUNTER] += 1
        return TrainResult(learner_stats={pid: dict(stats) for pid, stats
                                          in stats_by_policy(output.stats).items()},
                           num_steps_trained=output.batch_count)

    def _refresh_weights_if_due(self) -> None:
        due = self._weights_ref is None or self._updates_since_refresh >= self.broadcast_interval
        if not due or (self._weights_ref is not None
                       and self.learn_step.version == self._weights_version):
            return
        with self.learn_step.lock:
            weights = self.learn_step.get_weights()  # all trained policies' (multi-agent)
            version = self.learn_step.version
        self._weights_ref = executor.put(weights)
        self._weights_version = version
        self._updates_since_refresh = 0
        self.num_weight_puts += 1

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_weights_ref"] = None  # an object-store reference does not outlive a run
        return state

    def graph_links(self) -> list[GraphLink]:
        """A dashed "weights" edge back to the rollout workers' source (none without remote
        workers: the driver samples with the learner's own policy)."""
        if not self.workers.remote_workers():
            return []
        return [workers_graph_link(self.workers, "to", "weights")]

    def __repr__(self) -> str:
        return f"BroadcastToSourceWorkers(broadcast_interval={self.broadcast_interval})"


# ---- the plan -------------------------------------------------------------------------------


@dataclass
class LearnerFlows:
    """The pieces a learner-thread plan is built from (shared by IMPALA and APPO)."""

    learner: LearnerThread
    learn_step: LockedLearnStep
    versions: WorkerWeightVersions
    enqueue: LocalIterator
    dequeue: LocalIterator


def build_learner_flows(workers: WorkerSet, config: IMPALAConfig) -> LearnerFlows:
    """Async rollouts -> (mix-in replay) -> train batches -> learner thread -> its outputs.

    Returns the enqueue flow and the dequeue flow (recorded, not yet broadcast), for a plan to
    finish and join with `Concurrently`.
    """
    learn_step = LockedLearnStep(workers)
    learner = LearnerThread(
        workers, learn=learn_step, in_queue_size=config.learner_queue_size,
        num_sgd_iter=config.num_sgd_iter, minibatch_buffer_size=config.minibatch_buffer_size,
        timeout_s=config.learner_queue_timeout)
    start = StartLearnerThread(learner)
    versions = WorkerWeightVersions()
    # Workers sample with the weights they have; several requests in flight each.
    if workers.remote_workers():
        rollouts = ParallelRollouts(
            workers, mode="async",
            num_async=config.max_sample_requests_in_flight_per_worker).zip_with_source_actor()
    else:
        rollouts = ParallelRollouts(workers).for_each(PairWithDriver())
    fragments = rollouts.for_each(TagWeightsVersion(versions, learn_step))
    if config.replay_proportion > 0:
        fragments = fragments.combine(MixInReplay(
            num_slots=config.replay_buffer_num_slots,
            replay_proportion=config.replay_proportion, seed=config.seed))
    setup = getattr(workers, "multi_agent", None)
    train_batches = fragments.combine(ConcatFragments(
        min_batch_size=config.train_batch_size,
        policy_ids=None if setup is None else list(setup.policies_to_train)))
    # The learner thread trains while the plan keeps sampling.
    enqueue = train_batches.for_each(Enqueue(learner.inqueue, check=start))
    dequeue = Dequeue(learner.outqueue, check=start).for_each(
        RecordLearnerOutput(learner, learn_step))
    return LearnerFlows(learner, learn_step, versions, enqueue, dequeue)


def impala_plan(workers: WorkerSet, config: IMPALAConfig) -> LocalIterator[TrainResult]:
    """IMPALA as a dataflow: async sampling feeds a learner thread; weights go back to the
    workers whose samples were trained on."""
    flows = build_learner_flows(workers, config)
    # Each learner update sends fresh weights to the worker(s) that sent its batch.
    updated = flows.dequeue.for_each(BroadcastToSourceWorkers(
        workers, flows.learn_step, flows.versions,
        broadcast_interval=config.broadcast_interval))
    return Concurrently([flows.enqueue, updated], mode="async", output_indexes=[1])
