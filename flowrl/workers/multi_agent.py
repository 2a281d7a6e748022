"""Multi-agent sampling: policy mapping, and a rollout worker for PettingZoo parallel envs.

A multi-agent env (PettingZoo's parallel API, see `flowrl.envs.protocol`) has several agents
acting at once; each agent is controlled by one of several policies. This module holds:

- `MultiAgentSetup`: which policies exist (spec, typed config, spaces), which agent maps to
  which policy, and which policies train. Built once on the driver from a probe env, checked
  there (unknown policy ids, unmapped agents, agents of one policy with different spaces), and
  shipped to every worker.
- `MultiAgentRolloutWorker`: the multi-agent counterpart of `RolloutWorker`. It steps
  `num_envs` copies of the env, runs ONE batched forward pass per policy per step over all
  agents of all envs mapped to it, and returns a `MultiAgentBatch` of per-policy
  `SampleBatch`es, postprocessed per agent trajectory by each policy's own postprocessing.

Single-agent sampling does not pass through here; `WorkerSet` picks this worker only for an
env that `flowrl.envs.is_multi_agent_env` recognises.
"""

from __future__ import annotations

import collections
import inspect
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from flowrl.data import DEFAULT_POLICY_ID, MultiAgentBatch, SampleBatch, concat_samples
from flowrl.envs import ProtocolCheckedParallelEnv, is_multi_agent_env
from flowrl.policy import PolicySpec
from flowrl.policy.postprocessing import training_rewards
from flowrl.workers.callbacks import EpisodeCallbacks, make_callbacks
from flowrl.workers.rollout_worker import (
    _non_finite_rows,
    _single_row_batch,
    initial_prev_inputs,
    prev_kwargs,
    state_columns,
)
from flowrl.workers.sampling_worker import BatchMode, SamplingWorker, step_seed

PolicyMapping = Mapping[Hashable, str] | Callable[[Hashable], str] | None
"""`policy_mapping` as configs give it: agent id -> policy id, a callable, or None."""

# Policies of one worker draw their seeds this far apart.
_POLICY_SEED_STRIDE = 1_000


@dataclass(frozen=True)
class PolicyEntry:
    """One policy of a multi-agent setup: how to build it and for which spaces."""

    spec: PolicySpec
    """The algorithm's policy pieces (losses, model, action selection, postprocessing)."""
    config: Any
    """The policy's typed config (its algorithm's config class, with per-policy overrides)."""
    observation_space: gym.Space
    """The observation space every agent mapped to this policy has."""
    action_space: gym.Space
    """The action space every agent mapped to this policy has."""


class MultiAgentSetup:
    """The policies of a multi-agent run and the mapping of agents to them.

    ```python
    setup = MultiAgentSetup.from_env(env, {"p1": (PPO_POLICY, cfg1), "p2": (PPO_POLICY, cfg2)},
                                     policy_mapping={"agent1": "p1", "agent2": "p2"})
    setup.policy_for("agent1")      # "p1"
    setup.policies_to_train         # ("p1", "p2")
    ```

    Args:
        entries: policy id -> `PolicyEntry`.
        policy_mapping: agent id -> policy id (a dict), a callable `(agent_id) -> policy_id`,
            or None when there is exactly one policy (every agent maps to it).
        policies_to_train: the policies the train ops update; None = all.
    """

    def __init__(self, entries: Mapping[str, PolicyEntry], policy_mapping: PolicyMapping = None,
                 policies_to_train: Sequence[str] | None = None) -> None:
        if not entries:
            raise ValueError("A multi-agent setup needs at least one policy; got none.")
        self.entries = dict(entries)
        self.policy_mapping = policy_mapping
        if policy_mapping is None and len(self.entries) > 1:
            raise ValueError(
                f"policy_mapping is missing: with several policies {self.policy_ids} every agent "
                f"must be mapped to one. Set policy_mapping to a dict agent id -> policy id, or "
                f"a callable (agent_id) -> policy_id.")
        if policy_mapping is not None and not (callable(policy_mapping)
                                               or isinstance(policy_mapping, Mapping)):
            raise TypeError(
                f"policy_mapping must be a dict agent id -> policy id or a callable "
                f"(agent_id) -> policy_id; got {policy_mapping!r} "
                f"({type(policy_mapping).__name__}).")
        if isinstance(policy_mapping, Mapping):
            for agent, policy_id in policy_mapping.items():
                self._check_policy_id(agent, policy_id)
        elif policy_mapping is not None:
            _check_mapping_signature(policy_mapping)
        if policies_to_train is None:
            self.policies_to_train: tuple[str, ...] = tuple(self.entries)
        else:
            unknown = [pid for pid in policies_to_train if pid not in self.entries]
            if unknown:
                raise ValueError(
                    f"policies_to_train names unknown policies {unknown}; valid policy ids: "
                    f"{self.policy_ids}.")
            self.policies_to_train = tuple(policies_to_train)
        self._cache: dict[Hashable, str] = {}

    @property
    def policy_ids(self) -> list[str]:
        """The ids of all policies, in configuration order."""
        return list(self.entries)

    def policy_for(self, agent: Hashable) -> str:
        """The id of the policy that acts for `agent`.

        Raises:
            ValueError: the mapping has no entry for `agent`, or names an unknown policy; the
                message lists the valid ids.
        """
        cached = self._cache.get(agent)
        if cached is not None:
            return cached
        mapping = self.policy_mapping
        if mapping is None:
            policy_id = next(iter(self.entries))
        elif isinstance(mapping, Mapping):
            if agent not in mapping:
                raise ValueError(
                    f"Agent {agent!r} has no entry in policy_mapping (mapped agents: "
                    f"{list(mapping)}); add one naming one of the policies {self.policy_ids}.")
            policy_id = mapping[agent]
        else:
            policy_id = mapping(agent)
        self._check_policy_id(agent, policy_id)
        self._cache[agent] = policy_id
        return policy_id

    def _check_policy_id(self, agent: Hashable, policy_id: Any) -> None:
        if policy_id not in self.entries:
            raise ValueError(
                f"policy_mapping maps agent {agent!r} to {policy_id!r}, which is not a "
                f"configured policy; valid policy ids: {self.policy_ids}.")

    @classmethod
    def from_env(cls, env: Any, policies: Mapping[str, tuple[PolicySpec, Any]],
                 policy_mapping: PolicyMapping = None,
                 policies_to_train: Sequence[str] | None = None) -> MultiAgentSetup:
        """Builds the setup for a PettingZoo parallel `env`, reading each policy's spaces from
        the agents mapped to it.

        Args:
            env: a probe instance of the env (not stepped).
            policies: policy id -> (PolicySpec, typed config).
            policy_mapping: see the class docstring.
            policies_to_train: see the class docstring.

        Raises:
            ValueError: an agent maps to an unknown policy or to none; a policy no agent maps
                to; agents of one policy with different spaces.
        """
        placeholder = {pid: PolicyEntry(spec, config, gym.spaces.Discrete(1),
                                        gym.spaces.Discrete(1))
                       for pid, (spec, config) in policies.items()}
        probe = cls(placeholder, policy_mapping, policies_to_train)
        spaces: dict[str, tuple[Hashable, gym.Space, gym.Space]] = {}
        for agent in env.possible_agents:
            policy_id = probe.policy_for(agent)
            observation_space, action_space = env.observation_space(agent), env.action_space(agent)
            if policy_id not in spaces:
                spaces[policy_id] = (agent, observation_space, action_space)
                continue
            first_agent, first_obs, first_action = spaces[policy_id]
            if first_obs != observation_space or first_action != action_space:
                raise ValueError(
                    f"Agents {first_agent!r} and {agent!r} both map to policy {policy_id!r} but "
                    f"have different spaces ({first_obs}, {first_action} vs "
                    f"{observation_space}, {action_space}); one policy serves agents with the "
                    f"same observation and action spaces. Map them to different policies.")
        unused = [pid for pid in policies if pid not in spaces]
        if unused:
            mapped = {agent: probe.policy_for(agent) for agent in env.possible_agents}
            raise ValueError(
                f"Policies {unused} have no agent mapped to them (the env's agents map as "
                f"{mapped}); remove them from `policies` or map an agent to them.")
        entries = {pid: PolicyEntry(spec, config, spaces[pid][1], spaces[pid][2])
                   for pid, (spec, config) in policies.items()}
        return cls(entries, policy_mapping, policies_to_train)

    def __repr__(self) -> str:
        return (f"MultiAgentSetup(policies={self.policy_ids}, "
                f"policies_to_train={list(self.policies_to_train)})")


def _check_mapping_signature(mapping: Callable[..., str]) -> None:
    """A policy_mapping callable is called as `mapping(agent_id)`; one that needs more
    arguments (RLlib's `policy_mapping_fn(agent_id, episode, worker, **kwargs)`) is refused
    with the signature flowrl calls."""
    try:
        parameters = inspect.signature(mapping).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: let the call tell
        return
    positional = [p for p in parameters
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p.name for p in positional if p.default is p.empty]
    takes_any = any(p.kind is p.VAR_POSITIONAL for p in parameters)
    if len(required) > 1 or (not positional and not takes_any):
        name = getattr(mapping, "__name__", repr(mapping))
        raise TypeError(
            f"policy_mapping {name}{inspect.signature(mapping)} must take exactly one required "
            f"argument, the agent id: flowrl calls policy_mapping(agent_id) -> policy_id. An "
            f"RLlib-style policy_mapping_fn(agent_id, episode, ...) works once its other "
            f"parameters are optional, e.g. def {name}(agent_id, *args, **kwargs).")


@dataclass
class _StepRecord:
    """One env step of one policy: the rows of every agent (of every env) it acted for."""

    slots: np.ndarray
    """Per row, the agent's slot: env index * number of possible agents + agent position."""
    columns: dict[str, np.ndarray]


@dataclass
class _PendingRows:
    """Rows of one policy for one step, before the env answered."""

    slots: list[int]
    agents: list[tuple[int, Hashable]]
    columns: dict[str, np.ndarray]


class _EnvEpisode:
    """The running episode of one env copy: id, step count and per-agent returns."""

    def __init__(self, episode_id: int) -> None:
        self.episode_id = episode_id
        self.length = 0
        self.agent_returns: dict[Hashable, float] = collections.defaultdict(float)


class MultiAgentRolloutWorker(SamplingWorker):
    """Collects experience from `num_envs` copies of a PettingZoo parallel env.

    The multi-agent sibling of `RolloutWorker` (both are `SamplingWorker`s: the env settings,
    shard protocol and health calls are written once there). It offers what `RolloutWorker`
    offers, per policy: `sample()` returns a `MultiAgentBatch`,
    `get_weights()` returns {policy id: weights}, `get_policy(policy_id)` reaches one policy.
    `policy` is the single policy when there is only one (shared-policy mode).

    Args:
        env_creator: `creator(env_config)` returning a PettingZoo parallel env.
        env_config: passed to `env_creator`.
        multi_agent: the policies and the agent-to-policy mapping (`MultiAgentSetup`).
        num_envs: env copies stepped together.
        rollout_fragment_length: env steps per env copy per `sample()`.
        batch_mode: as for `RolloutWorker`.
        seed: run seed; envs and policies derive their own from it.
        worker_index: 0 for the driver's local worker, 1..n for remote ones.
        num_workers: how many remote workers the set has.
        num_threads: the framework's intra-op threads in this process (None: its default).
        callbacks: the run's `Callbacks` subclass (or its "module:Class" path), or None.
    """

    def __init__(
        self,
        *,
        env_creator: Callable[[dict], Any],
        env_config: dict | None,
        multi_agent: MultiAgentSetup,
        num_envs: int = 1,
        rollout_fragment_length: int = 200,
        batch_mode: BatchMode = "truncate_episodes",
        seed: int | None = None,
        worker_index: int = 0,
        num_workers: int = 0,
        num_threads: int | None = None,
        callbacks: Any = None,
    ) -> None:
        super().__init__(env_creator=env_creator, env_config=env_config, num_envs=num_envs,
                         rollout_fragment_length=rollout_fragment_length, batch_mode=batch_mode,
                         seed=seed, worker_index=worker_index)
        self.multi_agent = multi_agent
        self.policy_map: dict[str, Any] = {}
        for position, (policy_id, entry) in enumerate(multi_agent.entries.items()):
            policy_seed = (None if seed is None
                           else int(seed) + worker_index + _POLICY_SEED_STRIDE * position)
            self.policy_map[policy_id] = entry.spec.build(
                entry.observation_space, entry.action_space, entry.config,
                worker_index=worker_index, num_workers=num_workers, seed=policy_seed,
                num_threads=num_threads)
        self._envs: list[ProtocolCheckedParallelEnv] | None = None
        self._observations: list[dict[Hashable, Any]] = []
        self._episodes: list[_EnvEpisode] = []
        self._next_episode_id = worker_index * 1_000_000_000
        self._agent_positions: dict[Hashable, int] = {}
        self._slots_per_env = 1  # set to the env's number of possible agents when it opens
        self._completed: list[tuple[float, int, dict[str, float]]] = []
        self._partial: dict[str, dict[int, list[SampleBatch]]] = {
            pid: collections.defaultdict(list) for pid in self.policy_map}
        # A recurrent policy's state per slot (env copy, agent), without the batch dimension;
        # a slot without an entry starts from its policy's initial state.
        self._states: dict[int, list[np.ndarray]] = {}
        # For models that read them: each slot's previous (encoded action, training reward).
        self._previous: dict[int, tuple[np.ndarray, float]] = {}
        self.callbacks = make_callbacks(callbacks)
        self._episode_callbacks = (None if self.callbacks is None
                                   else EpisodeCallbacks(self.callbacks, self))

    # --- policies -----------------------------------------------------------------------------

    @property
    def policy(self) -> Any:
        """The only policy, in shared-policy mode; with several, use `get_policy(policy_id)`."""
        if len(self.policy_map) == 1:
            return next(iter(self.policy_map.values()))
        raise AttributeError(
            f"This multi-agent worker has several policies {list(self.policy_map)}; use "
            f"get_policy(policy_id) to reach one of them.")

    def get_policy(self, policy_id: str = DEFAULT_POLICY_ID) -> Any:
        """The policy with id `policy_id`.

        Raises:
            KeyError: for an unknown id, listing the valid ones.
        """
        if policy_id not in self.policy_map:
            raise KeyError(f"No policy {policy_id!r} on this worker; valid policy ids: "
                           f"{list(self.policy_map)}.")
        return self.policy_map[policy_id]

    @property
    def policies_to_train(self) -> tuple[str, ...]:
        """The policies the train ops update."""
        return self.multi_agent.policies_to_train

    # --- environments -------------------------------------------------------------------------

    def _vector_env(self) -> list[ProtocolCheckedParallelEnv]:
        """Creates and resets the env copies on first use (building a worker opens none)."""
        if self._envs is None:
            self._envs = []
            for env_index in range(self.num_envs):
                env = ProtocolCheckedParallelEnv(self.env_creator(self.env_config))
                self._slots_per_env = len(env.possible_agents)
                observations, _ = env.reset(seed=step_seed(self.seed, self.worker_index,
                                                            env_index))
                self._reject_non_finite_observations(observations, "reset()", env_index)
                self._envs.append(env)
                self._observations.append(observations)
                self._episodes.append(self._new_episode(env_index))
        return self._envs

    def _new_episode(self, env_index: int) -> _EnvEpisode:
        episode = _EnvEpisode(self._next_episode_id)
        self._next_episode_id += 1
        if self._episode_callbacks is not None:
            self._episode_callbacks.start(env_index, episode.episode_id)
        return episode

    def _slot(self, env_index: int, agent: Hashable) -> int:
        """A number for (env copy, agent): rows of one slot form that agent's trajectories."""
        position = self._agent_positions.get(agent)
        if position is None:
            possible = list(self._envs[0].possible_agents) if self._envs else []
            position = possible.index(agent) if agent in possible else len(self._agent_positions)
            self._agent_positions[agent] = position
        return env_index * self._slots_per_env + position

    # --- sampling -----------------------------------------------------------------------------

    def sample(self) -> MultiAgentBatch:
        """Returns `rollout_fragment_length` steps of every env copy, per policy.

        `env_steps` of the result counts env steps (all agents of one env step count once);
        each policy's batch holds one row per agent step of the agents mapped to it.
        """
        complete = self.batch_mode == "complete_episodes"
        target = self.rollout_fragment_length * self.num_envs
        env_steps = 0
        pieces: dict[str, list[SampleBatch]] = {pid: [] for pid in self.policy_map}
        while True:
            records = self._collect_fragment()
            env_steps += target
            for policy_id, policy_records in records.items():
                pieces[policy_id].extend(
                    self._postprocess(policy_id, policy_records, keep_partial=complete))
            rows = sum(len(piece) for parts in pieces.values() for piece in parts)
            if not complete or rows >= target:
                break
        batches = {pid: concat_samples(parts) for pid, parts in pieces.items() if parts}
        batch = MultiAgentBatch(batches, env_steps)
        if self.callbacks is not None:
            self.callbacks.on_sample_end(worker=self, batch=batch)
        return batch

    def pop_filter_deltas(self) -> dict[str, Any]:
        """Policy id -> its observation filter's statistics since the last call."""
        return {pid: policy.observation_filter.pop_delta()
                for pid, policy in self.policy_map.items()
                if policy.observation_filter is not None}

    def set_filter_states(self, states: dict[str, Any]) -> None:
        """Normalizes with the learner's merged statistics, per policy, from now on."""
        for pid, state in states.items():
            policy = self.policy_map.get(pid)
            if policy is not None and policy.observation_filter is not None:
                policy.observation_filter.set_running(state)

    def pop_custom_metrics(self) -> list[dict[str, float]]:
        """The callbacks' custom metrics of the episodes that ended since the last call."""
        return [] if self._episode_callbacks is None else (
            self._episode_callbacks.pop_custom_metrics())

    def _collect_fragment(self) -> dict[str, list[_StepRecord]]:
        envs = self._vector_env()
        records: dict[str, list[_StepRecord]] = {pid: [] for pid in self.policy_map}
        for _ in range(self.rollout_fragment_length):
            for policy_id, record in self._step_once(envs).items():
                records[policy_id].append(record)
        return records

    def _step_once(self, envs: list[ProtocolCheckedParallelEnv]) -> dict[str, _StepRecord]:
        """One step of every env copy: one forward pass per policy, then the env steps."""
        grouped: dict[str, tuple[list[int], list[tuple[int, Hashable]], list[Any]]] = {}
        policy_for = self.multi_agent.policy_for
        for env_index, env in enumerate(envs):
            observations = self._observations[env_index]
            for agent in env.agents:
                slots, agents, raw = grouped.setdefault(policy_for(agent), ([], [], []))
                slots.append(self._slot(env_index, agent))
                agents.append((env_index, agent))
                raw.append(observations[agent])
        pending: dict[str, _PendingRows] = {}
        env_actions: list[dict[Hashable, Any]] = [{} for _ in envs]
        for policy_id, (slots, agents, raw) in grouped.items():
            policy = self.policy_map[policy_id]
            raw_batch = _stack_observations(raw)
            obs_rows = policy.preprocess(raw_batch, update_filter=True)
            state_in = self._slot_states(policy, slots)
            prev = self._slot_previous(policy, slots)
            actions, state_out, extras = policy.compute_actions(raw_batch, state_in or None,
                                                                explore=True, **prev_kwargs(prev))
            for row, slot in enumerate(slots) if state_out else ():
                self._states[slot] = [value[row] for value in state_out]
            to_env = self._env_actions(policy, actions)
            for row, (env_index, agent) in enumerate(agents):
                env_actions[env_index][agent] = to_env[row]
            pending[policy_id] = _PendingRows(slots, agents, {
                "obs": obs_rows, "actions": actions, **extras, **state_columns(state_in),
                **prev_kwargs(prev)})
        step_results = [env.step(actions) for env, actions in zip(envs, env_actions)]
        records = {policy_id: self._finish_rows(policy_id, rows, step_results)
                   for policy_id, rows in pending.items()}
        for env_index, (env, result) in enumerate(zip(envs, step_results)):
            self._advance_episode(env_index, env, result)
        return records

    def _slot_states(self, policy: Any, slots: list[int]) -> list[np.ndarray]:
        """A recurrent policy's state for these slots, batch first (`[]` when stateless)."""
        initial = policy.initial_state()
        if not initial:
            return []
        per_slot = [self._states.get(slot, initial) for slot in slots]
        return [np.stack([state[index] for state in per_slot]) for index in range(len(initial))]

    def _slot_previous(self, policy: Any, slots: list[int]) -> list[np.ndarray]:
        """`[prev_actions, prev_rewards]` of these slots for a model that reads them (zeros at
        an agent's first step); `[]` for other models."""
        prev = initial_prev_inputs(policy, len(slots))
        for row, slot in enumerate(slots) if prev else ():
            if slot in self._previous:
                prev[0][row], prev[1][row] = self._previous[slot]
        return prev

    def _finish_rows(self, policy_id: str, rows: _PendingRows,
                     step_results: list[tuple]) -> _StepRecord:
        """Adds what the envs answered (rewards, flags, next observations) to a policy's rows."""
        count = len(rows.agents)
        rewards = np.empty(count, dtype=np.float32)
        terminateds = np.empty(count, dtype=bool)
        truncateds = np.empty(count, dtype=bool)
        next_raw = []
        eps_id = np.empty(count, dtype=np.int64)
        t = np.empty(count, dtype=np.int64)
        for row, (env_index, agent) in enumerate(rows.agents):
            observations, env_rewards, terminations, truncations, _ = step_results[env_index]
            reward = float(env_rewards[agent])
            if not np.isfinite(reward):
                raise ValueError(
                    f"The environment returned a non-finite reward {reward} for agent {agent!r} "
                    f"(env index {env_index} of rollout worker {self.worker_index}); rewards "
                    f"must be finite numbers. Fix the env's step(), or wrap it to clip or "
                    f"replace such rewards.")
            rewards[row] = reward
            terminateds[row] = bool(terminations[agent])
            truncateds[row] = bool(truncations[agent])
            next_raw.append(observations[agent])
            if terminateds[row] or truncateds[row]:
                self._states.pop(rows.slots[row], None)  # its next episode starts afresh
            episode = self._episodes[env_index]
            eps_id[row] = episode.episode_id
            t[row] = episode.length
            episode.agent_returns[agent] += reward
        policy = self.policy_map[policy_id]
        columns = dict(rows.columns)
        train_rewards = training_rewards(rewards, policy.config)
        if "prev_actions" in columns:
            encoded = policy.encode_prev_actions(columns["actions"])
            for row, slot in enumerate(rows.slots):
                if terminateds[row] or truncateds[row]:
                    self._previous.pop(slot, None)
                else:
                    self._previous[slot] = (encoded[row], float(train_rewards[row]))
        columns.update(rewards=train_rewards,
                       terminateds=terminateds, truncateds=truncateds,
                       new_obs=np.asarray(policy.preprocess(_stack_observations(next_raw))),
                       eps_id=eps_id, t=t,
                       agent_index=np.array([self._slot(0, agent) for _, agent in rows.agents],
                                            dtype=np.int64))
        return _StepRecord(np.asarray(rows.slots, dtype=np.int64), columns)

    def _advance_episode(self, env_index: int, env: ProtocolCheckedParallelEnv,
                         result: tuple) -> None:
        """Moves one env copy on: its next observations, or a reset when no agent is left."""
        episode = self._episodes[env_index]
        episode.length += 1
        self._reject_non_finite_observations(result[0], "step()", env_index)
        if self._episode_callbacks is not None:
            self._episode_callbacks.step(env_index, None, float(sum(result[1].values())))
        if env.agents:
            self._observations[env_index] = result[0]
            return
        if self._episode_callbacks is not None:
            self._episode_callbacks.end(env_index)
        policy_returns: dict[str, float] = collections.defaultdict(float)
        for agent, agent_return in episode.agent_returns.items():
            policy_returns[self.multi_agent.policy_for(agent)] += agent_return
        self._completed.append((float(sum(episode.agent_returns.values())), episode.length,
                                dict(policy_returns)))
        for slot in [slot for slot in self._states if slot // self._slots_per_env == env_index]:
            del self._states[slot]
        for slot in [slot for slot in self._previous
                     if slot // self._slots_per_env == env_index]:
            del self._previous[slot]
        self._observations[env_index], _ = env.reset()
        self._reject_non_finite_observations(self._observations[env_index], "reset()", env_index)
        self._episodes[env_index] = self._new_episode(env_index)

    def _reject_non_finite_observations(
            self, observations: Mapping[Hashable, Any], returned_by: str,
            env_index: int | None = None) -> None:
        """Raises where a NaN or infinite observation enters, naming the agent, before any
        policy sees it (integer observations, e.g. MultiAgentArena's, are always finite)."""
        for agent, observation in observations.items():
            if not _non_finite_rows(_single_row_batch(observation)):
                continue
            episode = self._episodes[env_index] if env_index < len(self._episodes) else None
            step = episode.length if episode is not None and returned_by == "step()" else 0
            raise ValueError(
                f"The environment's {returned_by} returned a non-finite observation (NaN or "
                f"inf) for agent {agent!r} at episode step {step} (env index {env_index} of "
                f"rollout worker {self.worker_index}); observations must be finite numbers, or "
                "the policy's outputs and the loss turn into NaN. Fix the env, or wrap it to "
                "replace such values (e.g. with np.nan_to_num).")

    @staticmethod
    def _env_actions(policy: Any, actions: np.ndarray) -> np.ndarray:
        """Box actions clipped to the space's bounds (the batch keeps the unclipped ones)."""
        space = policy.action_space
        if isinstance(space, gym.spaces.Box):
            return np.clip(actions, space.low, space.high)
        return actions

    def _postprocess(self, policy_id: str, records: list[_StepRecord], *,
                     keep_partial: bool) -> list[SampleBatch]:
        """Cuts one policy's rows of a fragment into agent trajectories and postprocesses them.

        When every step has the same agents in the same order (no agent finished early), the
        rows form a (steps, agents) grid and go through the policy's whole-fragment
        postprocessing at once; otherwise each trajectory piece goes on its own.
        """
        if not records:
            return []
        policy = self.policy_map[policy_id]
        first_slots = records[0].slots
        regular = not keep_partial and all(
            np.array_equal(record.slots, first_slots) for record in records)
        if getattr(policy.spec, "time_major", False) and not (
                regular and len(records) == self.rollout_fragment_length):
            self._reject_uneven_streams(policy_id, policy, records)
        if regular:
            # Columns of the (steps, agents) grid are agent streams; postprocess_fragment
            # returns them stream by stream (env-major), each `steps` rows long, as the
            # time-major losses (V-trace) reshape them.
            grid = {name: np.stack([record.columns[name] for record in records])
                    for name in records[0].columns}
            return [policy.postprocess_fragment(grid)]
        slots = np.concatenate([record.slots for record in records])
        steps = np.concatenate([np.full(len(record.slots), index)
                                for index, record in enumerate(records)])
        columns = {name: np.concatenate([record.columns[name] for record in records])
                   for name in records[0].columns}
        order = np.lexsort((steps, slots))
        slots = slots[order]
        columns = {name: value[order] for name, value in columns.items()}
        done = np.logical_or(columns["terminateds"], columns["truncateds"])
        cut = np.flatnonzero((slots[1:] != slots[:-1]) | done[:-1]) + 1
        bounds = zip(np.concatenate([[0], cut]), np.concatenate([cut, [len(slots)]]))
        out = []
        for start, end in bounds:
            piece = SampleBatch({name: value[start:end] for name, value in columns.items()})
            if keep_partial:
                carried = self._partial[policy_id][int(slots[start])]
                if not done[end - 1]:
                    carried.append(piece)  # the agent's episode goes on
                    continue
                if carried:
                    piece = concat_samples([*carried, piece])
                    carried.clear()
            out.append(policy.postprocess_trajectory(piece))
        return out

    def _reject_uneven_streams(self, policy_id: str, policy: Any,
                               records: list[_StepRecord]) -> None:
        """Raises for a time-major policy (V-trace) whose agents did not all act at every step
        of the fragment: their streams are not whole `rollout_fragment_length`-row fragments."""
        steps_per_slot = collections.Counter(
            int(slot) for record in records for slot in record.slots)
        length = self.rollout_fragment_length
        uneven = sorted({agent for agent, position in self._agent_positions.items()
                         for slot, steps in steps_per_slot.items()
                         if slot % self._slots_per_env == position and steps != length},
                        key=str)
        raise ValueError(
            f"Policy {policy_id!r} ({policy.spec.name}) trains with V-trace, which needs every "
            f"agent stream to be a whole fragment of rollout_fragment_length="
            f"{length} steps, but agents {uneven or '(its agents)'} did not act at every "
            f"step of the fragment: agents finishing (or joining) before their env's episode "
            f"ends are not supported by V-trace plans (IMPALA, APPO) yet. Use an algorithm that "
            f"cuts per-agent trajectories instead (PPO, A2C, A3C, PG), or make the env keep all "
            f"agents until the episode ends.")

    # --- weights and stats --------------------------------------------------------------------

    def get_weights(self, policy_ids: Sequence[str] | None = None
                    ) -> dict[str, dict[str, np.ndarray]]:
        """{policy id: weights} of the given policies (default: all)."""
        wanted = self.policy_map if policy_ids is None else policy_ids
        return {pid: self.get_policy(pid).get_weights() for pid in wanted}

    def set_weights(self, weights: Mapping[str, Mapping[str, np.ndarray]],
                    global_vars: dict | None = None) -> None:
        """Loads {policy id: weights} (any subset of the policies) and the global vars."""
        for policy_id, policy_weights in weights.items():
            self.get_policy(policy_id).set_weights(policy_weights)
        if global_vars:
            for policy in self.policy_map.values():
                policy.on_global_var_update(global_vars)

    def get_episode_stats(self) -> list[tuple[float, int, dict[str, float]]]:
        """Returns and clears (summed return, length, {policy id: return}) of the episodes
        finished since the last call; a policy's return sums its agents' rewards."""
        done, self._completed = self._completed, []
        return done

    def evaluate(self, num_episodes: int, seed: int | None = None) -> list[tuple[float, int]]:
        """Runs `num_episodes` episodes without exploration on a fresh env copy; returns the
        (summed return, length) of each."""
        env = ProtocolCheckedParallelEnv(self.env_creator(self.env_config))
        try:
            finished: list[tuple[float, int]] = []
            for episode_index in range(num_episodes):
                observations, _ = env.reset(seed=None if seed is None else seed + episode_index)
                total, length = 0.0, 0
                states: dict[Hashable, list[np.ndarray]] = {}
                previous: dict[Hashable, tuple[Any, float]] = {}  # (action, reward) per agent
                while env.agents:
                    actions = {}
                    for agent in env.agents:
                        policy = self.policy_map[self.multi_agent.policy_for(agent)]
                        prev_action, prev_reward = previous.get(agent, (None, None))
                        action, states[agent], _ = policy.compute_single_action(
                            observations[agent], states.get(agent), explore=False,
                            prev_action=prev_action, prev_reward=prev_reward)
                        actions[agent] = self._env_actions(policy, np.asarray(action))
                        previous[agent] = (action, None)
                    observations, rewards, terminations, truncations, _ = env.step(actions)
                    for agent in actions:
                        previous[agent] = (previous[agent][0], float(rewards.get(agent, 0.0)))
                        if terminations.get(agent) or truncations.get(agent):
                            states.pop(agent, None)
                            previous.pop(agent, None)
                    total += float(sum(rewards.values()))
                    length += 1
                finished.append((total, length))
            return finished
        finally:
            env.close()

    def stop(self) -> None:
        """Closes the env copies."""
        for env in self._envs or []:
            env.close()
        self._envs = None


def _stack_observations(observations: list[Any]) -> Any:
    """Stacks per-agent raw observations into a batch (arrays, or dicts/tuples of them)."""
    first = observations[0]
    if isinstance(first, dict):
        return {key: _stack_observations([obs[key] for obs in observations]) for key in first}
    if isinstance(first, tuple):
        return tuple(_stack_observations([obs[index] for obs in observations])
                     for index in range(len(first)))
    return np.stack([np.asarray(obs) for obs in observations])


class PolicyReturnTracker:
    """The most recent per-policy episode returns, summarized for the Trainer's results.

    Args:
        policy_ids: the policies to report (each gets a value, NaN before any episode).
        maxlen: how many recent episodes the means cover.
    """

    def __init__(self, policy_ids: Sequence[str], maxlen: int) -> None:
        self.policy_ids = list(policy_ids)
        self._returns: collections.deque[dict[str, float]] = collections.deque(maxlen=maxlen)

    def extend(self, policy_returns: Sequence[Mapping[str, float]]) -> None:
        """Adds the {policy id: return} of newly finished episodes."""
        self._returns.extend(dict(returns) for returns in policy_returns)

    def summary(self) -> dict[str, dict[str, float]]:
        """{"policy_reward_mean": {id: mean}, "policy_reward_min": ..., "policy_reward_max":
        ...} over the episodes each policy took part in."""
        means, minimums, maximums = {}, {}, {}
        for policy_id in self.policy_ids:
            values = [returns[policy_id] for returns in self._returns if policy_id in returns]
            nan = float("nan")
            means[policy_id] = float(np.mean(values)) if values else nan
            minimums[policy_id] = float(np.min(values)) if values else nan
            maximums[policy_id] = float(np.max(values)) if values else nan
        return {"policy_reward_mean": means, "policy_reward_min": minimums,
                "policy_reward_max": maximums}


__all__ = ["DEFAULT_POLICY_ID", "MultiAgentRolloutWorker", "MultiAgentSetup", "PolicyEntry",
           "PolicyReturnTracker"]


def multi_agent_setup_for(env: Any, policy_spec: PolicySpec, config: Any,
                          policies: Mapping[str, tuple[PolicySpec, Any]] | None = None
                          ) -> MultiAgentSetup | None:
    """The multi-agent setup for a probe `env`, or None for a single-agent (gymnasium) env.

    Args:
        env: a probe instance of the env.
        policy_spec: the trainer's own policy, used when `policies` is empty: every agent then
            shares the one policy "default_policy".
        config: the trainer's typed config (reads `policy_mapping`, `policies_to_train`).
        policies: policy id -> (PolicySpec, typed config), resolved from `config.policies`.

    Raises:
        ValueError: `policies` are configured for a single-agent env.
    """
    mapping = getattr(config, "policy_mapping", None)
    to_train = getattr(config, "policies_to_train", None)
    if not is_multi_agent_env(env):
        if policies or mapping is not None:
            raise ValueError(
                f"The config sets `policies`/`policy_mapping`, but the env "
                f"({type(env).__name__}) is a single-agent gymnasium env. Multi-agent settings "
                f"need a PettingZoo parallel env (e.g. 'MultiAgentArena-v0'); remove them for "
                f"a single-agent env.")
        return None
    table = dict(policies) if policies else {DEFAULT_POLICY_ID: (policy_spec, config)}
    return MultiAgentSetup.from_env(env, table, mapping, to_train)


def multi_agent_worker_kwargs(kwargs: Mapping[str, Any],
                              setup: MultiAgentSetup) -> dict[str, Any]:
    """`RolloutWorker` constructor arguments turned into `MultiAgentRolloutWorker` ones."""
    single_agent_only = ("policy_spec", "config", "observation_space", "action_space")
    converted = {key: value for key, value in kwargs.items() if key not in single_agent_only}
    converted["multi_agent"] = setup
    converted["callbacks"] = getattr(kwargs.get("config"), "callbacks", None)
    return converted


def learner_policy_state(worker: SamplingWorker) -> dict[str, Any]:
    """What a checkpoint stores of the learner's policies: the one policy's state, or
    {"policies": {policy id: state}} for a multi-agent worker with several policies."""
    if isinstance(worker, MultiAgentRolloutWorker) and len(worker.policy_map) > 1:
        return {"policies": {pid: policy.get_state() for pid, policy in worker.policy_map.items()}}
    return worker.policy.get_state()


def restore_learner_policy_state(worker: SamplingWorker, state: Mapping[str, Any]) -> None:
    """Loads what `learner_policy_state` returned into the learner worker's policies.

    Raises:
        ValueError: the checkpoint's policies differ from the worker's.
    """
    if not (isinstance(worker, MultiAgentRolloutWorker) and len(worker.policy_map) > 1):
        worker.policy.set_state(state)
        return
    saved = dict(state.get("policies", {}))
    if set(saved) != set(worker.policy_map):
        raise ValueError(
            f"The checkpoint holds policies {sorted(saved)}, this trainer has "
            f"{sorted(worker.policy_map)}; restore it into a trainer with the same `policies`.")
    for policy_id, policy_state in saved.items():
        worker.policy_map[policy_id].set_state(policy_state)


def checkpoint_ready_config(config_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A config dict a checkpoint can store: a callable `policy_mapping` becomes its name
    (a rebuilt trainer then needs the mapping passed again in `config`)."""
    mapping = config_dict.get("policy_mapping")
    if not callable(mapping):
        return dict(config_dict)
    name = f"{getattr(mapping, '__module__', '?')}.{getattr(mapping, '__qualname__', mapping)}"
    return {**config_dict, "policy_mapping": f"<callable {name}>"}
