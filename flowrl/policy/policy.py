"""The framework-independent `Policy` interface and the `Saveable` protocol.

`TorchPolicy` (`flowrl.policy.torch_policy`) and `TFPolicy` (`flowrl.policy.tf_policy`)
implement it; an algorithm supplies its losses, model and action selection as a `PolicySpec`
(`flowrl.policy.spec`).
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np

from flowrl.data.sample_batch import SampleBatch, concat_samples
from flowrl.policy.filters import make_observation_filter
from flowrl.policy.model_contract import (
    ACTOR_CRITIC,
    DETERMINISTIC_ACTOR_CRITIC,
    Q_VALUES,
    ModelContract,
    check_model_outputs,
    check_output_count,
    resolve_model_class,
)
from flowrl.policy.models import action_distribution
from flowrl.policy.optimizer_groups import ResolvedGroup, resolve_groups
from flowrl.policy.postprocessing import (
    compute_gae_for_fragment,
    compute_gae_for_trajectory,
    training_rewards,
    trajectory_bounds,
)
from flowrl.policy.recurrent_spec import (
    RecurrentModelSpec,
    encode_prev_actions,
    prev_action_size,
    wrap_recurrent,
)
from flowrl.policy.sequences import (
    add_sequence_columns,
    layout_of,
    sequence_layout,
    sequence_minibatches,
    strip_sequence_columns,
)
from flowrl.policy.spaces import action_offset, action_rows, check_action_space, get_preprocessor

if TYPE_CHECKING:
    from flowrl.policy.spec import PolicySpec


class Saveable(ABC):
    """Something whose full training state round-trips through plain numpy/python values."""

    @abstractmethod
    def get_state(self) -> dict[str, Any]:
        """Returns weights, optimizer state, global vars and coefficients as numpy/python."""

    @abstractmethod
    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores what `get_state` returned (also from a policy of the other framework)."""


class Policy(ABC):
    """Maps observations to actions and learns from `SampleBatch`es; framework-independent.

    `TorchPolicy` and `TFPolicy` are the only subclasses: an algorithm describes its policy
    with a `PolicySpec` (losses, model, action selection, postprocessing, target network) and
    `spec.build(obs_space, action_space, config)` returns the policy. A rollout worker and a
    learner use it like this::

        policy = PPO_POLICY.build(obs_space, action_space, config)
        # rollout worker (state: [] for a stateless model; recurrent: one array per state
        # tensor, batch first; start from policy.initial_state() and reset at episode ends)
        actions, state, extras = policy.compute_actions(raw_obs_batch, state, explore=True)
        rows = policy.preprocess(raw_obs_batch)            # stored as SampleBatch["obs"]
        batch = policy.postprocess_trajectory(piece)       # adds advantages / value_targets
        # learner
        stats = policy.learn_on_batch(batch)               # or learn_on_minibatches(...)
        grads, stats = policy.compute_gradients(batch)     # A3C: on a worker ...
        policy.apply_gradients(grads)                      # ... applied on the learner
        worker_policy.set_weights(policy.get_weights())    # dict of numpy, neutral names
        policy.on_global_var_update({"timestep": t})       # drives schedules (lr, epsilon)
        policy.update_target()                             # with a target network

    Args:
        observation_space: the env's observation space.
        action_space: the env's action space (Discrete, MultiDiscrete or Box).
        config: the algorithm's typed, frozen config; read by attribute (`config.lr`).
        spec: the algorithm's `PolicySpec`.
        worker_index: 0 for the learner's policy, 1..n on rollout workers.
        num_workers: the number of rollout workers (for per-worker exploration).
        seed: this policy's seed; None uses `config.seed`.
        num_threads: the framework's intra-op threads in this process; None leaves it.
    """

    framework: ClassVar[str] = ""

    def __init__(
        self, observation_space: gym.Space, action_space: gym.Space, config: Any, *,
        spec: PolicySpec, worker_index: int = 0, num_workers: int = 0,
        seed: int | None = None, num_threads: int | None = None,
    ) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self.preprocessor = get_preprocessor(observation_space)
        check_action_space(action_space)
        self.spec = spec
        self.config = spec.resolve_config(config)
        self.observation_filter = make_observation_filter(
            getattr(self.config, "observation_filter", "NoFilter"), self.preprocessor.shape,
            self.preprocessor.dtype)
        self.loss_fn = spec.loss_for(self.framework)
        self.worker_index = worker_index
        self.num_workers = num_workers
        self.seed = self.config.seed if seed is None else seed
        self.num_threads = num_threads
        self.global_timestep = 0
        self.lr = float(self.config.lr)
        self.optimizer_groups: list[ResolvedGroup] = []
        self.num_updates = 0
        """Optimizer updates so far (the count optimizer groups' update periods follow)."""
        self.action_selector = spec.action_selection(
            self.config, action_space, worker_index=worker_index, num_workers=num_workers,
            seed=_selector_seed(self.seed))
        self.model_spec = spec.model(self.config, self.preprocessor.shape, action_space)
        model_config = getattr(self.config, "model", None)
        if getattr(model_config, "recurrent", False):
            self.model_spec = wrap_recurrent(self.model_spec, model_config, action_space)
        self.contract: ModelContract = self.model_spec.contract
        self.is_recurrent = False
        self._initial_state: list[np.ndarray] = []
        self.uses_prev_actions = self.uses_prev_rewards = False
        """Whether the model reads the previous action / reward (`lstm_use_prev_*`)."""
        self._acting_prev: list[np.ndarray] = []
        self.prev_action_width = prev_action_size(action_space)
        self._coefficients: dict[str, Any] = {}
        for name in spec.coefficients:
            if not hasattr(self.config, name):
                raise ValueError(
                    f"PolicySpec {spec.name!r} names coefficient {name!r}, but "
                    f"{type(self.config).__name__} has no field {name!r}; add the field to the "
                    f"config class or remove it from PolicySpec.coefficients.")
            self._coefficients[name] = float(getattr(self.config, name))

    def __reduce__(self) -> tuple:
        """Pickles as (class, constructor arguments, full state): plain `pickle` works."""
        arguments = (self.observation_space, self.action_space, self.config)
        options = {"spec": self.spec, "worker_index": self.worker_index,
                   "num_workers": self.num_workers, "seed": self.seed,
                   "num_threads": self.num_threads}
        return (_rebuild_policy, (type(self), arguments, options, self.get_state()))

    # ---- the six abstract methods -------------------------------------------------------------

    def compute_actions(
        self, obs_batch: Any, state: list[np.ndarray] | None = None, *, explore: bool = True,
        prev_actions: np.ndarray | None = None, prev_rewards: np.ndarray | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray], dict[str, np.ndarray]]:
        """Actions for a batch of RAW observations, the state after them, and per-row extras.

        Args:
            obs_batch: raw observations, one row per env (or agent).
            state: a recurrent model's state, one array per state tensor with the batch first
                (None: `initial_state()` for every row); ignored ([]) for stateless models.
            explore: sample / add noise (True) or act greedily (False).
            prev_actions: for a model that reads the previous action (`lstm_use_prev_action`):
                each row's previous action as the model reads it,
                `policy.encode_prev_actions(env_actions)`, zeros at an episode's first step
                (None: zeros for every row). Ignored by other models.
            prev_rewards: the previous reward per row, 0 at an episode's first step (None:
                zeros), for a model with `lstm_use_prev_reward`.

        Returns:
            `(actions, state_out, extras)`: env-space actions; the state after this step (`[]`
            for a stateless model); extras such as `action_logp`, `action_dist_inputs`,
            `vf_preds` for sampling, all numpy with a leading batch dimension. How actions are
            chosen is the spec's `ActionSelector`.
        """
        if isinstance(state, bool):
            raise TypeError(f"compute_actions(obs, {state}): the second argument is the "
                            f"recurrent state now; pass explore={state} by keyword.")
        rows = self.preprocess(obs_batch)
        if rows.dtype != np.uint8 and rows.dtype != np.float32:
            rows = rows.astype(np.float32)
        state = self._state_for(len(rows), state)
        self._acting_prev = self._prev_inputs(len(rows), prev_actions, prev_rewards)
        try:
            actions, state_out, extras = self.action_selector.compute_actions(
                self, rows, explore, state)
        finally:
            self._acting_prev = []
        return self._to_env_actions(np.asarray(actions)), state_out, extras

    def encode_prev_actions(self, env_actions: Any) -> np.ndarray:
        """Env actions as a recurrent wrapper's previous-action input: one-hot rows for
        discrete spaces, the flat action for a Box (float32, one row per action)."""
        return encode_prev_actions(self.action_space, action_rows(self.action_space,
                                                                  env_actions))

    def _prev_inputs(self, count: int, prev_actions: np.ndarray | None,
                     prev_rewards: np.ndarray | None) -> list[np.ndarray]:
        """`[prev_actions, prev_rewards]` as a model that reads them gets them (zeros where
        not given); `[]` for other models."""
        if not (self.uses_prev_actions or self.uses_prev_rewards):
            return []
        width = self.prev_action_width
        actions = (np.zeros((count, width), np.float32) if prev_actions is None
                   else np.asarray(prev_actions, np.float32).reshape(count, width))
        rewards = (np.zeros(count, np.float32) if prev_rewards is None
                   else np.asarray(prev_rewards, np.float32).reshape(count))
        return [actions, rewards]

    def initial_state(self) -> list[np.ndarray]:
        """A recurrent model's initial state: one float32 array per state tensor, without the
        batch dimension; `[]` for a stateless model."""
        return [value.copy() for value in self._initial_state]

    def _state_for(self, batch_size: int, state: list[np.ndarray] | None) -> list[np.ndarray]:
        """The state a forward pass gets: `[]` when stateless, the initial state when None."""
        if not self.is_recurrent:
            return []
        if state is None or len(state) == 0:
            return [np.repeat(value[None], batch_size, axis=0) for value in self._initial_state]
        if len(state) != len(self._initial_state):
            raise ValueError(
                f"Policy {self.spec.name!r} has {len(self._initial_state)} state tensor(s), got "
                f"a state of {len(state)}; pass the state_out of the previous compute_actions "
                "call (or None for initial_state()).")
        state = [np.asarray(value, np.float32) for value in state]
        for index, (value, initial) in enumerate(zip(state, self._initial_state)):
            if value.shape != (batch_size, *initial.shape):
                raise ValueError(
                    f"state[{index}] has shape {value.shape}, expected "
                    f"{(batch_size, *initial.shape)} (batch first, one row per observation).")
        return state

    # ---- forward passes the action selectors use (framework implementations) ------------------

    def sample_actions(self, obs_rows: np.ndarray, explore: bool, state: list[np.ndarray]
                       ) -> tuple[np.ndarray, list[np.ndarray], dict[str, np.ndarray]]:
        """Actor-critic models: samples (or takes the mode of) the action distribution;
        returns (actions, state_out, extras)."""
        raise TypeError(self._wrong_model("sample an action distribution", ACTOR_CRITIC))

    def forward(self, obs_rows: np.ndarray, state: list[np.ndarray] | None = None,
                prev: list[np.ndarray] | None = None
                ) -> tuple[tuple[np.ndarray, ...], list[np.ndarray]]:
        """The model's contract outputs for PREPROCESSED rows, as numpy, without gradients.

        Returns `(outputs, state_out)`: outputs in the contract's order (actor-critic:
        `(dist_inputs, values)`; Q: `(q_values,)`; deterministic actor: `(actions,)`), and the
        state after this step (`[]` for a stateless model; `state=None` starts recurrent
        models from `initial_state()`). `prev` is `[prev_actions, prev_rewards]` for a model
        that reads them (None: those of the `compute_actions` call in progress, else zeros).
        `TorchPolicy` and `TFPolicy` implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def check_contract(self, contract: ModelContract, what: str) -> None:
        """Raises TypeError unless the policy's model meets `contract` (`what` it would do)."""
        if self.contract is not contract:
            raise TypeError(self._wrong_model(what, contract))

    def compute_q_values(self, obs_rows: np.ndarray) -> np.ndarray:
        """Q models: Q-values (float32, shape (B, num_actions)) for preprocessed rows."""
        self.check_contract(Q_VALUES, "compute Q-values")
        return self.forward(obs_rows)[0][0]

    def compute_deterministic_actions(self, obs_rows: np.ndarray) -> np.ndarray:
        """Deterministic actors: actions in [-1, 1] (float32, shape (B, A))."""
        self.check_contract(DETERMINISTIC_ACTOR_CRITIC, "compute deterministic actions")
        return self.forward(obs_rows)[0][0]

    def compute_values(self, obs_rows: np.ndarray,
                       state: list[np.ndarray] | None = None) -> np.ndarray:
        """Value estimates (float32, shape (B,)) for PREPROCESSED observation rows (recurrent
        models: from `state`, default `initial_state()`)."""
        if self.contract is not ACTOR_CRITIC:
            raise NotImplementedError(f"{type(self).__name__} has no value function: its model "
                                      f"contract is {self.contract.name!r}")
        return self.forward(obs_rows, state)[0][1]

    # ---- building the model ---------------------------------------------------------------------

    def _build_models(self, rng: np.random.Generator, distributions: Mapping[str, Any],
                      **model_options: Any) -> None:
        """Builds `model` (and `target_model`, `dist_class`, `model_weights`): the spec's
        built-in class of this framework, or the config's `custom_model`
        (`model_options`, e.g. Torch's `device`, go to a built-in model's constructor)."""
        spec, model_config = self.model_spec, self.config.model
        self.dist_name, self.dist_class = None, None
        if self.contract is ACTOR_CRITIC:
            self.dist_name, self.dist_class = action_distribution(
                self.action_space, model_config.free_log_std, distributions)
        custom = getattr(model_config, "custom_model", None)
        if isinstance(spec, RecurrentModelSpec) and custom is not None:
            # use_lstm around a custom model: the model is the wrapper's encoder.
            model_class = _import_path(getattr(spec, f"{self.framework}_class"))
            encoder_class = resolve_model_class(custom, self.framework)
            options = dict(getattr(model_config, "custom_model_config", {}) or {})
            init_seed = int(rng.integers(2**31 - 1))
            initial_weights = spec.initial_weights(rng)

            def make() -> Any:
                encoders = [self._new_custom_model(encoder_class, options, init_seed + index,
                                                   num_outputs=spec.feature_size)
                            for index in range(len(spec.towers))]
                return model_class(spec, initial_weights, encoders=encoders, **model_options)
        elif custom is None:
            model_class = _import_path(getattr(spec, f"{self.framework}_class"))
            initial_weights = spec.initial_weights(rng)

            def make() -> Any:
                return model_class(spec, initial_weights, **model_options)
        else:
            model_class = resolve_model_class(custom, self.framework)
            options = dict(getattr(model_config, "custom_model_config", {}) or {})
            init_seed = int(rng.integers(2**31 - 1))

            def make() -> Any:
                return self._new_custom_model(model_class, options, init_seed)
        self.model_name = getattr(model_class, "__qualname__", str(model_class))
        self.model = make()
        self.uses_prev_actions = bool(getattr(self.model, "uses_prev_actions", False))
        self.uses_prev_rewards = bool(getattr(self.model, "uses_prev_rewards", False))
        # Custom models, and an algorithm's own recurrent ones, are probed against the contract.
        probe = custom is not None or callable(getattr(self.model, "initial_state", None))
        if probe:
            self._check_custom_model(self.model)
        self.model_weights = self._weights_view(self.model)
        self._weight_shapes = {name: tuple(np.shape(value))
                               for name, value in self.model_weights.get_weights().items()}
        self.target_model = self.target_weights = None
        if self.spec.target_network:
            self.target_model = make()
            if probe:
                self._check_custom_model(self.target_model)
            self.target_weights = self._weights_view(self.target_model)
            self.target_weights.set_weights(self.model_weights.get_weights())

    def _setup_optimizer_groups(self) -> None:
        """Resolves the spec's optimizer groups over the model's weights (after the model is
        built); the first group's lr is `policy.lr`."""
        self.optimizer_groups = resolve_groups(self.spec.optimizer_groups, self.config,
                                               self.model_weights.names,
                                               policy_name=self.spec.name)
        self._grouped = bool(self.spec.optimizer_groups)
        self.lr = self.optimizer_groups[0].lr

    def _group_states(self, saved: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """A saved `get_state()["optimizer"]` as one state per optimizer group (a state from a
        policy without groups has one optimizer's); restores `num_updates`."""
        groups = self.optimizer_groups
        if "groups" not in saved:
            if len(groups) > 1:
                raise ValueError(
                    f"the state holds one optimizer, but policy {self.spec.name!r} has "
                    f"optimizer groups {[g.name for g in groups]}; restore a state saved by a "
                    "policy of the same PolicySpec.")
            return [saved]
        missing = [g.name for g in groups if g.name not in saved["groups"]]
        if missing:
            raise ValueError(
                f"the state has optimizer groups {sorted(saved['groups'])}, but policy "
                f"{self.spec.name!r} needs {[g.name for g in groups]} (missing {missing}); "
                "restore a state saved by a policy of the same PolicySpec.")
        self.num_updates = int(saved.get("num_updates", 0))
        return [saved["groups"][g.name] for g in groups]

    def _due_groups(self) -> list[ResolvedGroup]:
        """The groups that step on the next update."""
        return [group for group in self.optimizer_groups if group.due(self.num_updates)]

    def _new_custom_model(self, model_class: Any, options: Mapping[str, Any],
                          init_seed: int, num_outputs: int | None = None) -> Any:
        """A custom model on this policy's device (frameworks override); `num_outputs`
        defaults to the contract's (a recurrent wrapper's encoder gets its feature size)."""
        size = self.model_spec.output_size if num_outputs is None else num_outputs
        return model_class(self.preprocessor.shape, self.action_space, size,
                           self.config.model, **options)

    def _weights_view(self, model: Any) -> Any:
        """The framework's weight view of a model (`names`, `params`, `parameters()`, ...)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _weights_view()")

    def _to_framework(self, array: np.ndarray) -> Any:
        """A numpy array as this framework's tensor (on the policy's device)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _to_framework()")

    def _check_custom_model(self, model: Any) -> None:
        """Calls a custom model once on zeros (this also creates a Keras model's lazy
        variables) and checks its outputs and state against the contract."""
        contract, size = self.contract, self.model_spec.output_size
        dtype = np.uint8 if self.preprocessor.dtype == np.uint8 else np.float32
        rows = np.zeros((2, *self.preprocessor.shape), dtype)
        obs = self._to_framework(rows)
        initial = getattr(model, "initial_state", None)
        state = [np.asarray(_as_numpy(value), np.float32) for value in initial()] if callable(
            initial) else []
        if state and not contract.recurrent:
            raise ValueError(f"model {self.model_name} is recurrent (initial_state() is not "
                             f"empty), but the {contract.name!r} contract has no recurrent "
                             "form yet; use a stateless model.")
        named: dict[str, Any] = {}
        if state:
            steps = 3
            sequences = self._to_framework(np.zeros((2, steps, *rows.shape[1:]), dtype))
            batch_state = [self._to_framework(np.repeat(v[None], 2, axis=0)) for v in state]
            seq_lens = self._to_framework(np.full(2, steps, np.int64))
            *outputs, state_out = check_output_count(
                contract, model(sequences, batch_state, seq_lens), recurrent=True,
                model_name=self.model_name)
            self._check_state_out(state, state_out)
        elif contract is DETERMINISTIC_ACTOR_CRITIC:
            outputs = [model.actor(obs)]
            named["critics"] = [_as_numpy(q) for q in model.critics(obs, outputs[0])]
            steps = None
        else:
            outputs = check_output_count(contract, model(obs), recurrent=False,
                                         model_name=self.model_name)
            steps = None
        named.update({name: _as_numpy(value) for name, value in zip(contract.outputs, outputs)})
        check_model_outputs(contract, named, batch_size=2, num_outputs=size,
                            model_name=self.model_name, time_steps=steps)
        self.is_recurrent = bool(state)
        self._initial_state = state

    def _check_state_out(self, state: list[np.ndarray], state_out: Any) -> None:
        shapes = [tuple(np.shape(_as_numpy(value))) for value in state_out]
        expected = [(2, *value.shape) for value in state]
        if shapes != expected:
            raise ValueError(
                f"model {self.model_name} returned state_out of shapes {shapes}, expected "
                f"{expected}: one tensor per initial_state() entry, with the batch first.")

    def _target(self, what: str) -> Any:
        """The target model, or a clear error when the spec has no target network."""
        if self.target_model is None:
            raise ValueError(
                f"Policy {self.spec.name!r} cannot {what}: it has no target network. Set "
                f"target_network=True in its PolicySpec.")
        return self.target_model

    def _wrong_model(self, what: str, contract: ModelContract) -> str:
        return (f"Policy {self.spec.name!r} cannot {what}: its model contract is "
                f"{self.contract.name!r}, and that needs a {contract.name!r} model "
                f"({contract.call}). Choose an action selection that fits the model in the "
                f"PolicySpec.")

    def _to_env_actions(self, actions: np.ndarray) -> np.ndarray:
        """Model-space actions (indices from 0, float rows) to the env's action space."""
        space = self.action_space
        if not isinstance(space, gym.spaces.Box):
            actions = actions + action_offset(space)
        return actions.reshape((len(actions),) + space.shape).astype(space.dtype, copy=False)

    @abstractmethod
    def learn_on_batch(self, batch: SampleBatch) -> dict[str, float]:
        """Exactly one optimizer step on the whole batch; returns the loss stats."""

    @abstractmethod
    def compute_gradients(self, batch: SampleBatch) -> tuple[list[np.ndarray], dict[str, float]]:
        """Gradients (in `get_weights()` key order, clipped by `grad_clip`) and loss stats."""

    @abstractmethod
    def apply_gradients(self, gradients: list[np.ndarray]) -> None:
        """One optimizer step with the given gradients (as `compute_gradients` returns them)."""

    @abstractmethod
    def get_weights(self) -> dict[str, np.ndarray]:
        """The model weights as numpy arrays under framework-neutral names."""

    @abstractmethod
    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Loads weights as `get_weights` returns them (from either framework)."""

    @abstractmethod
    def get_target_weights(self) -> dict[str, np.ndarray]:
        """The target network's weights (neutral names); an error without a target network."""

    @abstractmethod
    def update_target(self, tau: float = 1.0) -> None:
        """Moves the target network toward the model: `target = tau * model + (1-tau) * target`.

        Raises:
            ValueError: when the spec has no target network, or tau is outside (0, 1].
        """

    @abstractmethod
    def run_on_batch(self, fn: Callable[[Policy, Mapping[str, Any]], Mapping[str, Any]],
                     batch: SampleBatch) -> dict[str, np.ndarray]:
        """Calls `fn(policy, tensors)` (a function of this framework) without gradients and
        returns its outputs as numpy, e.g. TD errors for priorities."""

    # ---- shared behaviour ---------------------------------------------------------------------

    def preprocess(self, obs_batch: Any, *, update_filter: bool = False) -> np.ndarray:
        """Validates raw observations and returns the rows stored as `SampleBatch["obs"]`:
        normalized by the observation filter when the config asks for one (`update_filter`:
        count these observations in its statistics first, as a rollout worker does)."""
        rows = self.preprocessor.transform(obs_batch)
        if self.observation_filter is None:
            return rows
        if update_filter:
            self.observation_filter.push(rows)
        return self.observation_filter.normalize(rows)

    def filter_state(self) -> dict[str, Any] | None:
        """The observation filter's statistics (None without a filter), for checkpoints."""
        return None if self.observation_filter is None else self.observation_filter.get_state()

    def set_filter_state(self, state: Mapping[str, Any] | None) -> None:
        """Restores what `filter_state` returned."""
        if self.observation_filter is not None and state is not None:
            self.observation_filter.set_state(state)

    def compute_single_action(
        self, obs: Any, state: list[np.ndarray] | None = None, *, explore: bool = True,
        prev_action: Any = None, prev_reward: float | None = None,
    ) -> tuple[Any, list[np.ndarray], dict[str, Any]]:
        """`compute_actions` for one raw observation and its state, without batch dimensions:
        returns `(action, state_out, extras)` (`state_out` is `[]` for stateless models).

        `prev_action` (an env action) and `prev_reward` (the env's reward; clipped as in
        training) are the previous step's, for a model that reads them; None at an episode's
        first step."""
        batch_state = None if state is None else [np.asarray(v)[None] for v in state]
        prev_actions = None if prev_action is None else self.encode_prev_actions(
            _add_batch_dim(prev_action))
        prev_rewards = None if prev_reward is None else training_rewards(
            np.asarray([prev_reward], np.float32), self.config)
        actions, state_out, extras = self.compute_actions(
            _add_batch_dim(obs), batch_state, explore=explore, prev_actions=prev_actions,
            prev_rewards=prev_rewards)
        return (actions[0], [value[0] for value in state_out],
                {name: value[0] for name, value in extras.items()})

    def postprocess_trajectory(self, batch: SampleBatch) -> SampleBatch:
        """Adds training columns to one trajectory piece of one env (default: GAE).

        The piece's rows are in time order; it bootstraps from `V(new_obs[-1])` unless its last
        row terminated.
        """
        postprocess = self.spec.postprocess
        return batch if postprocess is None else postprocess(self, batch)

    def postprocess_fragment(self, columns: Mapping[str, np.ndarray]) -> SampleBatch:
        """Postprocesses a fragment of N envs (arrays shaped (T, N, ...)); rows env by env.

        Every env's rows are cut into trajectory pieces at episode ends and at the fragment's
        end, and each piece goes through `postprocess_trajectory`. With the default GAE
        postprocessing all pieces are computed at once (`compute_gae_for_fragment`: one value
        forward for every bootstrap), with the same result.
        """
        if self.spec.postprocess is compute_gae_for_trajectory:
            return compute_gae_for_fragment(self, dict(columns))
        pieces = []
        for env in range(columns["rewards"].shape[1]):
            rows = {name: value[:, env] for name, value in columns.items()}
            for start, end in trajectory_bounds(rows["terminateds"], rows["truncateds"]):
                piece = SampleBatch({name: value[start:end] for name, value in rows.items()})
                pieces.append(self.postprocess_trajectory(piece))
        return concat_samples(pieces)

    def learn_on_minibatches(
        self,
        batch: SampleBatch,
        *,
        num_sgd_iter: int,
        sgd_minibatch_size: int,
        seed: int | None = None,
    ) -> dict[str, float]:
        """`num_sgd_iter` epochs of SGD over shuffled minibatches of the batch.

        `sgd_minibatch_size=0` (or >= len(batch)) means whole-batch steps. The last minibatch of
        an epoch may be smaller. Returns the stats averaged over the steps of the LAST epoch.
        Frameworks override this with a version that converts the batch to tensors once.
        """
        _check_sgd_args(num_sgd_iter, sgd_minibatch_size)
        size = sgd_minibatch_size or len(batch)
        rng = np.random.default_rng(seed)
        epoch_stats: list[dict[str, float]] = []
        for _ in range(num_sgd_iter):
            epoch_stats = [self.learn_on_batch(mb) for mb in batch.minibatches(size, seed=rng)]
        return average_stats(epoch_stats)

    def on_global_var_update(self, global_vars: Mapping[str, Any]) -> None:
        """Receives global variables (``{"timestep": t}``) and updates schedules (lr, epsilon)."""
        if "timestep" in global_vars:
            self.global_timestep = int(global_vars["timestep"])
            for index, group in enumerate(self.optimizer_groups):
                if group.schedule is not None:
                    self._set_group_lr(index, group.schedule(self.global_timestep))
            self.action_selector.on_global_var_update(self.global_timestep)

    def _set_learning_rate(self, lr: float) -> None:
        """Sets the first (a single-group spec's only) optimizer group's learning rate."""
        self._set_group_lr(0, lr)

    def _set_group_lr(self, index: int, lr: float) -> None:
        """Sets optimizer group `index`'s learning rate (frameworks also update their
        optimizers); group 0's is `policy.lr`."""
        self.optimizer_groups[index].lr = float(lr)
        if index == 0:
            self.lr = float(lr)

    @property
    def coefficient_names(self) -> list[str]:
        """Names accepted by `get_coefficient` / `set_coefficient` (`spec.coefficients`)."""
        return sorted(self._coefficients)

    def get_coefficient(self, name: str) -> Any:
        """A mutable loss coefficient (a float in Torch, a `tf.Variable` in TF)."""
        self._check_coefficient(name)
        return self._coefficients[name]

    def set_coefficient(self, name: str, value: float) -> None:
        """Changes a loss coefficient; the loss sees it on its next call."""
        self._check_coefficient(name)
        self._coefficients[name] = float(value)

    def _coefficient_values(self) -> dict[str, float]:
        return {name: float(self.get_coefficient(name)) for name in self._coefficients}

    def _check_coefficient(self, name: str) -> None:
        if name not in self._coefficients:
            raise ValueError(
                f"unknown loss coefficient {name=}; known: {self.coefficient_names}. "
                "Coefficients are the config fields a PolicySpec lists in `coefficients`"
            )

    def _check_obs_rows(self, rows: np.ndarray, column: str) -> np.ndarray:
        if rows.shape[1:] != self.preprocessor.shape:
            raise ValueError(
                f"SampleBatch[{column!r}] rows do not fit observation_space="
                f"{self.observation_space}: expected preprocessed rows of shape "
                f"(batch_size, {', '.join(map(str, self.preprocessor.shape))}), got "
                f"shape={rows.shape}; store policy.preprocess(raw_obs) in the batch"
            )
        return rows

    def _model_input(self, rows: np.ndarray, column: str = "obs") -> np.ndarray:
        """Checks preprocessed rows and casts them to the model's input dtype (uint8 or
        float32)."""
        rows = self._check_obs_rows(np.asarray(rows), column)
        return rows if rows.dtype == np.uint8 else rows.astype(np.float32, copy=False)

    def _training_arrays(self, batch: SampleBatch) -> dict[str, np.ndarray]:
        """The batch's columns as the arrays a loss sees: validated actions (model indices or
        float32 rows), float32 floats (uint8 images stay uint8), int64 ints, bools; other
        columns (objects, strings) are left out."""
        if self.is_recurrent and not self.spec.recurrent_loss:
            raise NotImplementedError(
                f"Policy {self.spec.name!r} acts with the recurrent model {self.model_name}, but "
                "its losses take no recurrent state (PolicySpec.recurrent_loss=False): they "
                "would call the model without its state. Train a stateless model, or use an "
                "algorithm whose losses read state_in_* and seq_lens.")
        arrays = {}
        sequences = self.spec.batch_of_sequences
        for name, column in batch.items():
            if name == "actions":
                column = _per_step(column, sequences,
                                   lambda rows: action_rows(self.action_space, rows))
            elif name in ("obs", "new_obs"):
                column = _per_step(column, sequences,
                                   lambda rows, name=name: self._model_input(rows, name))
            elif column.dtype.kind == "f":
                column = column.astype(np.float32, copy=False)
            elif column.dtype.kind in "iu":
                column = column.astype(np.int64, copy=False)
            elif column.dtype.kind != "b":
                continue
            arrays[name] = column
        if self.is_recurrent and not sequences:
            arrays = self._with_sequences(batch, arrays)
        return arrays

    @property
    def max_seq_len(self) -> int:
        """The longest sequence a recurrent model trains on (`model.max_seq_len`)."""
        return int(getattr(self.config.model, "max_seq_len", 20))

    def _with_sequences(self, batch: SampleBatch, arrays: dict[str, np.ndarray]
                        ) -> dict[str, np.ndarray]:
        """A recurrent policy's training arrays with the batch cut into sequences (episode
        ends and `max_seq_len`; `flowrl.policy.sequences`)."""
        state_columns = batch.state_in_columns()
        missing = [name for name in ("eps_id", "t") if name not in batch]
        if len(state_columns) != len(self._initial_state) or missing:
            raise ValueError(
                f"Policy {self.spec.name!r} trains the recurrent model {self.model_name}, which "
                f"needs each step's stored state ({len(self._initial_state)} column(s) "
                f"state_in_0..) and the columns eps_id and t to cut the batch into sequences; "
                f"the batch has state columns {state_columns}"
                + (f" and lacks {missing}" if missing else "") + ". Train on batches sampled by "
                "a rollout worker of this policy, which stores them.")
        for name in ("prev_actions", "prev_rewards"):
            wanted = self.uses_prev_actions if name == "prev_actions" else self.uses_prev_rewards
            if wanted and name not in arrays:
                raise ValueError(f"the model reads the previous step ({name}), but the batch "
                                 f"has no {name!r} column; sample with a rollout worker of this "
                                 "policy, which stores it.")
        layout = sequence_layout(batch["eps_id"], batch["t"], self.max_seq_len,
                                 agent_index=batch.get("agent_index"))
        return add_sequence_columns(arrays, layout, state_columns)

    def _sequence_minibatches(self, arrays: Mapping[str, np.ndarray], size: int,
                              rng: np.random.Generator) -> Iterator[dict[str, np.ndarray]]:
        """One shuffled epoch of minibatches of whole sequences (about `size` steps each)."""
        layout = layout_of(arrays, self.max_seq_len)
        state_columns = [name for name in arrays if name.startswith(SampleBatch.STATE_IN_PREFIX)]
        return sequence_minibatches(strip_sequence_columns(arrays), layout, state_columns,
                                    size, rng)

    def compute_values_after(self, rows: Mapping[str, np.ndarray]) -> np.ndarray:
        """V(new_obs) of steps (float32 [B]), to bootstrap from: a stateless model's value of
        `new_obs`; a recurrent one's after it stepped through `obs` from the stored
        `state_in_*` (and, if it reads them, with the step's action and reward as the previous
        ones). `rows` are a batch's columns (preprocessed `obs`, `new_obs`, ...)."""
        if not self.is_recurrent:
            return self.compute_values(rows["new_obs"])
        count = len(rows["new_obs"])
        state = [rows[f"{SampleBatch.STATE_IN_PREFIX}{i}"]
                 for i in range(len(self._initial_state))]
        prev = self._prev_inputs(count, rows.get("prev_actions"), rows.get("prev_rewards"))
        _, state_after = self.forward(rows["obs"], state, prev=prev)
        next_prev = self._prev_inputs(
            count, self.encode_prev_actions(rows["actions"]) if self.uses_prev_actions else None,
            rows["rewards"] if self.uses_prev_rewards else None)
        return self.forward(rows["new_obs"], state_after, prev=next_prev)[0][1]

    def _check_weights(self, weights: Mapping[str, np.ndarray],
                       shapes: Mapping[str, tuple[int, ...]]) -> None:
        missing, extra = sorted(set(shapes) - set(weights)), sorted(set(weights) - set(shapes))
        if missing or extra:
            raise ValueError(
                f"weights do not match this {type(self).__name__}: {missing=}, {extra=}; both "
                "policies need the same spaces and model config"
            )
        for name, shape in shapes.items():
            got = tuple(np.shape(weights[name]))
            if got != tuple(shape):
                raise ValueError(
                    f"weight {name!r} has shape {got}, expected {tuple(shape)}; both policies "
                    "need the same spaces and model config"
                )


def average_stats(stats: list[Mapping[str, float]]) -> dict[str, float]:
    """Averages a list of stats dicts key by key."""
    if not stats:
        return {}
    return {key: float(np.mean([s[key] for s in stats])) for key in stats[0]}


def raise_if_not_finite(stats: Mapping[str, float], grad_norm: float) -> None:
    """Raises `FloatingPointError` naming the loss terms if any stat or the gradient is NaN/inf."""
    values = dict(stats)
    values["grad_gnorm"] = grad_norm
    bad = [name for name, value in values.items() if not math.isfinite(value)]
    if bad:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        raise FloatingPointError(
            f"non-finite loss or gradient in {bad} ({shown}); the update was not applied. "
            "Lower lr, set grad_clip, or check rewards and observations for NaN/inf"
        )


def learner_gpus(config: Any, worker_index: int, count_gpus: Callable[[], int],
                 how: str) -> float:
    """The GPUs a policy trains on: `config.num_gpus` for the learner's policy (worker 0), 0
    on rollout workers (they always act on the CPU).

    Args:
        config: the algorithm config (`num_gpus`; a config without the field asks for none).
        worker_index: 0 for the learner's policy, 1..n on rollout workers.
        count_gpus: returns the GPUs the framework sees in this process (only called when
            the policy asks for some).
        how: how they are counted, for the error, e.g. "torch.cuda.device_count()".

    Raises:
        ValueError: the learner asks for more GPUs than there are (a fraction needs one),
            naming both numbers.

    Examples:
        >>> class Config: num_gpus = 0.5
        >>> learner_gpus(Config(), 0, lambda: 1, "n"), learner_gpus(Config(), 2, lambda: 0, "n")
        (0.5, 0.0)
    """
    requested = float(getattr(config, "num_gpus", 0.0) or 0.0)
    if worker_index != 0 or requested <= 0:
        return 0.0
    needed = math.ceil(requested)
    available = count_gpus()
    if needed > available:
        share = f" (a {requested:g} share of one)" if requested < 1 else ""
        raise ValueError(
            f"num_gpus={requested:g} asks for {needed} GPU{'s' if needed != 1 else ''}{share} "
            f"for the learner, but this machine has {available} visible GPU"
            f"{'s' if available != 1 else ''} ({how} == {available}); set num_gpus=0 to "
            f"train the learner on the CPU"
            + (f", or at most num_gpus={available}" if available else
               " (or install a CUDA build of the framework and check CUDA_VISIBLE_DEVICES)")
            + ".")
    return requested


def seed_streams(seed: int | None) -> tuple[np.random.Generator, int, int]:
    """Independent random streams for one policy: (weight-init rng, sampling seed, shuffle seed).

    The same seed gives the same initial weights in Torch and in TF.
    """
    init, sampling, shuffling = np.random.SeedSequence(seed).spawn(3)
    return (np.random.default_rng(init), int(sampling.generate_state(1, np.uint64)[0] >> 2),
            int(shuffling.generate_state(1, np.uint64)[0] >> 2))


def _check_sgd_args(num_sgd_iter: int, sgd_minibatch_size: int) -> None:
    if num_sgd_iter < 1:
        raise ValueError(f"num_sgd_iter must be >= 1, got {num_sgd_iter=}")
    if sgd_minibatch_size < 0:
        raise ValueError(f"sgd_minibatch_size must be >= 0 (0: whole batch), got "
                         f"{sgd_minibatch_size=}")


def _check_tau(tau: float) -> None:
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"update_target tau must be in (0, 1]; got {tau=}. 1.0 copies the "
                         "model, small values (e.g. 0.005) move the target slowly.")


def _selector_seed(seed: int | None) -> int | None:
    """A seed for the action selector's rng, independent of the policy's other streams."""
    if seed is None:
        return None
    return int(np.random.SeedSequence([int(seed), 17]).generate_state(1)[0])


def _rebuild_policy(cls: type, arguments: tuple, options: dict, state: dict) -> Policy:
    policy = cls(*arguments, **options)
    policy.set_state(state)
    return policy


def _import_path(path: Any) -> Any:
    """The object at `"package.module:Name"` (a model spec's class of one framework); a class
    given itself is returned as it is."""
    if not isinstance(path, str):
        return path
    module_name, _, name = path.partition(":")
    return getattr(importlib.import_module(module_name), name)


def _as_numpy(value: Any) -> np.ndarray:
    """A framework tensor (Torch, TF or numpy) as numpy, without gradients."""
    detach = getattr(value, "detach", None)
    if callable(detach):
        value = detach().cpu()
    return np.asarray(value)


def _per_step(column: Any, sequences: bool, convert: Callable[[np.ndarray], np.ndarray]
              ) -> np.ndarray:
    """`convert` on per-step rows; a batch of sequences ([S, T, ...]) is converted as its
    S * T steps and given its [S, T] leading shape back."""
    column = np.asarray(column)
    if not sequences:
        return convert(column)
    if column.ndim < 2:
        raise ValueError(f"a batch of sequences needs columns shaped [S, T, ...]; got shape "
                         f"{column.shape}")
    steps = convert(column.reshape((-1,) + column.shape[2:]))
    return steps.reshape(column.shape[:2] + steps.shape[1:])


def _add_batch_dim(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {key: _add_batch_dim(value) for key, value in obs.items()}
    if isinstance(obs, tuple):
        return tuple(_add_batch_dim(value) for value in obs)
    return np.asarray(obs)[None]
