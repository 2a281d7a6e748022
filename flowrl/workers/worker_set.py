"""WorkerSet: the learner's local worker plus the remote rollout workers a plan drives."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from flowrl.iter import ActorDiedError, ActorStalledError, FlowError, executor
from flowrl.iter.shipping import WorkerImportError, as_worker_import_error
from flowrl.policy import PolicySpec
from flowrl.workers.multi_agent import (
    MultiAgentRolloutWorker,
    multi_agent_setup_for,
    multi_agent_worker_kwargs,
)
from flowrl.workers.rollout_worker import RolloutWorker

logger = logging.getLogger(__name__)

# Each replacement of a dead worker gets fresh env seeds, offset by this much per restart.
_RESTART_SEED_STRIDE = 7_919
# How long `num_healthy_workers` waits for pings: a dead actor's ping fails within it.
_PING_WAIT_S = 0.25
# How long a replacement may take to answer its first ping before the plan just goes on.
_START_WAIT_S = 60.0
# A worker that dies sooner than this after starting counts as a failed replacement.
_MIN_HEALTHY_LIFETIME_S = 10.0
# Waits between failed replacements in a row: doubling from the first, up to the last.
_RESTART_BACKOFF_S = 0.5
_MAX_RESTART_BACKOFF_S = 15.0


class WorkerSet:
    """A local worker (in the driver, holding the learner's policy) and `num_workers` remote ones.

    Remote workers are created through the current executor: Ray actors normally, plain
    in-process objects in local mode. With `num_workers=0` the local worker also samples.

    ```python
    workers = WorkerSet(env_creator=creator, policy_spec=PPO_POLICY, config=config)
    workers.local_worker().policy.learn_on_batch(batch)   # the learner
    workers.sync_weights()                                 # one object-store put, n calls
    workers.remote_workers()                               # handles a plan gathers from
    workers.stop()
    ```

    Args:
        env_creator: `creator(env_config) -> gymnasium.Env`, resolved on the driver.
        policy_spec: the `PolicySpec` every worker builds its policy from.
        config: the algorithm's typed config (an `AlgorithmConfig`); its rollout and resource
            fields shape the workers and the policies read it by attribute.
    """

    reported_worker_indexes: set[int] | None = None
    """Remote workers (1..n) whose episodes `collect_episode_stats` reports; None: all. A plan
    may narrow it (Ape-X reports its lowest-epsilon workers); the others' episodes are still
    collected, and dropped."""

    def __init__(self, *, env_creator: Callable[[dict], gym.Env], policy_spec: PolicySpec,
                 config: Any, policies: Mapping[str, tuple[PolicySpec, Any]] | None = None
                 ) -> None:
        self.env_creator = env_creator
        self.policy_spec = policy_spec
        self.config = config
        check_worker_resources(config)
        probe = env_creator(dict(config.env_config))
        try:
            # A PettingZoo parallel env gets multi-agent workers (flowrl.workers.multi_agent).
            self.multi_agent = multi_agent_setup_for(probe, policy_spec, config, policies)
            self.observation_space = None if self.multi_agent else probe.observation_space
            self.action_space = None if self.multi_agent else probe.action_space
        finally:
            probe.close()
        self._worker_class = MultiAgentRolloutWorker if self.multi_agent else RolloutWorker
        self._policy_episode_returns: list[dict[str, float]] = []
        self._restarts = [0] * config.num_workers
        self.num_worker_restarts = 0
        # Per worker slot: failed replacements in a row, and when the current worker started.
        self._failures_in_a_row = [0] * config.num_workers
        self._started_at = [time.monotonic()] * config.num_workers
        # Remote workers first: their processes start (and import the framework) while the
        # driver builds its own policy.
        self._remote = [self._create_remote(i) for i in range(1, config.num_workers + 1)]
        self._local = self._worker_class(**self._worker_kwargs(0, config.learner_num_threads))
        # Every worker starts from the learner's initial weights, not its own random init.
        self.sync_weights()

    # --- construction -----------------------------------------------------------------------

    def _worker_kwargs(self, worker_index: int, num_threads: int | None) -> dict[str, Any]:
        config = self.config
        seed = config.seed
        if seed is not None and worker_index > 0:
            seed = seed + _RESTART_SEED_STRIDE * self._restarts[worker_index - 1]
        kwargs = dict(
            env_creator=self.env_creator,
            env_config=dict(config.env_config),
            policy_spec=self.policy_spec,
            config=config,
            observation_space=self.observation_space,
            action_space=self.action_space,
            num_envs=config.num_envs_per_worker,
            rollout_fragment_length=config.rollout_fragment_length,
            batch_mode=config.batch_mode,
            seed=seed,
            worker_index=worker_index,
            num_workers=config.num_workers,
            num_threads=num_threads,
        )
        if self.multi_agent:
            return multi_agent_worker_kwargs(kwargs, self.multi_agent)
        return kwargs

    def _create_remote(self, worker_index: int) -> Any:
        kwargs = self._worker_kwargs(worker_index, self.config.num_threads_per_worker)
        return executor.create_actor(
            self._worker_class, num_cpus=self.config.num_cpus_per_worker, **kwargs
        )

    # --- access -----------------------------------------------------------------------------

    def local_worker(self) -> RolloutWorker:
        """The driver's worker; its policy is the one the learner trains."""
        return self._local

    def remote_workers(self) -> list[Any]:
        """Handles of the remote workers (Ray actors, or in-process workers in local mode)."""
        return list(self._remote)

    @property
    def num_healthy_workers(self) -> int:
        """Remote workers that are alive: all but those whose ping fails within a short wait.

        A busy worker answers after its current call, so a ping still pending after the wait
        counts as alive; a dead actor's ping fails at once. Dead workers are replaced in place
        when the plan next gathers from them.
        """
        if not self._remote:
            return 0
        pings = [executor.call(handle, "ping") for handle in self._remote]
        answered, _ = executor.wait(pings, num_returns=len(pings), timeout=_PING_WAIT_S)
        dead = 0
        for future in answered:
            try:
                executor.get(future)
            except ActorDiedError:
                dead += 1
        return len(self._remote) - dead

    # --- weights ----------------------------------------------------------------------------

    def sync_weights(self, global_vars: dict | None = None,
                     policy_ids: list[str] | None = None) -> None:
        """Sends the local worker's weights to every remote worker: one `put`, n calls.

        The calls are not awaited; each actor applies them before its next sample because a
        Ray actor runs its calls in order. `policy_ids` (multi-agent workers only) sends just
        those policies' weights.
        """
        if not self._remote:
            return
        local_weights = (self._local.get_weights(policy_ids) if policy_ids is not None
                         else self._local.get_weights())
        weights_ref = executor.put(local_weights)
        for handle in self._remote:
            executor.call(handle, "set_weights", weights_ref, global_vars)

    def set_weights_of(self, handle: Any, weights_ref: Any,
                       global_vars: dict | None = None) -> None:
        """Sends already-`put` weights to one worker (used for per-source updates)."""
        executor.call(handle, "set_weights", weights_ref, global_vars)

    # --- calls on every worker --------------------------------------------------------------

    def foreach_worker(self, fn: Callable[[RolloutWorker], Any]) -> list[Any]:
        """Calls `fn(worker)` on the local worker and every remote worker; results in order."""
        results = [fn(self._local)]
        futures = [executor.call(handle, "apply", fn) for handle in self._remote]
        return results + list(executor.get(futures))

    def collect_episode_stats(self) -> list[tuple[float, int]]:
        """Finished episodes (return, length) from all workers since the last collection
        (only from `reported_worker_indexes` among the remote workers, when set).

        A worker that died since is skipped here; the plan's gather replaces it.
        """
        episodes = self._local.get_episode_stats()
        futures = [executor.call(handle, "get_episode_stats") for handle in self._remote]
        reported = self.reported_worker_indexes
        for worker_index, future in enumerate(futures, start=1):
            try:
                finished = executor.get(future)
            except ActorDiedError:
                continue
            if reported is None or worker_index in reported:
                episodes.extend(finished)
        if self.multi_agent:  # (return, length, {policy id: return}) per episode
            self._policy_episode_returns.extend(episode[2] for episode in episodes)
            episodes = [(episode[0], episode[1]) for episode in episodes]
        return episodes

    def sync_observation_filters(self) -> None:
        """Merges what every remote worker's observation filters saw into the learner's (the
        local worker's, which counts its own samples directly) and sends the merged
        statistics back, so all normalize alike. Nothing happens without filters."""
        self._local.pop_filter_deltas()  # already in the learner's own statistics
        futures = [executor.call(handle, "pop_filter_deltas") for handle in self._remote]
        learner = self._local
        for future in futures:
            try:
                deltas = executor.get(future)
            except ActorDiedError:
                continue
            for pid, delta in deltas.items():
                learner.get_policy(pid).observation_filter.merge_delta(delta)
        merged = {pid: learner.get_policy(pid).observation_filter.get_state()
                  for pid in self._filtered_policy_ids()}
        if merged:
            ref = executor.put(merged)
            for handle in self._remote:
                executor.call(handle, "set_filter_states", ref)

    def _filtered_policy_ids(self) -> list[str]:
        local = self._local
        policies = getattr(local, "policy_map", None) or {"default_policy": local.policy}
        return [pid for pid, policy in policies.items()
                if getattr(policy, "observation_filter", None) is not None]

    def collect_custom_metrics(self) -> list[dict[str, float]]:
        """The callbacks' custom metrics of every episode that ended on any worker since the
        last collection (a worker that died since is skipped)."""
        metrics = self._local.pop_custom_metrics()
        for future in [executor.call(handle, "pop_custom_metrics") for handle in self._remote]:
            try:
                metrics.extend(executor.get(future))
            except ActorDiedError:
                continue
        return metrics

    def pop_policy_episode_returns(self) -> list[dict[str, float]]:
        """Multi-agent envs: {policy id: return} of the episodes the last
        `collect_episode_stats` calls returned (cleared on reading)."""
        returns, self._policy_episode_returns = self._policy_episode_returns, []
        return returns

    # --- faults -----------------------------------------------------------------------------

    def recreate_worker(self, shard_index: int, error: BaseException) -> Any:
        """Replaces the remote worker at `shard_index` in place and returns the new handle.

        The engine calls this (as `on_actor_failure`) when a gather finds the actor dead. The
        new worker gets the learner's current weights before it samples. If another iterator
        already replaced the worker and the replacement answers, that handle is returned.
        """
        if not self.config.recreate_failed_workers:
            if isinstance(error, ActorStalledError):
                raise ActorStalledError(
                    f"Rollout worker {shard_index + 1} returned no sample for "
                    f"{self.config.sample_timeout_s} s (sample_timeout_s): its env (from "
                    f"{self._env_description()}) may hang in step() or reset(). Fix the env, "
                    f"raise sample_timeout_s, or set recreate_failed_workers=True to replace "
                    f"such a worker.") from error
            raise error
        import_error = as_worker_import_error(error, self._shipped_objects_description())
        if import_error is not None:  # a replacement would fail the same way: stop at once
            raise _worker_cannot_import(shard_index, import_error) from error
        current = self._remote[shard_index]
        try:
            executor.get(executor.call(current, "ping"), timeout=10)
            return current
        except Exception:  # noqa: BLE001 - any failure to answer means it must be replaced
            pass
        if isinstance(error, ActorStalledError):
            logger.warning(
                "Rollout worker %d returned no sample for %s s (sample_timeout_s): its env "
                "(from %s) may hang in step() or reset(); replacing the worker.",
                shard_index + 1, self.config.sample_timeout_s, self._env_description())
        else:
            logger.warning("Rollout worker %d died (%s); replacing it.", shard_index + 1, error)
        executor.kill(current)
        if time.monotonic() - self._started_at[shard_index] < _MIN_HEALTHY_LIFETIME_S:
            self._failures_in_a_row[shard_index] += 1  # it died right after starting
        else:
            self._failures_in_a_row[shard_index] = 0
        handle = self._start_replacement(shard_index, error)
        executor.call(handle, "set_weights", executor.put(self._local.get_weights()))
        self._remote[shard_index] = handle
        return handle

    def _env_description(self) -> str:
        creator = getattr(self.env_creator, "creator", self.env_creator)
        return getattr(creator, "__qualname__", None) or repr(creator)

    def _shipped_objects_description(self) -> str:
        """Names what a rollout worker unpickles when it starts: the env creator first."""
        creator = getattr(self.env_creator, "creator", self.env_creator)
        module = getattr(creator, "__module__", None) or type(creator).__module__
        return (f"the env creator {creator!r} (module {module!r}) or another constructor "
                f"argument of the rollout worker (policy spec, config)")

    def _start_replacement(self, shard_index: int, error: BaseException) -> Any:
        """Starts a new worker for slot `shard_index` (actor and envs), retrying with doubling
        waits.

        A replacement that fails to start (or whose predecessor died right after starting)
        counts as a failure in a row; after `max_worker_restarts` of them the run ends with a
        FlowError naming the last cause, instead of replacing workers forever.
        """
        cause: BaseException = error
        while True:
            failures = self._failures_in_a_row[shard_index]
            if failures > self.config.max_worker_restarts:
                raise _restarts_exhausted(shard_index, failures, cause)
            if failures:
                delay = min(_RESTART_BACKOFF_S * 2 ** (failures - 1), _MAX_RESTART_BACKOFF_S)
                logger.warning("Replacement %d of rollout worker %d in a row; waiting %.1f s.",
                               failures, shard_index + 1, delay)
                time.sleep(delay)
            self._restarts[shard_index] += 1
            self.num_worker_restarts += 1
            handle = None
            try:
                handle = self._create_remote(shard_index + 1)
                started = executor.call(handle, "apply", _open_envs)
                answered, _ = executor.wait([started], timeout=_START_WAIT_S)
                if answered:  # still starting after the wait: let the plan's call wait on it
                    executor.get(answered[0])
            # Any error while starting is retried and, in the end, reported as the cause.
            except Exception as start_error:  # noqa: BLE001
                cause = start_error
                self._failures_in_a_row[shard_index] += 1
                if handle is not None:
                    executor.kill(handle)
                continue
            self._started_at[shard_index] = time.monotonic()
            return handle

    def stop(self) -> None:
        """Stops the local worker's envs and kills the remote workers."""
        self._local.stop()
        for handle in self._remote:
            executor.kill(handle)
        self._remote = []


def _open_envs(worker: RolloutWorker) -> None:
    """Builds a worker's envs now (they are built on first use), so that a replacement whose
    env cannot be constructed fails while it starts, where restarts are counted."""
    worker._vector_env()


def check_worker_resources(config: Any) -> None:
    """Fails at once when the cluster can never hold the config's rollout workers.

    Ray reserves `num_cpus_per_worker` CPUs (and `num_gpus_per_worker` GPUs, for configs that
    have it) for each remote worker; the driver and the learner run outside those
    reservations. A request beyond the cluster's total would wait forever.
    """
    num_workers = config.num_workers
    cpus_per_worker = float(config.num_cpus_per_worker)
    gpus_per_worker = float(getattr(config, "num_gpus_per_worker", 0) or 0)
    executor.check_resources(
        {"CPU": num_workers * cpus_per_worker, "GPU": num_workers * gpus_per_worker},
        purpose=(f"num_workers={num_workers} rollout workers with "
                 f"num_cpus_per_worker={cpus_per_worker:g}"
                 + (f" and num_gpus_per_worker={gpus_per_worker:g}" if gpus_per_worker else "")),
        fix=("Use fewer workers (num_workers) or a smaller num_cpus_per_worker, or start Ray "
             "with more CPUs on purpose to oversubscribe the cores: flowrl.init(num_cpus=N) "
             "before building the Trainer."),
    )


def _worker_cannot_import(shard_index: int, error: WorkerImportError) -> FlowError:
    return FlowError(
        operator=f"RolloutWorker {shard_index + 1}",
        lineage="WorkerSet (starting a rollout worker)",
        shard=shard_index,
        original_type="ModuleNotFoundError",
        original_message=str(error),
        remote_traceback="",
    )


def _restarts_exhausted(shard_index: int, failures: int, cause: BaseException) -> FlowError:
    first_line = (str(cause).splitlines() or [""])[0]
    return FlowError(
        operator=f"RolloutWorker {shard_index + 1}",
        lineage="WorkerSet.recreate_worker (replacing a dead rollout worker)",
        shard=shard_index,
        original_type=type(cause).__name__,
        original_message=(
            f"rollout worker {shard_index + 1} could not be kept alive: {failures} failures in "
            f"a row, more than max_worker_restarts. Last cause: {first_line}. Fix that cause "
            f"(often the env raising in its constructor on the workers), or raise "
            f"max_worker_restarts for a flaky cluster."),
        remote_traceback="".join(traceback.format_exception(cause)),
    )


def summarize_episodes(episodes: list[tuple[float, int]]) -> dict[str, float]:
    """Mean/min/max return and mean length of (return, length) pairs; NaN when there are none."""
    if not episodes:
        nan = float("nan")
        return {"episode_reward_mean": nan, "episode_reward_min": nan,
                "episode_reward_max": nan, "episode_len_mean": nan}
    returns = np.array([r for r, _ in episodes], dtype=np.float64)
    lengths = np.array([n for _, n in episodes], dtype=np.float64)
    return {
        "episode_reward_mean": float(returns.mean()),
        "episode_reward_min": float(returns.min()),
        "episode_reward_max": float(returns.max()),
        "episode_len_mean": float(lengths.mean()),
    }
