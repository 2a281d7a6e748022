"""Atari games (``ALE/Pong-v5``) through ale-py, with the DeepMind preprocessing.

ale-py is an optional dependency (``pip install "flowrl[atari]"``; the game ROMs ship in its
wheel). Gymnasium only knows the ``ALE/...`` ids once ale-py registered them, which this module
does on demand, in the driver and again in every rollout worker process.

The preprocessing (on by default for Atari ids; the config switch ``atari_preprocessing``) is
gymnasium's ``AtariPreprocessing`` -- up to 30 no-op starts, a 4-frame skip with the max over the
last two frames, 84x84 grayscale -- then the last 4 frames stacked by ``FrameStackObservation``
and moved to the last axis: observations are ``(84, 84, 4)`` uint8 images, which flowrl's
models send through the Nature CNN. The frame skip is the wrapper's, so the ALE env itself is
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
        env = gymnasium.make(self.env_id, frameskip=1, **config)
        env = gymnasium.wrappers.AtariPreprocessing(
            env, noop_max=NOOP_MAX, frame_skip=frame_skip, screen_size=SCREEN_SIZE,
            grayscale_obs=True, scale_obs=False)
        env = gymnasium.wrappers.FrameStackObservation(env, FRAME_STACK)
        return ChannelsLastFrames(env)
