"""Atari games (``ALE/Pong-v5``) through ale-py, with the DeepMind preprocessing.

ale-py is an optional dependency (``pip install "flowrl[atari]"``; the game ROMs ship in its
wheel). Gymnasium only knows the ``ALE/...`` ids once ale-py registered them, which this module
does on demand, in the driver and again in every rollout worker process.

The preprocessing (on by default for Atari ids; the config switch ``atari_preprocessing``) is
the DeepMind one (Mnih et al., 2015; the order of OpenAI Baselines' ``wrap_deepmind``):

1. gymnasium's ``AtariPreprocessing``: up to 30 no-op starts, a 4-frame skip with the max over
   the last two frames, 84x84 grayscale;
2. end-of-life episodes (`EpisodicLife`): losing a life ends the episode for the learner, but
   the game goes on: the next ``reset`` continues it with one no-op step, and only a game over
   resets the game;
3. FIRE on reset (`FireOnReset`) in games whose second action is FIRE (Breakout needs it to
   launch the ball, also after a lost life);
4. reward clipping to its sign, -1, 0 or 1 (gymnasium's ``ClipReward``);
5. the last 4 frames stacked by ``FrameStackObservation`` and moved to the last axis:
   observations are ``(84, 84, 4)`` uint8 images, which flowrl's models send through the
   Nature CNN.

The reported episode returns are therefore clipped returns of one life, as the learner sees
them, not game scores. ``env_config`` switches: ``clip_rewards`` and ``episodic_life`` (both
True by default), ``noop_max`` (30). The frame skip is the wrapper's, so the ALE env itself is
made with ``frameskip=1``; an ``env_config`` ``frameskip`` sets the wrapper's skip instead.

Examples:
    >>> creator = AtariEnvCreator("ALE/Pong-v5")          # doctest: +SKIP
    >>> creator({}).observation_space.shape              # doctest: +SKIP
    (84, 84, 4)
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import gymnasium
import numpy as np

__all__ = [
    "AtariEnvCreator",
    "ChannelsLastFrames",
    "EpisodicLife",
    "FireOnReset",
    "INSTALL_HINT",
    "is_atari_id",
    "missing_ale_message",
    "register_atari_envs",
]

INSTALL_HINT = ('pip install "flowrl[atari]" (or pip install "ale-py>=0.9" '
                '"opencv-python-headless", which the preprocessing uses)')
FRAME_STACK = 4
FRAME_SKIP = 4
SCREEN_SIZE = 84
NOOP_MAX = 30


def register_atari_envs() -> bool:
    """Registers ale-py's Atari ids with gymnasium; False when ale-py is not installed."""
    try:
        ale_py = importlib.import_module("ale_py")
    except ImportError:
        return False
    gymnasium.register_envs(ale_py)
    return True


def is_atari_id(env_id: str) -> bool:
    """Whether ``env_id`` is a registered gymnasium id of an ale-py Atari game."""
    spec = gymnasium.registry.get(env_id)
    entry_point = getattr(spec, "entry_point", None)
    if callable(entry_point):
        entry_point = f"{entry_point.__module__}:{entry_point.__qualname__}"
    return isinstance(entry_point, str) and entry_point.startswith("ale_py")


def missing_ale_message(env_id: str) -> str:
    """The error for an ``ALE/`` id when ale-py is not installed."""
    return (
        f"Environment {env_id!r} is an Atari game, which needs ale-py, and ale-py is not "
        f"installed. Install it with {INSTALL_HINT}; the game ROMs ship with it."
    )


class ChannelsLastFrames(gymnasium.ObservationWrapper):
    """Moves a frame stack's first axis last: ``(4, 84, 84)`` becomes ``(84, 84, 4)``, the
    ``(height, width, channels)`` layout flowrl's CNN models read."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gymnasium.spaces.Box) or len(space.shape) != 3:
            raise TypeError(f"ChannelsLastFrames needs (frames, height, width) Box "
                            f"observations; got observation_space={space!r}.")
        self.observation_space = gymnasium.spaces.Box(
            low=np.moveaxis(space.low, 0, -1), high=np.moveaxis(space.high, 0, -1),
            dtype=space.dtype)

    def observation(self, observation: Any) -> np.ndarray:
        """The stacked frames with the stack on the last axis (a contiguous array)."""
        return np.ascontiguousarray(np.moveaxis(np.asarray(observation), 0, -1))


class EpisodicLife(gymnasium.Wrapper):
    """Ends the episode when a life is lost, without ending the game.

    ``step`` reports ``terminated=True`` on the step that loses a life; the following ``reset``
    then continues the same game with one no-op step, unless the game is over, when it resets
    the game. Value estimates learn that losing a life ends the rewards (DeepMind's trick),
    while every life still starts where the last one ended.
    """

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        self._lives = 0
        self._game_over = True

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self._lives:
            terminated = True
        self._lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        if self._game_over or seed is not None:
            obs, info = self.env.reset(seed=seed, options=options)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)  # no-op: the game goes on
            if terminated or truncated:
                obs, info = self.env.reset(options=options)
        self._game_over = False
        self._lives = self.env.unwrapped.ale.lives()
        return obs, info


class FireOnReset(gymnasium.Wrapper):
    """Presses FIRE after every reset, for games that wait for it (Breakout's ball launch).

    Applies only where action 1 is FIRE; elsewhere ``reset`` is the wrapped one.
    """

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()
        self.fires = len(meanings) >= 3 and meanings[1] == "FIRE"

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        if not self.fires:
            return obs, info
        for action in (1, 2):  # FIRE, then another action, as in DeepMind's setup
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset(options=options)
        return obs, info


@dataclasses.dataclass(frozen=True)
class AtariEnvCreator:
    """Creates an Atari env by gymnasium id, with the DeepMind preprocessing when it is on.

    Picklable, so it ships to rollout worker actors; it registers the ale-py ids there too.

    Args:
        env_id: a registered Atari id, e.g. ``"ALE/Pong-v5"``.
        deepmind_preprocessing: wrap the env as described in the module docstring; False
            gives the raw ``(210, 160, 3)`` frames.
    """

    env_id: str
    deepmind_preprocessing: bool = True

    def __call__(self, env_config: dict | None = None) -> gymnasium.Env:
        if not register_atari_envs():
            raise ModuleNotFoundError(missing_ale_message(self.env_id))
        config = dict(env_config or {})
        if not self.deepmind_preprocessing:
            return gymnasium.make(self.env_id, **config)
        frame_skip = config.pop("frameskip", FRAME_SKIP)
        clip_rewards = config.pop("clip_rewards", True)
        episodic_life = config.pop("episodic_life", True)
        noop_max = config.pop("noop_max", NOOP_MAX)
        env = gymnasium.make(self.env_id, frameskip=1, **config)
        env = gymnasium.wrappers.AtariPreprocessing(
            env, noop_max=noop_max, frame_skip=frame_skip, screen_size=SCREEN_SIZE,
            grayscale_obs=True, scale_obs=False)
        if episodic_life:
            env = EpisodicLife(env)
        env = FireOnReset(env)
        if clip_rewards:
            env = gymnasium.wrappers.ClipReward(env, -1.0, 1.0)
        env = gymnasium.wrappers.FrameStackObservation(env, FRAME_STACK)
        return ChannelsLastFrames(env)
