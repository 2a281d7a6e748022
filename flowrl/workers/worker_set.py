"""WorkerSet: the learner's local worker plus the remote rollout workers a plan drives."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from flowrl.iter import ActorDiedError, executor
from flowrl.workers.rollout_worker import RolloutWorker

logger = logging.getLogger(__name__)

# Each replacement of a dead worker gets fresh env seeds, offset by this much per restart.
_RESTART_SEED_STRIDE = 7_919


class WorkerSet:
    """A local worker (in the driver, holding the learner's policy) and `num_workers` remote ones.

    Remote workers are created through the current executor: Ray actors normally, plain
    in-process objects in local mode. With `num_workers=0` the local worker also samples.

    ```python
    workers = WorkerSet(env_creator=creator, policy_class=cls, config=config)
    workers.local_worker().policy.learn_on_batch(batch)   # the learner
    workers.sync_weights()                                 # one object-store put, n calls
    workers.remote_workers()                               # handles a plan gathers from
    workers.stop()
    ```

    Args:
        env_creator: `creator(env_config) -> gymnasium.Env`, resolved on the driver.
        policy_class: the `Policy` class every worker builds.
        config: an algorithm config (an `AlgorithmConfig`); its rollout and resource fields
            shape the workers and its `to_dict()` is the policy config.
    """

    def __init__(self, *, env_creator: Callable[[dict], gym.Env], policy_class: type,
                 config: Any) -> None:
        self.env_creator = env_creator
        self.policy_class = policy_class
        self.config = config
        probe = env_creator(dict(config.env_config))
        try:
            self.observation_space = probe.observation_space
            self.action_space = probe.action_space
        finally:
            probe.close()
        self._restarts = [0] * config.num_workers
        self.num_worker_restarts = 0
        # Remote workers first: their processes start (and import the framework) while the
        # driver builds its own policy.
        self._remote = [self._create_remote(i) for i in range(1, config.num_workers + 1)]
        self._local = RolloutWorker(**self._worker_kwargs(0, config.learner_num_threads))
        # Every worker starts from the learner's initial weights, not its own random init.
        self.sync_weights()

    # --- construction -----------------------------------------------------------------------

    def _worker_kwargs(self, worker_index: int, num_threads: int | None) -> dict[str, Any]:
        config = self.config
        policy_config = config.to_dict()
        policy_config["num_threads"] = num_threads
        seed = config.seed
        if seed is not None and worker_index > 0:
            seed = seed + _RESTART_SEED_STRIDE * self._restarts[worker_index - 1]
        return dict(
            env_creator=self.env_creator,
            env_config=dict(config.env_config),
            policy_class=self.policy_class,
            policy_config=policy_config,
            observation_space=self.observation_space,
            action_space=self.action_space,
            num_envs=config.num_envs_per_worker,
            rollout_fragment_length=config.rollout_fragment_length,
            batch_mode=config.batch_mode,
            seed=seed,
            worker_index=worker_index,
        )

    def _create_remote(self, worker_index: int) -> Any:
        kwargs = self._worker_kwargs(worker_index, self.config.num_threads_per_worker)
        return executor.create_actor(
            RolloutWorker, num_cpus=self.config.num_cpus_per_worker, **kwargs
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
        """Remote workers that are alive (dead ones are replaced in place)."""
        return len(self._remote)

    # --- weights ----------------------------------------------------------------------------

    def sync_weights(self, global_vars: dict | None = None) -> None:
        """Sends the local worker's weights to every remote worker: one `put`, n calls.

        The calls are not awaited; each actor applies them before its next sample because a
        Ray actor runs its calls in order.
        """
        if not self._remote:
            return
        weights_ref = executor.put(self._local.get_weights())
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
        """Finished episodes (return, length) from all workers since the last collection.

        A worker that died since is skipped here; the plan's gather replaces it.
        """
        episodes = self._local.get_episode_stats()
        futures = [executor.call(handle, "get_episode_stats") for handle in self._remote]
        for future in futures:
            try:
                episodes.extend(executor.get(future))
            except ActorDiedError:
                continue
        return episodes

    # --- faults -----------------------------------------------------------------------------

    def recreate_worker(self, shard_index: int, error: BaseException) -> Any:
        """Replaces the remote worker at `shard_index` in place and returns the new handle.

        The engine calls this (as `on_actor_failure`) when a gather finds the actor dead. The
        new worker gets the learner's current weights before it samples. If another iterator
        already replaced the worker and the replacement answers, that handle is returned.
        """
        if not self.config.recreate_failed_workers:
            raise error
        current = self._remote[shard_index]
        try:
            executor.get(executor.call(current, "ping"), timeout=10)
            return current
        except Exception:  # noqa: BLE001 - any failure to answer means it must be replaced
            pass
        logger.warning("Rollout worker %d died (%s); replacing it.", shard_index + 1, error)
        executor.kill(current)
        self._restarts[shard_index] += 1
        self.num_worker_restarts += 1
        handle = self._create_remote(shard_index + 1)
        executor.call(handle, "set_weights", executor.put(self._local.get_weights()))
        self._remote[shard_index] = handle
        return handle

    def stop(self) -> None:
        """Stops the local worker's envs and kills the remote workers."""
        self._local.stop()
        for handle in self._remote:
            executor.kill(handle)
        self._remote = []


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
