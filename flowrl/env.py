"""The environment registry: names -> picklable creators of gymnasium environments.

An environment name is resolved *on the driver* into an env creator, a picklable callable
``creator(env_config) -> gymnasium.Env`` that is shipped to each rollout worker actor. The
registry itself is a plain dict in the driver process and is not visible inside Ray actors,
which is why workers receive creators, never names.

Names resolve in this order:

1. a name registered with :func:`register_env`, including flowrl's built-in environments
   (``"MultiAgentArena-v0"`` and ``"TwoStepGame-v0"``, PettingZoo parallel envs;
   ``"StatelessCartPole-v1"`` and ``"RepeatAfterMe-v0"``, gymnasium envs that need memory;
   ``docs/envs.md``), registered at the end of this module;
2. a gymnasium id (``"CartPole-v1"``, or ``"my_package.envs:MyEnv-v0"``, which imports
   ``my_package.envs`` first so that its ``gymnasium.register`` calls run). Atari ids
   (``"ALE/Pong-v5"``) are registered from ale-py on demand and get the DeepMind preprocessing
   unless the config's ``atari_preprocessing`` is False (:mod:`flowrl.envs.atari`).

Examples:
    >>> import gymnasium
    >>> def short_cartpole(env_config):
    ...     return gymnasium.make("CartPole-v1", **env_config)
    >>> register_env("ShortCartPole", short_cartpole)
    >>> env = make_env("ShortCartPole", {"max_episode_steps": 10})
    >>> env.spec.max_episode_steps
    10
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import sys
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium

from flowrl.envs import (
    MultiAgentArena,
    RepeatAfterMe,
    StatelessCartPole,
    TwoStepGame,
    atari,
    is_multi_agent_env,
)

__all__ = ["EnvClassCreator", "EnvCreator", "env_label", "get_env_creator", "list_envs",
           "make_env", "module_to_import", "register_env"]

EnvCreator = Callable[[dict], gymnasium.Env]
"""A picklable callable that builds one environment from its ``env_config`` dict."""

_REGISTRY: dict[str, EnvCreator] = {}
"""flowrl name -> user creator. Lives in the driver process only."""


def register_env(name: str, creator: EnvCreator) -> None:
    """Registers ``creator`` under ``name`` for ``flowrl.run(..., env=name)`` and the CLI.

    Registering a name again replaces the earlier creator, with a warning. A registered name
    takes precedence over a gymnasium id of the same name.

    Args:
        name: The name configs and the CLI use, e.g. "MyGridWorld-v0".
        creator: Called as ``creator(env_config)`` in each rollout worker; must return a
            ``gymnasium.Env``. It is pickled with cloudpickle, so a lambda or closure works, but
            it must not capture unpicklable objects (open files, locks, live envs).

    Raises:
        TypeError: If ``name`` is not a non-empty string or ``creator`` is not callable.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"register_env needs a non-empty string name; got {name=}. "
            f'Example: register_env("MyEnv-v0", lambda env_config: MyEnv(**env_config)).'
        )
    if not callable(creator):
        raise TypeError(
            f"register_env needs a callable creator(env_config) -> gymnasium.Env; got "
            f"{creator=} ({type(creator).__name__}). Pass the class or a function, "
            f"not an env instance."
        )
    _check_creator_signature(name, creator)
    if name in _REGISTRY and _REGISTRY[name] is not creator:
        warnings.warn(
            f"register_env: {name=} was already registered; the new creator replaces "
            f"{_REGISTRY[name]!r}.",
            UserWarning,
            stacklevel=2,
        )
    _REGISTRY[name] = creator


def list_envs() -> list[str]:
    """Returns the names registered with :func:`register_env`, sorted (not gymnasium ids)."""
    return sorted(_REGISTRY)


def get_env_creator(name: str | type | EnvCreator, *,
                    atari_preprocessing: bool | None = None) -> EnvCreator:
    """Resolves ``name`` into a picklable creator ``creator(env_config) -> gymnasium.Env``.

    Args:
        name: a registered name or a gymnasium id; or the env itself: a ``gymnasium.Env``
            subclass (built as ``MyEnv(env_config=...)`` or ``MyEnv(config=...)`` when its
            constructor has such a parameter, else as ``MyEnv(**env_config)``) or a function
            ``creator(env_config) -> gymnasium.Env``.
        atari_preprocessing: for an Atari id, the DeepMind preprocessing (84x84 grayscale,
            frame skip 4, 4 stacked frames); None = on for Atari ids. True for any other env is
            an error (wrap it in your own creator instead).

    Raises:
        ValueError: If ``name`` is neither registered nor a gymnasium id; the message lists the
            closest known names and how to register a custom environment. An ``ALE/`` id
            without ale-py installed says how to install it.
    """
    if isinstance(name, type) or (callable(name) and not isinstance(name, str)):
        return _creator_of_object(name, atari_preprocessing)
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"An environment must be a non-empty name (a registered name or a gymnasium id), a "
            f"gymnasium.Env subclass or a function env_config -> env; got {name=}.")
    if name in _REGISTRY:
        _check_no_atari_preprocessing(name, atari_preprocessing)
        return CheckedEnvCreator(name=name, creator=_REGISTRY[name])
    known = _is_gymnasium_id(name)
    if not known and atari.register_atari_envs():
        known = _is_gymnasium_id(name)
    elif not known and name.startswith("ALE/"):
        raise ValueError(atari.missing_ale_message(name))
    if known and atari.is_atari_id(name):
        return atari.AtariEnvCreator(name, deepmind_preprocessing=atari_preprocessing is not False)
    if known:
        _check_no_atari_preprocessing(name, atari_preprocessing)
        return GymnasiumEnvCreator(env_id=name)
    raise ValueError(_unknown_env_message(name))


def env_label(env: Any) -> str:
    """The name a run, its records and checkpoints use for ``env``: the string itself, or the
    ``module.QualifiedName`` of an env class or creator function.

    Examples:
        >>> env_label("CartPole-v1"), env_label(gymnasium.Env)
        ('CartPole-v1', 'gymnasium.core.Env')
    """
    if isinstance(env, str):
        return env
    return f"{getattr(env, '__module__', '?')}.{getattr(env, '__qualname__', type(env).__name__)}"


def _creator_of_object(env: Any, atari_preprocessing: bool | None) -> EnvCreator:
    label = env_label(env)
    _check_no_atari_preprocessing(label, atari_preprocessing)
    if isinstance(env, type):
        if not issubclass(env, gymnasium.Env) and not hasattr(env, "possible_agents"):
            raise TypeError(
                f"env={label} is a class but not a gymnasium.Env subclass (nor a PettingZoo "
                f"parallel env); pass a gymnasium.Env subclass, a function env_config -> env, "
                f"or a registered name.")
        return CheckedEnvCreator(name=label, creator=EnvClassCreator(env))
    _check_creator_signature(label, env)
    return CheckedEnvCreator(name=label, creator=env)


@dataclasses.dataclass(frozen=True)
class EnvClassCreator:
    """Builds an env class with a run's env_config: as its ``env_config`` or ``config``
    parameter when the constructor has one, else as keyword arguments."""

    env_class: type

    def __call__(self, env_config: dict | None = None) -> Any:
        config = dict(env_config or {})
        try:
            parameters = inspect.signature(self.env_class).parameters
        except (TypeError, ValueError):
            parameters = {}
        for name in ("env_config", "config"):
            if name in parameters:
                return self.env_class(**{name: config})
        return self.env_class(**config)


def _check_no_atari_preprocessing(name: str, atari_preprocessing: bool | None) -> None:
    if atari_preprocessing:
        raise ValueError(
            f"atari_preprocessing=True, but {name!r} is not an Atari game (an ale-py id such as "
            f"'ALE/Pong-v5'). Leave atari_preprocessing at None, or wrap your env with "
            f"gymnasium.wrappers.AtariPreprocessing in the creator you register."
        )


def make_env(name: str, env_config: dict | None = None) -> gymnasium.Env:
    """Builds one environment in this process: ``get_env_creator(name)(env_config or {})``."""
    return get_env_creator(name)(dict(env_config or {}))


@dataclasses.dataclass(frozen=True)
class CheckedEnvCreator:
    """Wraps a registered creator so a wrong return value fails with a clear TypeError."""

    name: str
    creator: EnvCreator

    def __call__(self, env_config: dict | None = None) -> gymnasium.Env:
        env = self.creator(dict(env_config or {}))
        if not isinstance(env, gymnasium.Env) and not is_multi_agent_env(env):
            raise TypeError(_bad_creator_message(self.name, self.creator, env))
        if isinstance(env, gymnasium.Env):
            _check_gymnasium_api_on_first_calls(env, self.name)
        return env


@dataclasses.dataclass(frozen=True)
class GymnasiumEnvCreator:
    """Creates a gymnasium environment by id: ``gymnasium.make(env_id, **env_config)``."""

    env_id: str

    def __call__(self, env_config: dict | None = None) -> gymnasium.Env:
        return gymnasium.make(self.env_id, **dict(env_config or {}))


def module_to_import(name: str) -> str | None:
    """The module resolving env ``name`` would import (running its code): the ``module`` of a
    ``module:EnvId`` name that is not registered and not imported yet; None for every other
    name. A restored checkpoint's env name is checked with it before anything is imported.

    Examples:
        >>> module_to_import("evilmod:CartPole-v1"), module_to_import("CartPole-v1")
        ('evilmod', None)
        >>> module_to_import("gymnasium:CartPole-v1") is None  # imported already
        True
    """
    if not isinstance(name, str) or ":" not in name or name in _REGISTRY:
        return None
    module_name = name.split(":", 1)[0]
    return None if module_name in sys.modules else module_name


def _is_gymnasium_id(name: str) -> bool:
    """True for a registered gymnasium id; a ``module:EnvId`` name imports the module first."""
    env_id = name
    if ":" in name:
        module_name, env_id = name.split(":", 1)
        try:
            importlib.import_module(module_name)
        except ImportError as error:
            raise ValueError(
                f"Environment {name=} names module {module_name!r}, which cannot be imported: "
                f"{error}. Install it, or check the spelling of 'module:EnvId'."
            ) from None
    return env_id in gymnasium.registry


def _unknown_env_message(name: str) -> str:
    known = list(_REGISTRY) + list(gymnasium.registry)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        suggestion = f"Did you mean {close[0]!r}?"
        if len(close) > 1:
            suggestion += f" Other close names: {', '.join(repr(c) for c in close[1:])}."
    else:
        suggestion = "No registered or gymnasium environment has a similar name."
    registered = ", ".join(repr(n) for n in list_envs()) or "none"
    return (
        f"Unknown environment {name!r}. {suggestion} It is neither registered with flowrl "
        f"(registered: {registered}) nor a gymnasium id. To use a custom environment, call "
        f"flowrl.register_env({name!r}, lambda env_config: MyEnv(env_config)) in the driver "
        f"before training, or pass a gymnasium id such as 'CartPole-v1' (a 'module:EnvId' "
        f"name imports the module that registers it)."
    )


def _bad_creator_message(name: str, creator: Any, env: Any) -> str:
    returned = f"{type(env).__module__}.{type(env).__qualname__}"
    hint = "Make the creator return the environment it builds."
    if env is not None and type(env).__module__.split(".")[0] == "gym":
        hint = (
            "This looks like an environment from the old `gym` package; port it to gymnasium "
            "(reset returns (obs, info), step returns 5 values) or wrap it with shimmy."
        )
    elif isinstance(env, gymnasium.vector.VectorEnv):
        hint = "Return a single environment; flowrl builds the vector env per worker itself."
    return (
        f"The creator registered as {name!r} must return a gymnasium.Env (or a PettingZoo "
        f"ParallelEnv for a multi-agent env); it returned "
        f"env={env!r} of type {returned}. {hint} (creator={creator!r})"
    )


def _check_creator_signature(name: str, creator: Any) -> None:
    """Raises a TypeError unless ``creator`` can be called as ``creator(env_config)``."""
    try:
        signature = inspect.signature(creator)
    except (TypeError, ValueError):  # a builtin or C callable without a readable signature
        return
    try:
        signature.bind({})
    except TypeError:
        raise TypeError(
            f"The creator registered as {name!r} must take one argument, env_config (the dict "
            f"of the config's env_config, possibly empty); its signature is {signature}. "
            f"Write it as `lambda env_config: MyEnv(**env_config)` (or give MyEnv.__init__ an "
            f"env_config parameter). (creator={creator!r})"
        ) from None


def _check_gymnasium_api_on_first_calls(env: gymnasium.Env, name: str) -> None:
    """Checks the first ``reset`` and ``step`` results against gymnasium's API, then gets out of
    the way: the checks sit on the env instance and remove themselves, so later calls go
    straight to the env's own methods. An env on the old gym API fails with what to change."""
    own_reset, own_step = env.reset, env.step

    def first_reset(*args: Any, **kwargs: Any) -> Any:
        output = own_reset(*args, **kwargs)
        if not (isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], dict)):
            raise TypeError(_old_gym_api_message(name, "reset", output))
        vars(env).pop("reset", None)
        return output

    def first_step(*args: Any, **kwargs: Any) -> Any:
        output = own_step(*args, **kwargs)
        if not (isinstance(output, tuple) and len(output) == 5):
            raise TypeError(_old_gym_api_message(name, "step", output))
        vars(env).pop("step", None)
        return output

    env.reset = first_reset  # type: ignore[method-assign]
    env.step = first_step  # type: ignore[method-assign]


def _old_gym_api_message(name: str, method: str, output: Any) -> str:
    if method == "step":
        count = len(output) if isinstance(output, tuple) else 1
        found = f"step() returned {count} value(s)" + (
            " (obs, reward, done, info): the old gym API" if count == 4 else "")
        fix = ("Return `obs, reward, terminated, truncated, info` from step: split `done` into "
               "`terminated` (the episode reached a terminal state) and `truncated` (cut off, "
               "e.g. by a time limit).")
    else:
        found = (f"reset() returned {type(output).__name__} instead of the pair (obs, info): "
                 f"the old gym API returns the observation alone")
        fix = ("Return `obs, info` from reset and accept `reset(self, *, seed=None, "
               "options=None)`; call `super().reset(seed=seed)` to seed self.np_random.")
    return (
        f"Environment {name!r}: {found}. flowrl follows gymnasium's API (gymnasium.Env): "
        f"reset(seed=None, options=None) returns (obs, info) and step(action) returns "
        f"(obs, reward, terminated, truncated, info). {fix} An env written for the old `gym` "
        f"package can also be wrapped with shimmy's GymV21CompatibilityV0."
    )


def _register_builtin_envs() -> None:
    """Registers flowrl's own environments under their public names."""
    register_env("MultiAgentArena-v0", MultiAgentArena)
    register_env("TwoStepGame-v0", TwoStepGame)
    register_env("StatelessCartPole-v1", StatelessCartPole)
    register_env("RepeatAfterMe-v0", RepeatAfterMe)


_register_builtin_envs()

