"""Stop criteria and the one-line progress report printed per training iteration."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

STOP_KEYS = ("episode_reward_mean", "timesteps_total", "training_iteration", "time_total_s")
"""Result keys `run(stop=...)` accepts; training ends when any reaches its value."""


def validate_stop(stop: Mapping[str, float] | None) -> dict[str, float]:
    """Checks stop criteria: known keys, numeric values.

    Raises:
        TypeError: when stop is not a mapping (e.g. a bare number).
        ValueError: for an unknown key (naming the closest valid one) or a non-numeric value.
    """
    if stop is not None and not isinstance(stop, Mapping):
        raise TypeError(
            f"stop must be a dict of result key -> threshold, any of which ends training; got "
            f"stop={stop!r} ({type(stop).__name__}). Example: stop={{\"episode_reward_mean\": "
            f"{stop!r}}} or {{\"training_iteration\": 100}}; valid keys: {list(STOP_KEYS)}."
        )
    criteria = dict(stop or {})
    for key, value in criteria.items():
        if key not in STOP_KEYS:
            close = difflib.get_close_matches(key, STOP_KEYS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"Unknown stop criterion {key!r}.{hint} Valid: {list(STOP_KEYS)}.")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"Stop criterion {key!r} needs a number, got {value!r}.")
    return criteria


def should_stop(result: Mapping[str, Any], stop: Mapping[str, float]) -> bool:
    """True when any criterion's result value has reached its target (NaN never has)."""
    for key, target in stop.items():
        value = result.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            if value >= target:
                return True
    return False


def format_progress(result: Mapping[str, Any]) -> str:
    """One line per iteration: iteration, steps, returns, throughput, time."""
    reward = result.get("episode_reward_mean", float("nan"))
    if isinstance(reward, float) and math.isnan(reward):
        reward_text = "reward    n/a"
    else:
        reward_text = (f"reward {reward:7.1f} (min {result['episode_reward_min']:.0f}, "
                       f"max {result['episode_reward_max']:.0f})")
    learner = result.get("info", {}).get("learner", {})
    loss = next((s.get("total_loss") for s in learner.values() if "total_loss" in s), None)
    loss_text = f" | loss {loss:8.4f}" if loss is not None else ""
    wall = result.get("wall_time_s", result.get("time_total_s", 0.0))
    return (f"iter {result['training_iteration']:4d} | steps {result['timesteps_total']:>9,} | "
            f"{reward_text} | {result.get('env_steps_per_s', 0.0):8,.0f} steps/s{loss_text} | "
            f"{wall:6.1f} s")
