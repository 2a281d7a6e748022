"""Typed, frozen algorithm configs, parsed from dicts, YAML files and the command line.

Every algorithm reads its hyperparameters from one frozen dataclass: :class:`AlgorithmConfig`
holds the fields all algorithms share, and each plan module subclasses it to *add* its own
fields (and, where it must, to change a default). Users never build these classes field by
field: they pass a dict (or a YAML/JSON file, or CLI flags) and :func:`from_dict` turns it into a
validated instance, with an error naming the closest valid key when a key is misspelled.

Examples:
    >>> config = from_dict(AlgorithmConfig, {"lr": 1, "model": {"fcnet_hiddens": [32, 32]}})
    >>> config.lr, config.model.fcnet_hiddens
    (1.0, (32, 32))
    >>> config.replace(gamma=0.95).gamma
    0.95
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import json
import math
import textwrap
import types
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

__all__ = [
    "AlgorithmConfig",
    "ModelConfig",
    "field_docs",
    "from_dict",
    "load_config_file",
    "type_name",
]

ConfigT = TypeVar("ConfigT")

_DOCS_PAGE = "docs/configuration.md"
# Learning rates outside [lowest, highest] are legal but almost always a typo: they warn.
_LOWEST_USUAL_LR = 1e-7
_HIGHEST_USUAL_LR = 1.0


class _FrozenConfig:
    """Behaviour shared by every config dataclass: checks on construction, to_dict, replace.

    Construction (``__post_init__``) first checks every value against its annotation without
    converting anything, then calls :meth:`_validate`. Subclasses extend :meth:`_validate`;
    they never override ``__post_init__``.
    """

    def __post_init__(self) -> None:
        _check_is_decorated(type(self))
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            annotation = _type_hints(type(self))[field.name]
            _coerce(getattr(self, field.name), annotation, field.name, convert=False)
        self._validate()

    def _validate(self) -> None:
        """Checks relations between values; raises ValueError, may warn, never modifies.

        Subclasses override this, call ``super()._validate()`` first and add their own checks.
        """

    def to_dict(self) -> dict[str, Any]:
        """Returns the config as plain, JSON-serializable Python data (tuples become lists)."""
        return _to_plain(self)

    def replace(self: ConfigT, **overrides: Any) -> ConfigT:
        """Returns a new config with ``overrides`` applied, parsed and validated like from_dict.

        A nested dataclass field given as a dict (``model={"fcnet_activation": "relu"}``) is
        merged over this config's current value of that field.
        """
        kwargs = _parse_overrides(type(self), overrides, base=self, prefix="")
        return dataclasses.replace(self, **kwargs)  # type: ignore[type-var]

    # -- helpers for _validate in subclasses ------------------------------------------------

    def _warn(self, message: str) -> None:
        """Warns (UserWarning) about a legal but suspicious setting, at the caller's line.

        The warning points at the first stack frame outside config construction (this module,
        dataclass-generated ``__init__`` and methods of the config being validated), so users
        see the line that built the config.
        """
        frame, level = inspect.currentframe(), 1
        while frame is not None and (
            frame.f_code.co_filename in (__file__, dataclasses.__file__, "<string>")
            or frame.f_locals.get("self") is self
        ):
            frame, level = frame.f_back, level + 1
        del frame
        warnings.warn(message, UserWarning, stacklevel=level)

    def _check_at_least(self, name: str, minimum: float, fix: str = "") -> None:
        """Raises ValueError unless ``self.<name> >= minimum`` (None passes)."""
        value = getattr(self, name)
        if value is not None and value < minimum:
            raise ValueError(
                f"{type(self).__name__}.{name} must be >= {minimum}; got {name}={value!r}. "
                + (fix or f"Set {name} to {minimum} or more.")
            )

    def _check_in_range(
        self, name: str, low: float, high: float, *, low_open: bool = False, fix: str = ""
    ) -> None:
        """Raises ValueError unless ``self.<name>`` lies in [low, high] (or (low, high])."""
        value = getattr(self, name)
        if value is None:
            return
        if (value <= low if low_open else value < low) or value > high:
            interval = f"{'(' if low_open else '['}{low}, {high}]"
            raise ValueError(
                f"{type(self).__name__}.{name} must be in {interval}; got {name}={value!r}. "
                + (fix or f"Choose a value in {interval}.")
            )


# =============================================================================================
# The shared configs
# =============================================================================================


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig(_FrozenConfig):
    """The default network: fully connected layers, optionally after a conv stack for images.

    Held by every algorithm config as ``config.model``; users pass it as a nested dict, which is
    merged over these defaults: ``{"model": {"fcnet_hiddens": [256, 256]}}``.
    """

    fcnet_hiddens: tuple[int, ...] = (64, 64)
    """Sizes of the hidden dense layers, input side first; typically (64, 64) to (512, 512)."""
    fcnet_activation: Literal["tanh", "relu", "swish", "linear"] = "tanh"
    """Activation after each hidden dense layer; "tanh" for small control tasks, else "relu"."""
    vf_share_layers: bool = False
    """Value head reuses the policy's hidden layers; if True, tune vf_loss_coeff (0.01-1)."""
    free_log_std: bool = False
    """Continuous actions: learn log std as a state-independent parameter, not a net output."""
    conv_filters: tuple[tuple[int, int | tuple[int, int], int], ...] | None = None
    """Conv layers for images as [out_channels, kernel, stride] triples; None = no conv stack."""
    conv_activation: Literal["relu", "tanh", "swish"] = "relu"
    """Activation after each conv layer; almost always "relu"."""
    custom_model: str | type | None = None
    """A user model: its class, a flowrl.register_model name or "pkg.mod:Class"; None = built-in."""
    custom_model_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Keyword arguments for the custom model's constructor, e.g. {"hidden": 128}."""
    use_lstm: bool = False
    """Wrap the model (built-in or custom) in an LSTM over time; see docs/models.md."""
    use_gru: bool = False
    """Wrap the model in a GRU over time (as use_lstm, one state tensor instead of two)."""
    lstm_cell_size: int = 256
    """Units of the LSTM/GRU state; typically 64-512."""
    max_seq_len: int = 20
    """Longest sequence a recurrent model trains on (longer runs are cut); typically 10-80."""
    lstm_use_prev_action: bool = False
    """Feed the previous action (one-hot for discrete spaces) into the LSTM/GRU."""
    lstm_use_prev_reward: bool = False
    """Feed the previous reward into the LSTM/GRU."""

    @property
    def recurrent(self) -> bool:
        """Whether the model is wrapped in an LSTM or GRU (`use_lstm` or `use_gru`)."""
        return bool(self.use_lstm or self.use_gru)

    def _validate(self) -> None:
        super()._validate()
        for index, size in enumerate(self.fcnet_hiddens):
            if size < 1:
                raise ValueError(
                    f"ModelConfig.fcnet_hiddens sizes must be >= 1; got "
                    f"fcnet_hiddens={self.fcnet_hiddens} (entry {index} is {size}). "
                    f"Use e.g. [64, 64], or [] for a linear model."
                )
        if self.use_lstm and self.use_gru:
            raise ValueError("ModelConfig: use_lstm and use_gru are both True; pick one "
                             "recurrent cell (use_lstm for an LSTM, use_gru for a GRU).")
        for name in ("lstm_cell_size", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1; got "
                                 f"{name}={getattr(self, name)}.")
        if (self.lstm_use_prev_action or self.lstm_use_prev_reward) and not self.recurrent:
            raise ValueError("ModelConfig: lstm_use_prev_action / lstm_use_prev_reward feed the "
                             "recurrent wrapper; set use_lstm=True (or use_gru=True) as well.")
        for index, (channels, kernel, stride) in enumerate(self.conv_filters or ()):
            kernel_sizes = kernel if isinstance(kernel, tuple) else (kernel,)
            if channels < 1 or stride < 1 or min(kernel_sizes) < 1:
                raise ValueError(
                    f"ModelConfig.conv_filters entries are [out_channels, kernel, stride] with "
                    f"every number >= 1; got conv_filters={self.conv_filters} (entry {index}). "
                    f"Example: [[16, 8, 4], [32, 4, 2]]."
                )


@dataclasses.dataclass(frozen=True, kw_only=True)
class AlgorithmConfig(_FrozenConfig):
    """The settings every algorithm shares. Plan modules subclass it to add their own fields.

    A subclass is a frozen, keyword-only dataclass that adds fields (each followed by a one-line
    docstring: what it does and its typical range), may change inherited defaults, and adds
    cross-field checks by extending ``_validate``. Checks raise ``ValueError`` with the values
    involved; legal but suspicious settings warn (``self._warn``, a ``warnings.warn`` that points
    at the user's line) with the computed numbers and a recommendation.
    Validation never modifies the config::

        @dataclasses.dataclass(frozen=True, kw_only=True)
        class PPOConfig(AlgorithmConfig):
            clip_param: float = 0.3
            \"\"\"PPO surrogate clipping range; typically 0.1-0.3.\"\"\"
            sgd_minibatch_size: int = 128
            \"\"\"Minibatch size for SGD epochs; typically 32-4096, at most train_batch_size.\"\"\"

            def _validate(self) -> None:
                super()._validate()
                self._check_at_least("sgd_minibatch_size", 1)
                if self.sgd_minibatch_size > self.train_batch_size:
                    raise ValueError(
                        f"sgd_minibatch_size must be <= train_batch_size; got "
                        f"sgd_minibatch_size={self.sgd_minibatch_size}, "
                        f"train_batch_size={self.train_batch_size}. "
                        f"Lower sgd_minibatch_size or raise train_batch_size.")
                minibatches = self.train_batch_size // self.sgd_minibatch_size
                if minibatches < 4:
                    self._warn(
                        f"Only {minibatches} minibatch(es) per SGD epoch: train_batch_size="
                        f"{self.train_batch_size} // sgd_minibatch_size="
                        f"{self.sgd_minibatch_size}. Use a smaller sgd_minibatch_size for "
                        f"more gradient steps per epoch.")

    Derived quantities are properties (see :attr:`steps_per_sample_round`), never fields filled
    in later.
    """

    framework: Literal["torch", "tf"] = "torch"
    """Deep learning framework for policies and losses: "torch" or "tf" (TensorFlow 2)."""
    seed: int | None = None
    """Base random seed for envs, policies and sampling; None = nondeterministic. Any int >= 0."""
    env_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Keyword arguments passed to the env creator (gymnasium.make kwargs for gymnasium ids)."""
    atari_preprocessing: bool | None = None
    """DeepMind Atari preprocessing (84x84 gray, skip 4, 4 stacked); None = on for ALE ids."""
    num_workers: int = 2
    """Number of rollout worker actors; 0 samples in the driver process. Typically 0-64."""
    num_envs_per_worker: int = 1
    """Envs each worker steps as one vector env (batched inference); typically 1-16."""
    rollout_fragment_length: int = 200
    """Steps per env in each sample() call of a worker; typically 50-1000."""
    batch_mode: Literal["truncate_episodes", "complete_episodes"] = "truncate_episodes"
    """"truncate_episodes": fixed-length fragments; "complete_episodes": whole episodes only."""
    num_cpus_per_worker: float = 1.0
    """CPUs Ray reserves for each rollout worker actor; typically 0.5-2."""
    train_batch_size: int = 4000
    """Env steps collected per training iteration; typically 200-100000."""
    lr: float = 5e-5
    """Learning rate of the optimizer (Adam); typically 1e-5 to 1e-3."""
    lr_schedule: tuple[tuple[int, float], ...] | None = None
    """Piecewise-linear lr as [[timestep, lr], ...], timesteps increasing; None = constant lr."""
    gamma: float = 0.99
    """Discount factor in (0, 1]; typically 0.9-0.999."""
    grad_clip: float | None = None
    """Clip gradients to this global L2 norm; None = no clipping. Typically 0.5-40."""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    """Network settings (a ModelConfig), given as a nested dict: {"fcnet_hiddens": [256, 256]}."""
    min_steps_per_iteration: int = 0
    """Pull the plan until this many env steps were sampled per reported iteration; 0 = once."""
    min_time_s_per_iteration: float = 0.0
    """Pull the plan until this many seconds passed per reported iteration; 0 = once."""
    evaluation_num_episodes: int = 10
    """Episodes run by each evaluation; typically 5-100."""
    reward_scale: float = 1.0
    """Rewards stored for training are multiplied by this (reported returns stay as they were)."""
    clip_rewards: float | None = None
    """Rewards stored for training are clipped to [-clip_rewards, clip_rewards]; None: no clip."""
    observation_filter: Literal["NoFilter", "MeanStdFilter"] = "NoFilter"
    """Normalize observations by a running mean/std merged from every worker each iteration."""
    callbacks: str | type | None = None
    """A flowrl.Callbacks subclass (or "module:Class") run on every worker and the Trainer."""
    evaluation_interval: int = 0
    """Evaluate (explore off) every this many iterations into result["evaluation"]; 0 = never."""
    metrics_num_episodes_for_smoothing: int = 100
    """Reported episode metrics average over this many most recent episodes; typically 10-100."""
    recreate_failed_workers: bool = True
    """Replace a dead rollout worker in place and go on; False = a dead worker fails the run."""
    max_worker_restarts: int = 10
    """Failed replacements of one worker in a row (waits doubling from 0.5 s) before failing."""
    sample_timeout_s: float | None = 300.0
    """Seconds a remote worker may take per sample before it is replaced; None = no limit."""
    num_threads_per_worker: int = 1
    """Torch intra-op threads in each rollout worker; 1 is best when workers share cores."""
    learner_num_threads: int | None = None
    """Intra-op threads of the learner in the driver; None = the framework's default."""
    num_gpus: float = 0.0
    """GPUs for the learner's policy (CUDA / "/GPU:0"); 0 = CPU, 0.5 = share one. Workers: CPU."""
    policies: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Multi-agent: policy id -> {"algo": name, "config": {overrides}}; {} = one shared policy."""
    policy_mapping: Any = None
    """Multi-agent: agent id -> policy id (a dict) or a callable (agent_id) -> policy_id."""
    policies_to_train: tuple[str, ...] | None = None
    """Multi-agent: ids of the policies the train ops update; None = all."""

    @property
    def steps_per_sample_round(self) -> int:
        """Env steps one round of sampling yields (the driver samples when num_workers=0)."""
        return max(self.num_workers, 1) * self.num_envs_per_worker * self.rollout_fragment_length

    def _validate(self) -> None:
        super()._validate()
        self._check_at_least("seed", 0)
        self._check_at_least(
            "num_workers", 0, "Use 0 to sample in the driver, or a number of rollout actors."
        )
        for name in ("num_envs_per_worker", "rollout_fragment_length", "train_batch_size"):
            self._check_at_least(name, 1)
        self._check_at_least("num_cpus_per_worker", 0)
        self._check_in_range("gamma", 0.0, 1.0, low_open=True)
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0; got lr={self.lr!r}. Typical values: 1e-5 to 1e-3.")
        self._warn_if_learning_rate_unusual()
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(
                f"grad_clip must be > 0 or None; got grad_clip={self.grad_clip!r}. "
                f"Use None to disable clipping."
            )
        self._validate_lr_schedule()
        for name in ("min_steps_per_iteration", "min_time_s_per_iteration"):
            self._check_at_least(name, 0)
        self._check_at_least("evaluation_num_episodes", 0)
        self._check_at_least("evaluation_interval", 0)
        if not self.reward_scale > 0 or (self.clip_rewards is not None
                                         and not self.clip_rewards > 0):
            raise ValueError(
                f"reward_scale must be > 0 and clip_rewards > 0 or None; got "
                f"reward_scale={self.reward_scale}, clip_rewards={self.clip_rewards}.")
        if self.evaluation_interval and not self.evaluation_num_episodes:
            raise ValueError(
                f"evaluation_interval={self.evaluation_interval} asks for evaluations of "
                f"evaluation_num_episodes={self.evaluation_num_episodes} episodes; set "
                f"evaluation_num_episodes >= 1, or evaluation_interval=0 for none.")
        self._check_at_least("max_worker_restarts", 0)
        if self.sample_timeout_s is not None and not self.sample_timeout_s > 0:
            raise ValueError(f"sample_timeout_s must be > 0 seconds, or None to wait forever; "
                             f"got sample_timeout_s={self.sample_timeout_s}.")
        self._check_at_least("metrics_num_episodes_for_smoothing", 1)
        self._check_at_least("num_threads_per_worker", 1)
        self._check_at_least("learner_num_threads", 1, "Use None for the framework default.")
        self._check_at_least(
            "num_gpus", 0, "Use 0 for a CPU learner, 1 for a GPU learner, or a fraction like "
            "0.5 to share one GPU.")
        if self.num_gpus > 1:
            self._warn(
                f"num_gpus={self.num_gpus:g}: the learner trains on one GPU (the first visible "
                f"one), so num_gpus above 1 only checks that {math.ceil(self.num_gpus)} GPUs "
                f"exist and leaves the others unused. Use num_gpus=1.")
        self._warn_if_batch_smaller_than_sample_round()
        self._validate_multi_agent()

    def _validate_multi_agent(self) -> None:
        """Checks the shape of `policies` and `policy_mapping`; the ids are checked against
        the env's agents when the workers are built."""
        for policy_id, entry in self.policies.items():
            unknown = set(entry) - {"algo", "config"} if isinstance(entry, dict) else None
            if unknown is None or unknown or not isinstance(entry.get("config", {}), dict):
                raise ValueError(
                    f"policies[{policy_id!r}] must be a dict with optional keys 'algo' (a "
                    f"built-in algorithm name) and 'config' (a dict of overrides); got "
                    f"{entry!r}. Example: policies={{{policy_id!r}: {{'algo': 'ppo', "
                    f"'config': {{'lr': 1e-4}}}}}}.")
        mapping = self.policy_mapping
        if mapping is not None and not (callable(mapping) or isinstance(mapping, dict)):
            raise TypeError(
                f"policy_mapping must be a dict agent id -> policy id or a callable "
                f"(agent_id) -> policy_id; got {mapping!r} ({type(mapping).__name__}).")

    def _warn_if_learning_rate_unusual(self) -> None:
        """Warns when lr (or a rate in lr_schedule) lies far outside what trains: above 1.0
        updates overshoot into garbage, below 1e-7 nothing is learned."""
        rates = [("lr", self.lr)] + [
            (f"lr_schedule rate at timestep {timestep}", rate)
            for timestep, rate in self.lr_schedule or () if rate > _HIGHEST_USUAL_LR]
        for name, rate in rates:
            if rate > _HIGHEST_USUAL_LR or rate < _LOWEST_USUAL_LR:
                self._warn(
                    f"{name}={rate:g} is far outside the usual range of learning rates "
                    f"(typically 1e-5 to 1e-2 with Adam; values above 1.0 make updates "
                    f"overshoot and train into garbage, values below 1e-7 learn nothing). "
                    f"Check the exponent, e.g. lr=1e-3."
                )

    def _validate_lr_schedule(self) -> None:
        timesteps = [timestep for timestep, _ in self.lr_schedule or ()]
        rates = [rate for _, rate in self.lr_schedule or ()]
        if self.lr_schedule is not None and not self.lr_schedule:
            raise ValueError(
                f"lr_schedule must have at least one [timestep, lr] pair or be None; got "
                f"lr_schedule={self.lr_schedule!r}. Example: [[0, 1e-3], [1000000, 1e-5]]."
            )
        if (
            timesteps != sorted(timesteps)
            or min(timesteps, default=0) < 0
            or min(rates, default=0.0) < 0
        ):
            raise ValueError(
                f"lr_schedule must list [timestep, lr] pairs with timesteps >= 0 in increasing "
                f"order and lr >= 0; got lr_schedule={self.lr_schedule!r}. "
                f"Example: [[0, 1e-3], [1000000, 1e-5]]."
            )

    def _warn_if_batch_smaller_than_sample_round(self) -> None:
        if self.train_batch_size < self.steps_per_sample_round:
            self._warn(
                f"train_batch_size={self.train_batch_size} is smaller than one round of sampling: "
                f"max(num_workers, 1)={max(self.num_workers, 1)} * "
                f"num_envs_per_worker={self.num_envs_per_worker} * "
                f"rollout_fragment_length={self.rollout_fragment_length} = "
                f"{self.steps_per_sample_round} steps, so each iteration trains on at least "
                f"{self.steps_per_sample_round} steps. Lower rollout_fragment_length or raise "
                f"train_batch_size."
            )


# =============================================================================================
# Parsing: dicts -> configs
# =============================================================================================


def from_dict(config_class: type[ConfigT], overrides: Mapping[str, Any] | None = None) -> ConfigT:
    """Builds a validated ``config_class`` from user overrides of its defaults.

    Values are checked against the field annotations and converted where that loses nothing:
    an int where a float is expected becomes a float, lists become tuples, and a nested dict
    (``model``) is merged over that field's default. Everything else that does not match is an
    error; a bool is never accepted as a number.

    Args:
        config_class: An AlgorithmConfig subclass (or any config dataclass defined here).
        overrides: Field name -> value, e.g. parsed from JSON or YAML. None means all defaults.

    Returns:
        The frozen, validated config.

    Raises:
        ValueError: For an unknown key (naming the closest valid one), a value outside a
            Literal's choices, or a failed validation check.
        TypeError: For a value of the wrong type.
    """
    kwargs = _parse_overrides(config_class, overrides, base=None, prefix="")
    return config_class(**kwargs)


def _parse_overrides(
    config_class: type, overrides: Mapping[str, Any] | None, *, base: Any, prefix: str
) -> dict[str, Any]:
    """Checks keys and converts values; nested dataclass dicts merge over ``base`` or defaults."""
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise TypeError(
            f"Config overrides for {config_class.__name__} must be a mapping of field name to "
            f"value; got overrides={overrides!r} ({type(overrides).__name__}). "
            f'Example: {{"lr": 0.001}}.'
        )
    valid = [field.name for field in dataclasses.fields(config_class) if field.init]
    hints = _type_hints(config_class)
    kwargs = {}
    for key, value in overrides.items():
        if key not in valid:
            raise ValueError(_unknown_key_message(config_class, key, valid, prefix))
        nested_base = getattr(base, key) if base is not None else _field_default(config_class, key)
        kwargs[key] = _coerce(value, hints[key], prefix + key, convert=True, base=nested_base)
    return kwargs


def _unknown_key_message(config_class: type, key: object, valid: list[str], prefix: str) -> str:
    algo = _algorithm_label(config_class)
    close = difflib.get_close_matches(str(key), valid, n=3, cutoff=0.6)
    alias = _OTHER_LIBRARY_NAMES.get(str(key))
    if alias in valid and alias not in close:
        close.insert(0, alias)
    hint = f" Did you mean {prefix + close[0]!r}?" if close else ""
    more = f" Other close names: {', '.join(repr(c) for c in close[1:])}." if len(close) > 1 else ""
    return (
        f"Unknown config key {prefix + str(key)!r} for {config_class.__name__}.{hint}{more} "
        f"Valid keys are listed by `flowrl train --run {algo} --help` and in {_DOCS_PAGE}; "
        f"valid {config_class.__name__} keys: {', '.join(sorted(valid))}."
    )


# Names other libraries use for flowrl fields (docs/glossary.md), suggested for unknown keys.
_OTHER_LIBRARY_NAMES = {
    "lambda": "gae_lambda",
    "learning_rate": "lr",
    "discount": "gamma",
    "max_grad_norm": "grad_clip",
    "clip_range": "clip_param",
    "clip_coef": "clip_param",
    "eps_clip": "clip_param",
    "ent_coef": "entropy_coeff",
    "entropy_cost": "entropy_coeff",
    "vf_coef": "vf_loss_coeff",
    "clip_range_vf": "vf_clip_param",
    "target_kl": "kl_target",
    "n_epochs": "num_sgd_iter",
    "update_epochs": "num_sgd_iter",
    "num_epochs": "num_sgd_iter",
    "minibatch_size": "sgd_minibatch_size",
    "batch_size": "train_batch_size",
    "n_steps": "rollout_fragment_length",
    "num_steps": "rollout_fragment_length",
    "num_env_runners": "num_workers",
    "num_rollout_workers": "num_workers",
    "n_envs": "num_envs_per_worker",
    "num_envs": "num_envs_per_worker",
    "num_envs_per_env_runner": "num_envs_per_worker",
    "target_update_interval": "target_network_update_freq",
    "target_network_frequency": "target_network_update_freq",
    "net_arch": "model",
    "hidden_sizes": "model",
}


OTHER_LIBRARY_NAMES: Mapping[str, str] = types.MappingProxyType(_OTHER_LIBRARY_NAMES)
"""Read-only: names other libraries use -> flowrl field names (the CLI suggests them too)."""


def _algorithm_label(config_class: type) -> str:
    name = config_class.__name__.removesuffix("Config")
    return name if name not in ("", "Algorithm", "Model") else "<ALGO>"


def _field_default(config_class: type, name: str) -> Any:
    for field in dataclasses.fields(config_class):
        if field.name == name:
            if field.default is not dataclasses.MISSING:
                return field.default
            if field.default_factory is not dataclasses.MISSING:
                return field.default_factory()
    return None


def _coerce(
    value: Any,
    annotation: Any,
    name: str,
    *,
    convert: bool,
    base: Any = None,
    nullable: bool = False,
) -> Any:
    """Returns ``value`` checked against ``annotation``; converted to it only when ``convert``.

    With ``convert=False`` (used on construction) nothing is changed, and a value that would
    need converting (a list where a tuple is declared) is an error pointing at from_dict.
    ``nullable`` only adds "| None" to error messages (the caller already handled None).
    """
    origin = get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        return _coerce_union(value, annotation, name, convert=convert, base=base)
    if origin is Literal:
        return _coerce_literal(value, annotation, name, nullable=nullable)
    checked = dict(convert=convert, nullable=nullable)
    if annotation is tuple or origin is tuple:
        return _coerce_tuple(value, annotation, name, **checked)
    if annotation in (dict, list) or origin in (dict, list):
        return _coerce_container(value, annotation, name, **checked)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return _coerce_dataclass(value, annotation, name, base=base, **checked)
    return _coerce_scalar(value, annotation, name, **checked)


def _coerce_union(value: Any, annotation: Any, name: str, *, convert: bool, base: Any) -> Any:
    options = [arg for arg in get_args(annotation) if arg is not type(None)]
    nullable = len(options) < len(get_args(annotation))
    if value is None and nullable:
        return None
    if len(options) == 1:  # `X | None`: X's own checks, with "| None" in the messages
        return _coerce(value, options[0], name, convert=convert, base=base, nullable=nullable)
    for option in options:
        try:
            return _coerce(value, option, name, convert=convert, base=base)
        except (TypeError, ValueError):
            continue
    raise _mismatch(name, value, annotation, convert=convert, nullable=nullable)


def _coerce_literal(value: Any, annotation: Any, name: str, *, nullable: bool) -> Any:
    choices = get_args(annotation)
    if any(value == choice and type(value) is type(choice) for choice in choices):
        return value
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    valid = ", ".join(repr(choice) for choice in choices) + (" or None" if nullable else "")
    raise ValueError(f"Config field {name} must be one of {valid}; got {name}={value!r}.{hint}")


def _coerce_tuple(
    value: Any, annotation: Any, name: str, *, convert: bool, nullable: bool
) -> tuple:
    accepted = (list, tuple) if convert else (tuple,)
    if not isinstance(value, accepted):
        raise _mismatch(name, value, annotation, convert=convert, nullable=nullable)
    args = get_args(annotation)
    if not args:  # bare `tuple`: nested lists become tuples too
        return tuple(_deep_tuple(item) for item in value) if convert else value
    if len(args) == 2 and args[1] is Ellipsis:
        element_types = [args[0]] * len(value)
    elif len(args) != len(value):
        raise _mismatch(name, value, annotation, convert=convert, nullable=nullable)
    else:
        element_types = list(args)
    items = tuple(
        _coerce(item, element_type, f"{name}[{index}]", convert=convert)
        for index, (item, element_type) in enumerate(zip(value, element_types))
    )
    return items if convert else value


def _coerce_container(
    value: Any, annotation: Any, name: str, *, convert: bool, nullable: bool
) -> Any:
    container = get_origin(annotation) or annotation
    args = get_args(annotation)
    if container is dict:
        if not isinstance(value, Mapping if convert else dict):
            raise _mismatch(name, value, annotation, convert=convert, nullable=nullable)
        if args and args[0] is str and not all(isinstance(key, str) for key in value):
            raise _mismatch(name, value, annotation, convert=convert, nullable=nullable)
        return dict(value) if convert else value
    if not isinstance(value, (list, tuple) if convert else list):
        raise _mismatch(name, value, annotation, convert=convert, nullable=nullable)
    if args:
        items = [_coerce(v, args[0], f"{name}[{i}]", convert=convert) for i, v in enumerate(value)]
        return items if convert else value
    return list(value) if convert else value


def _coerce_dataclass(
    value: Any, annotation: type, name: str, *, convert: bool, nullable: bool, base: Any
) -> Any:
    if isinstance(value, annotation):
        return value
    if convert and isinstance(value, Mapping):
        kwargs = _parse_overrides(annotation, value, base=base, prefix=f"{name}.")
        if base is None:
            return annotation(**kwargs)
        return dataclasses.replace(base, **kwargs)
    raise _mismatch(name, value, annotation, convert=convert, nullable=nullable)


def _coerce_scalar(value: Any, annotation: Any, name: str, *, convert: bool, nullable: bool) -> Any:
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) if convert else value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is type(None):
        if value is None:
            return None
    elif isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise _mismatch(name, value, annotation, convert=convert, nullable=nullable)


_FIXES = {
    "int": "Use a whole number without quotes or a decimal point, e.g. 4000.",
    "float": "Use a number without quotes, e.g. 0.001.",
    "bool": "Use true or false without quotes.",
    "str": "Use a quoted string.",
    "dict": 'Use a JSON/YAML mapping, e.g. {"key": "value"}.',
}


def _mismatch(
    name: str, value: Any, annotation: Any, *, convert: bool, nullable: bool = False
) -> TypeError:
    """Builds the wrong-type error: rule, offending value, fix."""
    expected = type_name(annotation) + (" | None" if nullable else "")
    plain = expected.removesuffix(" | None")
    if not convert and isinstance(value, (list, dict)):
        fix = (
            "Configs store tuples and nested config objects, not lists or dicts; build configs "
            "with flowrl.config.from_dict() or config.replace(), which convert them."
        )
    elif plain.startswith(("tuple", "list")):
        fix = "Use a list, e.g. [64, 64]."
    else:
        fix = _FIXES.get(plain.split("[")[0], f"Use a value of type {expected}.")
        if isinstance(value, bool) and plain in ("int", "float"):
            fix = f"A bool is not accepted as a number. {fix}"
    if expected.endswith(" | None"):
        fix += " Use null (None) to unset it."
    return TypeError(
        f"Config field {name} expects {expected}; got {name}={value!r} "
        f"({type(value).__name__}). {fix}"
    )


def type_name(annotation: Any) -> str:
    """Short readable name of a field annotation, e.g. ``int | None`` or ``{'torch', 'tf'}``."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin in (Union, types.UnionType):
        non_none = [type_name(arg) for arg in args if arg is not type(None)]
        return " | ".join(non_none + (["None"] if type(None) in args else []))
    if origin is Literal:
        return "{" + ", ".join(repr(arg) for arg in args) + "}"
    if origin is not None:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"{origin.__name__}[{type_name(args[0])}, ...]"
        return f"{origin.__name__}[{', '.join(type_name(arg) for arg in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def _deep_tuple(value: Any) -> Any:
    return tuple(_deep_tuple(item) for item in value) if isinstance(value, list) else value


def _to_plain(value: Any) -> Any:
    if isinstance(value, type):  # e.g. model.custom_model: stored as its import path
        return f"{value.__module__}:{value.__qualname__}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _to_plain(item) for key, item in value.items()}
    return value


@functools.cache
def _type_hints(config_class: type) -> dict[str, Any]:
    return typing.get_type_hints(config_class)


def _check_is_decorated(config_class: type) -> None:
    """Catches a subclass that forgot @dataclass: its annotations would silently not be fields."""
    if "__dataclass_fields__" not in vars(config_class) and vars(config_class).get(
        "__annotations__"
    ):
        raise TypeError(
            f"{config_class.__name__} declares fields but is not a dataclass, so they would be "
            f"ignored. Decorate it with @dataclasses.dataclass(frozen=True, kw_only=True)."
        )


# =============================================================================================
# Field documentation and config files
# =============================================================================================


def field_docs(config_class: type) -> dict[str, str]:
    """Returns field name -> attribute docstring, including fields inherited from base classes.

    The docstrings are the string literals written under each field in the class body, read
    with ``ast`` from the source of every class in the MRO; a subclass that overrides a default
    without a new docstring keeps the base class's text. Fields without one map to "".
    """
    docs: dict[str, str] = {}
    for klass in reversed(config_class.__mro__):
        docs.update(_class_attribute_docs(klass))
    return {field.name: docs.get(field.name, "") for field in dataclasses.fields(config_class)}


def config_table_markdown(config_class: type, base: type | None = None) -> str:
    """A Markdown table of the fields `config_class` adds to `base` or whose default it changes.

    The documentation pages embed these tables and a test keeps them equal, so the docs
    cannot drift from the code (defaults and descriptions come from the dataclass itself).

    Args:
        config_class: an algorithm's config class.
        base: the class to compare against (default: `AlgorithmConfig`).
    """
    base = AlgorithmConfig if base is None else base
    base_names = {field.name for field in dataclasses.fields(base)}
    docs = field_docs(config_class)
    rows = ["| Field | Default | Description |", "| --- | --- | --- |"]
    for field in dataclasses.fields(config_class):
        default = _field_default(config_class, field.name)
        if field.name in base_names and _field_default(base, field.name) == default:
            continue
        description = " ".join(docs[field.name].split()).replace("|", "\\|")  # one line
        rows.append(f"| `{field.name}` | `{default!r}` | {description} |")
    return "\n".join(rows)


@functools.cache
def _class_attribute_docs(klass: type) -> dict[str, str]:
    if klass is object or not dataclasses.is_dataclass(klass):
        return {}
    try:
        source = textwrap.dedent(inspect.getsource(klass))
    except (OSError, TypeError):  # defined in a REPL or exec(): no source to read
        return {}
    class_node = next(
        node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ClassDef)
    )
    docs = {}
    body = class_node.body
    for statement, following in zip(body, body[1:]):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = inspect.cleandoc(following.value.value)
    return docs


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Reads config overrides from a YAML (.yaml/.yml) or JSON (.json) file.

    The file holds a mapping of field name to value, as passed to :func:`from_dict`. An empty
    file is an empty mapping.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file cannot be parsed or does not hold a mapping.
    """
    import yaml

    path = Path(path)
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text) if text.strip() else {}
        else:
            data = yaml.safe_load(text) or {}
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(
            f"Could not parse config file path={str(path)!r}: {error}. It must hold a YAML or "
            f"JSON mapping of config field to value, e.g. `lr: 0.001`."
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"Config file path={str(path)!r} must hold a mapping of config field to value; it "
            f"holds a {type(data).__name__}: {data!r}. Example content: `lr: 0.001`."
        )
    return data
