"""RolloutWorker: steps a vector of environments with batched policy inference.

A rollout worker is the unit of sampling. It owns `num_envs` copies of an environment stepped
as one gymnasium vector env (SAME_STEP autoreset, so a finished episode's last observation is
reported in the same step), and one policy. Each `sample()` returns `rollout_fragment_length`
steps per env as a single postprocessed `SampleBatch`.

It is a `ParallelIteratorWorker`, so the same object is a Ray actor (through
`flowrl.iter.executor.create_actor`) or a plain in-process shard in local mode; its shard
stream is an endless sequence of `sample()` results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from flowrl.data import SampleBatch, concat_samples
from flowrl.policy import PolicySpec, trajectory_bounds
from flowrl.policy.postprocessing import training_rewards
from flowrl.workers.callbacks import EpisodeCallbacks, make_callbacks
from flowrl.workers.episodes import EpisodeTracker
from flowrl.workers.sampling_worker import (
    BatchMode,
    SamplingWorker,
    step_seed,
)

# The env settings, shard protocol and common calls live in the shared base.
_step_seed = step_seed


class RolloutWorker(SamplingWorker):
    """Collects experience from a vector of envs with one policy.

    The sequence a plan drives, whether the worker is a Ray actor or in-process:

    ```python
    worker = RolloutWorker(env_creator=creator, policy_spec=PPO_POLICY, config=config, ...)
    worker.set_weights(learner_weights)        # before each round of sampling
    batch = worker.sample()                    # rollout_fragment_length x num_envs steps
    episodes = worker.get_episode_stats()      # finished episodes since the last call
    ```

    Args:
        env_creator: `creator(env_config) -> gymnasium.Env`, resolved on the driver.
        env_config: passed to `env_creator`.
        policy_spec: the `PolicySpec` of the policy the worker acts with.
        config: the algorithm's typed config (the policy reads it by attribute).
        observation_space: the env's observation space (read once on the driver).
        action_space: the env's action space.
        num_envs: envs stepped together as one vector env.
        rollout_fragment_length: steps per env per `sample()`.
        batch_mode: "truncate_episodes" cuts episodes at fragment boundaries (bootstrapping
            from the value of the next observation); "complete_episodes" returns only whole
            episodes, carrying partial ones over to the next call.
        seed: run seed; each env and the policy derive their own seed from it.
        worker_index: 0 for the driver's local worker, 1..n for remote ones.
        num_workers: how many remote workers the set has (per-worker exploration).
        num_threads: the framework's intra-op threads in this process (None: its default).
    """

    def __init__(
        self,
        *,
        env_creator: Callable[[dict], gym.Env],
        env_config: dict | None,
        policy_spec: PolicySpec,
        config: Any,
        observation_space: gym.Space,
        action_space: gym.Space,
        num_envs: int = 1,
        rollout_fragment_length: int = 200,
        batch_mode: BatchMode = "truncate_episodes",
        seed: int | None = None,
        worker_index: int = 0,
        num_workers: int = 0,
        num_threads: int | None = None,
    ) -> None:
        super().__init__(env_creator=env_creator, env_config=env_config, num_envs=num_envs,
                         rollout_fragment_length=rollout_fragment_length, batch_mode=batch_mode,
                         seed=seed, worker_index=worker_index)
        self.policy = policy_spec.build(
            observation_space, action_space, config, worker_index=worker_index,
            num_workers=num_workers, seed=None if seed is None else int(seed) + worker_index,
            num_threads=num_threads)
        self.episodes = EpisodeTracker(num_envs=num_envs, worker_index=worker_index)
        self._env: gym.vector.VectorEnv | None = None
        self._raw_obs: Any = None
        self._state: list[np.ndarray] = []  # a recurrent policy's state, one row per env
        self._prev: list[np.ndarray] = []  # [prev_actions, prev_rewards] if the model reads them
        self._partial: list[list[SampleBatch]] = [[] for _ in range(num_envs)]
        callbacks = make_callbacks(getattr(config, "callbacks", None))
        self.callbacks = callbacks
        self._episode_callbacks = None if callbacks is None else EpisodeCallbacks(callbacks, self)

    # --- environments ---------------------------------------------------------------------

    def _make_env_fns(self) -> list[Callable[[], gym.Env]]:
        creator, env_config = self.env_creator, self.env_config
        return [lambda: creator(env_config) for _ in range(self.num_envs)]

    def _vector_env(self) -> gym.vector.VectorEnv:
        """Creates the vector env on first use, so building a worker opens no environment."""
        if self._env is None:
            self._env = gym.vector.SyncVectorEnv(
                self._make_env_fns(), autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
            )
            seeds = [_step_seed(self.seed, self.worker_index, i) for i in range(self.num_envs)]
            self._raw_obs, _ = self._env.reset(seed=None if self.seed is None else seeds)
            self._reject_non_finite_observations(self._raw_obs, "reset()")
            self._state = initial_states(self.policy, self.num_envs)
            self._prev = initial_prev_inputs(self.policy, self.num_envs)
            self._env.action_space.seed(_step_seed(self.seed, self.worker_index, 99))
            if self._episode_callbacks is not None:
                for env_index, episode_id in enumerate(self.episodes.eps_id):
                    self._episode_callbacks.start(env_index, int(episode_id))
        return self._env

    # --- sampling ---------------------------------------------------------------------------

    def sample(self) -> SampleBatch:
        """Returns `rollout_fragment_length * num_envs` postprocessed steps (at least that many,
        all in complete episodes, under batch_mode="complete_episodes")."""
        if self.batch_mode == "truncate_episodes":
            batch = concat_samples(self._collect_fragment(flush_partial=True))
        else:
            target = self.rollout_fragment_length * self.num_envs
            pieces: list[SampleBatch] = []
            while sum(len(p) for p in pieces) < target:
                pieces.extend(self._collect_fragment(flush_partial=False))
            batch = concat_samples(pieces)
        if self.callbacks is not None:
            self.callbacks.on_sample_end(worker=self, batch=batch)
        return batch

    def _collect_fragment(self, *, flush_partial: bool) -> list[SampleBatch]:
        """Steps all envs `rollout_fragment_length` times; returns postprocessed trajectories."""
        env = self._vector_env()
        steps = [self._step_once(env) for _ in range(self.rollout_fragment_length)]
        columns = {key: np.stack([s[key] for s in steps]) for key in steps[0]}
        if flush_partial:
            return [self.policy.postprocess_fragment(columns)]
        pieces = []
        for env_index in range(self.num_envs):
            per_env = {key: value[:, env_index] for key, value in columns.items()}
            pieces.extend(self._complete_and_postprocess(env_index, per_env))
        return pieces

    def _step_once(self, env: gym.vector.VectorEnv) -> dict[str, np.ndarray]:
        policy = self.policy
        obs_rows = policy.preprocess(self._raw_obs, update_filter=True)
        state_in, prev = self._state, self._prev
        actions, state_out, extras = policy.compute_actions(self._raw_obs, state_in or None,
                                                            explore=True, **prev_kwargs(prev))
        next_raw, rewards, terminateds, truncateds, infos = env.step(self._env_actions(actions))
        if not np.isfinite(rewards).all():
            self._raise_non_finite_rewards(rewards)
        self._reject_non_finite_observations(next_raw, "step()")
        new_obs_rows = np.array(policy.preprocess(next_raw), copy=True)
        dones = np.logical_or(terminateds, truncateds)
        if dones.any():
            final_obs = infos["final_obs"]
            for i in np.flatnonzero(dones):
                final_row = _single_row_batch(final_obs[i])
                self._reject_non_finite_observations(final_row, "step()", env_index=int(i))
                new_obs_rows[i] = policy.preprocess(final_row)[0]
        eps_id, t = self.episodes.step(rewards, dones)
        if self._episode_callbacks is not None:
            self._call_episode_callbacks(actions, rewards, dones)
        self._raw_obs = next_raw
        self._state = reset_finished_states(policy, state_out, dones)
        train_rewards = training_rewards(rewards, policy.config)
        self._prev = next_prev_inputs(policy, prev, actions, train_rewards, dones)
        row = {
            "obs": obs_rows,
            "actions": actions,
            "rewards": train_rewards,
            "terminateds": np.asarray(terminateds, dtype=bool),
            "truncateds": np.asarray(truncateds, dtype=bool),
            "new_obs": new_obs_rows,
            "eps_id": eps_id,
            "t": t,
        }
        row.update(extras)
        row.update(state_columns(state_in))
        row.update(prev_kwargs(prev))
        return row

    def _call_episode_callbacks(self, actions: np.ndarray, rewards: np.ndarray,
                                dones: np.ndarray) -> None:
        """Each env's step, and for a finished episode its end and the next one's start."""
        callbacks = self._episode_callbacks
        for env_index in range(self.num_envs):
            callbacks.step(env_index, actions[env_index], rewards[env_index])
            if dones[env_index]:
                callbacks.end(env_index)
                callbacks.start(env_index, int(self.episodes.eps_id[env_index]))

    def pop_filter_deltas(self) -> dict[str, Any]:
        """Policy id -> the observation filter's statistics since the last call (policies
        without a filter are left out)."""
        observation_filter = getattr(self.policy, "observation_filter", None)
        return {} if observation_filter is None else {
            "default_policy": observation_filter.pop_delta()}

    def set_filter_states(self, states: dict[str, Any]) -> None:
        """Normalizes with the learner's merged statistics from now on (`pop_filter_deltas`'
        policy ids)."""
        observation_filter = getattr(self.policy, "observation_filter", None)
        if "default_policy" in states and observation_filter is not None:
            observation_filter.set_running(states["default_policy"])

    def pop_custom_metrics(self) -> list[dict[str, float]]:
        """The callbacks' custom metrics of the episodes that ended since the last call."""
        return [] if self._episode_callbacks is None else (
            self._episode_callbacks.pop_custom_metrics())

    def _env_actions(self, actions: np.ndarray) -> np.ndarray:
        """What the env is stepped with: Box actions clipped to the space's bounds (the batch
        keeps the unclipped ones, whose log-probs the policy computed)."""
        space = self.policy.action_space
        if isinstance(space, gym.spaces.Box):
            return np.clip(actions, space.low, space.high)
        return actions

    def _complete_and_postprocess(self, env_index: int,
                                  columns: dict[str, np.ndarray]) -> list[SampleBatch]:
        """Postprocesses one env's finished episodes; keeps its unfinished tail for later.

        Used by batch_mode="complete_episodes": a tail carried over from earlier fragments is
        joined to the episode it belongs to when that episode ends.
        """
        out: list[SampleBatch] = []
        bounds = trajectory_bounds(columns["terminateds"], columns["truncateds"])
        for start, end in bounds:
            piece = SampleBatch({k: v[start:end] for k, v in columns.items()})
            if not (piece["terminateds"][-1] or piece["truncateds"][-1]):
                self._partial[env_index].append(piece)  # the episode goes on
                continue
            carried = self._partial[env_index]
            if carried:
                piece = concat_samples([*carried, piece])
                self._partial[env_index] = []
            out.append(self.policy.postprocess_trajectory(piece))
        return out

    def _raise_non_finite_rewards(self, rewards: np.ndarray) -> None:
        bad = np.flatnonzero(~np.isfinite(rewards))
        raise ValueError(
            f"The environment returned non-finite rewards {rewards[bad].tolist()} (env index "
            f"{bad.tolist()} of rollout worker {self.worker_index}); rewards must be finite "
            "numbers. Fix the env's step(), or wrap it to clip or replace such rewards."
        )

    def _reject_non_finite_observations(self, observations: Any, returned_by: str,
                                        env_index: int | None = None) -> None:
        """Raises where a NaN or infinite observation enters, before any policy sees it.

        `observations` holds one row per env (or the single row of `env_index`).
        """
        bad_rows = _non_finite_rows(observations)
        if not bad_rows:
            return
        env_indices = bad_rows if env_index is None else [env_index]
        raise ValueError(
            f"The environment's {returned_by} returned a non-finite observation (NaN or inf) "
            f"in env index {env_indices} of rollout worker {self.worker_index}; observations "
            "must be finite numbers, or the policy's outputs and the loss turn into NaN. Fix "
            "the env, or wrap it (e.g. gymnasium.wrappers.TransformObservation with "
            "np.nan_to_num) to replace such values."
        )

    # --- weights, stats, gradients ---------------------------------------------------------

    policies_to_train: tuple[str, ...] = ("default_policy",)
    """The policies train ops update; a single-agent worker has only "default_policy"."""

    def get_policy(self, policy_id: str = "default_policy") -> Any:
        """The policy with id `policy_id`; a single-agent worker has only "default_policy"
        (multi-agent workers, `flowrl.workers.multi_agent`, have one per policy id)."""
        if policy_id != "default_policy":
            raise KeyError(f"No policy {policy_id!r} on this single-agent worker; its only "
                           f"policy is 'default_policy'.")
        return self.policy

    def get_weights(self) -> dict[str, np.ndarray]:
        """The policy's weights as framework-neutral numpy arrays."""
        return self.policy.get_weights()

    def set_weights(self, weights: dict[str, np.ndarray], global_vars: dict | None = None) -> None:
        """Loads the learner's weights (and optionally its global vars, e.g. the timestep)."""
        self.policy.set_weights(weights)
        if global_vars:
            self.policy.on_global_var_update(global_vars)

    def get_episode_stats(self) -> list[tuple[float, int]]:
        """Returns and clears the (return, length) of episodes finished since the last call."""
        return self.episodes.pop_completed()

    def evaluate(self, num_episodes: int, seed: int | None = None) -> list[tuple[float, int]]:
        """Runs `num_episodes` full episodes without exploration on a fresh env.

        Uses its own vector env so evaluation never disturbs the sampling envs' episodes.
        """
        env = gym.vector.SyncVectorEnv(
            self._make_env_fns()[: min(self.num_envs, num_episodes)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )
        try:
            raw_obs, _ = env.reset(seed=seed)
            returns = np.zeros(env.num_envs)
            lengths = np.zeros(env.num_envs, dtype=np.int64)
            finished: list[tuple[float, int]] = []
            state = initial_states(self.policy, env.num_envs)
            prev = initial_prev_inputs(self.policy, env.num_envs)
            while len(finished) < num_episodes:
                actions, state, _ = self.policy.compute_actions(raw_obs, state or None,
                                                                explore=False,
                                                                **prev_kwargs(prev))
                raw_obs, rewards, terminateds, truncateds, _ = env.step(self._env_actions(actions))
                returns += rewards
                lengths += 1
                dones = np.logical_or(terminateds, truncateds)
                state = reset_finished_states(self.policy, state, dones)
                prev = next_prev_inputs(self.policy, prev, actions,
                                        training_rewards(rewards, self.policy.config), dones)
                for i in np.flatnonzero(dones):
                    finished.append((float(returns[i]), int(lengths[i])))
                    returns[i], lengths[i] = 0.0, 0
            return finished[:num_episodes]
        finally:
            env.close()

    def stop(self) -> None:
        """Closes the worker's environments."""
        if self._env is not None:
            self._env.close()
            self._env = None


def initial_states(policy: Any, count: int) -> list[np.ndarray]:
    """A recurrent policy's initial state for `count` envs (one array per state tensor, batch
    first); `[]` for a stateless policy."""
    return [np.repeat(value[None], count, axis=0) for value in policy.initial_state()]


def reset_finished_states(policy: Any, state: list[np.ndarray],
                          dones: np.ndarray) -> list[np.ndarray]:
    """The state for the next step: rows of envs whose episode just ended start again from
    the policy's initial state (the env reset itself in the same step)."""
    if not state or not np.any(dones):
        return state
    finished = np.flatnonzero(dones)
    fresh = []
    for value, initial in zip(state, policy.initial_state()):
        value = np.array(value, copy=True)
        value[finished] = initial
        fresh.append(value)
    return fresh


def initial_prev_inputs(policy: Any, count: int) -> list[np.ndarray]:
    """`[prev_actions, prev_rewards]` (zeros) for `count` envs at their episodes' first steps,
    for a model that reads them (`lstm_use_prev_*`); `[]` for other models."""
    if not (policy.uses_prev_actions or policy.uses_prev_rewards):
        return []
    return [np.zeros((count, policy.prev_action_width), np.float32),
            np.zeros(count, np.float32)]


def next_prev_inputs(policy: Any, prev: list[np.ndarray], actions: np.ndarray,
                     rewards: np.ndarray, dones: np.ndarray) -> list[np.ndarray]:
    """The previous-step inputs of the next step: this step's actions (encoded) and rewards,
    zeros for envs whose episode just ended."""
    if not prev:
        return prev
    prev_actions = policy.encode_prev_actions(actions)
    prev_rewards = np.asarray(rewards, np.float32).copy()
    prev_actions[dones] = 0.0
    prev_rewards[dones] = 0.0
    return [prev_actions, prev_rewards]


def prev_kwargs(prev: list[np.ndarray]) -> dict[str, np.ndarray]:
    """`prev_actions` / `prev_rewards` as `compute_actions` keywords and batch columns."""
    return {"prev_actions": prev[0], "prev_rewards": prev[1]} if prev else {}


def state_columns(state: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The `state_in_{i}` columns of one step (empty for a stateless policy)."""
    return {f"{SampleBatch.STATE_IN_PREFIX}{index}": value for index, value in enumerate(state)}


def _non_finite_rows(observations: Any) -> list[int]:
    """Indices of the rows (envs) holding a NaN or infinite value in a batch of observations
    (an array, or dicts/tuples of arrays); integer and boolean arrays are always finite."""
    if isinstance(observations, dict):
        parts = list(observations.values())
    elif isinstance(observations, tuple):
        parts = list(observations)
    else:
        array = np.asarray(observations)
        if array.dtype.kind not in "fc" or array.ndim == 0 or np.isfinite(array).all():
            return []
        return np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1)).tolist()
    return sorted({row for part in parts for row in _non_finite_rows(part)})


def _single_row_batch(observation: Any) -> Any:
    """Adds a batch dimension of one to a single observation (arrays, or dicts/tuples of them)."""
    if isinstance(observation, dict):
        return {key: _single_row_batch(value) for key, value in observation.items()}
    if isinstance(observation, tuple):
        return tuple(_single_row_batch(value) for value in observation)
    return np.asarray(observation)[None]
