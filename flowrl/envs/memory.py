"""Two small single-agent envs that a policy without memory cannot solve.

Both are partially observed: one observation does not tell the state, so a memoryless
(feed-forward) policy does badly and a recurrent one (`model.use_lstm`) can do well. They are
flowrl's test and benchmark tasks for recurrent models, cheap enough for CI:

* `StatelessCartPole` (``"StatelessCartPole-v1"``): CartPole-v1 with the two velocities
  removed from the observation.
* `RepeatAfterMe` (``"RepeatAfterMe-v0"``): repeat the random bit shown two steps earlier.
"""

from __future__ import annotations

import difflib
from typing import Any

import gymnasium
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

__all__ = ["RepeatAfterMe", "StatelessCartPole"]

_OBSERVED_ENTRIES = [0, 2]
"""CartPole's observation entries StatelessCartPole keeps: cart position and pole angle (it drops
the cart velocity, entry 1, and the pole's angular velocity, entry 3)."""


class StatelessCartPole(CartPoleEnv):
    """CartPole-v1 observed without its velocities: cart position and pole angle only.

    The dynamics, the termination (pole beyond 12 degrees or cart beyond 2.4) and the reward
    (+1 per step) are gymnasium's CartPole-v1, and the same seed with the same actions gives the
    same episode. Only the observation changes: a `Box` of shape (2,), `[x, theta]`, i.e.
    CartPole's entries 0 and 2. Velocities have to be inferred from successive observations,
    so a memoryless policy balances the pole poorly.

    The episode is truncated after `max_episode_steps` (500, as CartPole-v1's time limit), here
    inside the env because flowrl builds it by class, not through `gymnasium.make`.

    Args:
        config: May hold `max_episode_steps` (default 500) and `render_mode` (None,
            "human" or "rgb_array", as CartPole's). This is the `env_config` dict when the env
            is created by name (``"StatelessCartPole-v1"``).

    Example:
        >>> env = StatelessCartPole()
        >>> observation, info = env.reset(seed=0)
        >>> observation.shape, env.action_space
        ((2,), Discrete(2))
    """

    def __init__(self, config: dict | None = None) -> None:
        settings = _validated_config(
            "StatelessCartPole", config, {"max_episode_steps": 500, "render_mode": None},
            positive_ints=("max_episode_steps",))
        super().__init__(render_mode=settings["render_mode"])
        self.max_episode_steps: int = settings["max_episode_steps"]
        full = self.observation_space
        self.observation_space = gymnasium.spaces.Box(
            full.low[_OBSERVED_ENTRIES], full.high[_OBSERVED_ENTRIES], dtype=np.float32)
        self._elapsed_steps = 0

    def reset(self, *, seed: int | None = None,
              options: dict | None = None) -> tuple[np.ndarray, dict]:
        observation, info = super().reset(seed=seed, options=options)
        self._elapsed_steps = 0
        return observation[_OBSERVED_ENTRIES], info

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        observation, reward, terminated, truncated, info = super().step(action)
        self._elapsed_steps += 1
        # As gymnasium's TimeLimit: truncated at the limit, whether or not also terminated.
        truncated = truncated or self._elapsed_steps >= self.max_episode_steps
        return observation[_OBSERVED_ENTRIES], reward, terminated, truncated, info


class RepeatAfterMe(gymnasium.Env):
    """Repeat the bit you saw `repeat_delay` (2) steps ago.

    Rules, precisely (with the defaults):

    * Each observation is a bit drawn uniformly at random (`Discrete(2)`) from the generator
      seeded by `reset(seed=...)`: `reset()` shows o_0, and step t (t = 1, 2, ...) shows o_t.
    * The action of step t (`Discrete(2)`), chosen after seeing o_{t-1}, is scored against the
      observation shown two steps before that one, o_{t-3}: reward +1 if it is equal, -1 if
      not. Steps 1 and 2 have no such observation yet and give reward 0.
    * After `episode_len` (100) steps the episode is truncated (it is never terminated).
      So 98 steps are scored: always repeating scores 98, random play about 0 (standard
      deviation about 10), and so does every memoryless policy.

    Args:
        config: May hold `episode_len` (default 100) and `repeat_delay` (default 2; 0 asks
            to repeat the current observation, which needs no memory). This is the
            `env_config` dict when the env is created by name (``"RepeatAfterMe-v0"``).

    Example:
        >>> env = RepeatAfterMe()
        >>> observation, info = env.reset(seed=0)
        >>> env.observation_space, env.action_space
        (Discrete(2), Discrete(2))
    """

    metadata = {"render_modes": []}

    def __init__(self, config: dict | None = None) -> None:
        settings = _validated_config(
            "RepeatAfterMe", config, {"episode_len": 100, "repeat_delay": 2},
            positive_ints=("episode_len",), non_negative_ints=("repeat_delay",))
        self.episode_len: int = settings["episode_len"]
        self.repeat_delay: int = settings["repeat_delay"]
        self.observation_space = gymnasium.spaces.Discrete(2)
        self.action_space = gymnasium.spaces.Discrete(2)
        self._shown: list[int] = []

    def reset(self, *, seed: int | None = None,
              options: dict | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        self._shown = [self._draw()]
        return self._shown[-1], {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        if not self._shown:
            raise RuntimeError("RepeatAfterMe.step() was called before reset(); call reset().")
        if not self.action_space.contains(action):
            raise ValueError(
                f"RepeatAfterMe: the action {action!r} is outside its action space "
                f"Discrete(2); use 0 or 1.")
        # _shown holds o_0 .. o_{t-1}; the target o_{t-1-delay} is `delay` entries back.
        back = self.repeat_delay + 1
        reward = 0.0
        if len(self._shown) >= back:
            reward = 1.0 if int(action) == self._shown[-back] else -1.0
        truncated = len(self._shown) >= self.episode_len
        self._shown.append(self._draw())
        return self._shown[-1], reward, False, truncated, {}

    def _draw(self) -> int:
        return int(self.np_random.integers(2))


def _validated_config(env_name: str, config: dict | None, defaults: dict[str, Any], *,
                      positive_ints: tuple[str, ...] = (),
                      non_negative_ints: tuple[str, ...] = ()) -> dict[str, Any]:
    """Merges `config` over `defaults`, with a clear error for a bad key or value."""
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise TypeError(
            f"{env_name} needs a config dict (or None); got {type(config).__name__}. "
            f"Example: {env_name}({defaults!r}).")
    for key in config:
        if key not in defaults:
            close = difflib.get_close_matches(str(key), list(defaults), n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"{env_name} got an unknown config key {key!r}.{hint} Valid keys: "
                f"{sorted(defaults)}.")
    settings = {**defaults, **config}
    for key in (*positive_ints, *non_negative_ints):
        value = settings[key]
        low = 1 if key in positive_ints else 0
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            kind = "a positive" if low else "a non-negative"
            raise ValueError(f"{env_name} config {key!r} must be {kind} integer; got {value!r}.")
        settings[key] = int(value)
    return settings
