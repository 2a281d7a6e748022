"""Stop criteria, the one-line progress report printed per iteration, and divergence checks."""

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


EXPLODING_VALUE = 1e10
"""A learner loss or gradient norm above this (in absolute value) is reported as exploding:
far beyond any value a run that learns reaches, even with unclipped Atari rewards."""
COLLAPSED_ENTROPY = 1e-3
"""A discrete policy's entropy below this (in nats) is reported as collapsed: it picks one
action almost always, so it explores nothing and its policy gradient vanishes."""


class DivergenceMonitor:
    """Finds a diverging run in its results and reports each finding once.

    Looks at the learner statistics (``info/learner/<policy>/<stat>``): any non-finite value,
    a loss (``*loss*``) or gradient norm (``*grad*``) above `EXPLODING_VALUE`, and, for
    discrete actions, an ``entropy`` below `COLLAPSED_ENTROPY`. Each (policy, statistic, kind)
    is reported the first time only.

    Examples:
        >>> monitor = DivergenceMonitor(discrete_actions=True)
        >>> result = {"training_iteration": 7,
        ...           "info": {"learner": {"default_policy": {"vf_loss": 3e14}}}}
        >>> print(monitor.check(result)[0].split(". ")[0])
        The run is diverging: default_policy vf_loss=3e+14 at iteration 7 (exploding: above 1e+10)
        >>> monitor.check(result)
        []
    """

    def __init__(self, *, discrete_actions: bool) -> None:
        self.discrete_actions = discrete_actions
        self._reported: set[tuple[str, str, str]] = set()

    def check(self, result: Mapping[str, Any]) -> list[str]:
        """The findings of this result not reported before, one message each."""
        found = []
        iteration = result.get("training_iteration")
        learner = result.get("info", {}).get("learner", {})
        for policy_id, stats in learner.items():
            for name, value in stats.items():
                kind = self._kind(name, value)
                if kind is None or (policy_id, name, kind) in self._reported:
                    continue
                self._reported.add((policy_id, name, kind))
                found.append(
                    f"The run is diverging: {policy_id} {name}={value:.4g} at iteration "
                    f"{iteration} ({kind}). Lower lr (and check grad_clip, the reward scale and "
                    f"entropy_coeff), or restore an earlier checkpoint; pass "
                    f"stop_on_divergence=True (--stop-on-divergence) to end such a run here.")
        return found

    def _kind(self, name: str, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if not math.isfinite(value):
            return "not finite"
        if ("loss" in name or "grad" in name) and abs(value) > EXPLODING_VALUE:
            return f"exploding: above {EXPLODING_VALUE:g}"
        if self.discrete_actions and name == "entropy" and value < COLLAPSED_ENTROPY:
            return f"collapsed entropy: below {COLLAPSED_ENTROPY:g}, the policy stopped exploring"
        return None


def format_progress(result: Mapping[str, Any]) -> str:
    """One line per iteration: iteration, steps, returns, throughput, time."""
    reward = result.get("episode_reward_mean", float("nan"))
    per_policy = result.get("policy_reward_mean") or {}
    if isinstance(reward, float) and math.isnan(reward):
        reward_text = "reward    n/a"
    elif len(per_policy) > 1:  # the sum over agents says little (0 in a zero-sum game)
        reward_text = "reward " + ", ".join(f"{pid} {value:.1f}"
                                            for pid, value in per_policy.items())
    else:
        reward_text = (f"reward {reward:7.1f} (min {result['episode_reward_min']:.0f}, "
                       f"max {result['episode_reward_max']:.0f})")
    learner = result.get("info", {}).get("learner", {})
    loss = next((s.get("total_loss") for s in learner.values() if "total_loss" in s), None)
    loss_text = f" | loss {loss:8.4f}" if loss is not None else ""
    epsilon = next((s["cur_epsilon"] for s in learner.values() if "cur_epsilon" in s), None)
    loss_text += f" | eps {epsilon:.3f}" if epsilon is not None else ""
    wall = result.get("wall_time_s", result.get("time_total_s", 0.0))
    return (f"iter {result['training_iteration']:4d} | steps {result['timesteps_total']:>9,} | "
            f"{reward_text} | {result.get('env_steps_per_s', 0.0):8,.0f} steps/s{loss_text} | "
            f"{wall:6.1f} s")
