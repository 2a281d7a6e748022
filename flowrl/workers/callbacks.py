"""Callbacks: user code that runs at the points of a run users want to watch or extend.

Subclass `Callbacks`, override what you need, and pass the class in the config
(`config={"callbacks": MyCallbacks}`, or `"package.module:MyCallbacks"`). Every rollout worker,
on Ray or in-process, builds its own instance; the Trainer builds one for `on_train_result`:

```python
class CountLeftMoves(flowrl.Callbacks):
    def on_episode_start(self, *, worker, episode):
        episode.user_data["left"] = 0

    def on_episode_step(self, *, worker, episode):
        episode.user_data["left"] += int(episode.last_action == 0)

    def on_episode_end(self, *, worker, episode):
        episode.custom_metrics["left_share"] = episode.user_data["left"] / episode.length

    def on_train_result(self, *, trainer, result):
        result["my_note"] = "seen"
```

Custom metrics reach every record as `custom_metrics/<name>_mean`, `_min` and `_max` over the
episodes that ended in the iteration (progress.csv, result.json, TensorBoard, the viewer).
Without callbacks a worker runs no callback code at all.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np


class Episode:
    """What a callback sees of one env's running episode.

    Attributes:
        episode_id: the id the episode's rows carry (`SampleBatch["eps_id"]`).
        env_index: which env of the worker's vector env it runs in.
        length: steps so far.
        total_reward: the sum of its rewards so far (over all agents in a multi-agent env).
        last_action: the action of the last step (None before the first, and in multi-agent
            envs, where each agent acts).
        last_reward: the reward of the last step.
        custom_metrics: name -> number, reported when the episode ends.
        user_data: anything the callbacks keep between calls.
    """

    __slots__ = ("episode_id", "env_index", "length", "total_reward", "last_action",
                 "last_reward", "custom_metrics", "user_data")

    def __init__(self, episode_id: int, env_index: int) -> None:
        self.episode_id = int(episode_id)
        self.env_index = env_index
        self.length = 0
        self.total_reward = 0.0
        self.last_action: Any = None
        self.last_reward = 0.0
        self.custom_metrics: dict[str, float] = {}
        self.user_data: dict[str, Any] = {}

    def __repr__(self) -> str:
        return (f"Episode(id={self.episode_id}, env_index={self.env_index}, "
                f"length={self.length}, total_reward={self.total_reward:g})")


class Callbacks:
    """The points a run calls back at; each does nothing unless overridden (all keyword-only)."""

    def on_episode_start(self, *, worker: Any, episode: Episode) -> None:
        """An env started an episode (after its reset), on the worker sampling it."""

    def on_episode_step(self, *, worker: Any, episode: Episode) -> None:
        """An env took one step of `episode` (`last_action`, `last_reward` are that step's)."""

    def on_episode_end(self, *, worker: Any, episode: Episode) -> None:
        """`episode` ended (terminated or truncated); set `custom_metrics` here."""

    def on_sample_end(self, *, worker: Any, batch: Any) -> None:
        """The worker finished one `sample()`; `batch` is what it returns (read it, or change
        its columns in place)."""

    def on_train_result(self, *, trainer: Any, result: dict[str, Any]) -> None:
        """The Trainer built one iteration's result, before any record is written; add keys."""


class EpisodeCallbacks:
    """Runs a worker's episode callbacks over the episodes of its envs, one `Episode` per env,
    and keeps the custom metrics of the episodes that ended until they are collected."""

    def __init__(self, callbacks: Callbacks, worker: Any) -> None:
        self.callbacks = callbacks
        self.worker = worker
        self.running: dict[int, Episode] = {}
        self.finished_metrics: list[dict[str, float]] = []

    def start(self, env_index: int, episode_id: int) -> None:
        """`env_index` began the episode `episode_id`."""
        episode = self.running[env_index] = Episode(episode_id, env_index)
        self.callbacks.on_episode_start(worker=self.worker, episode=episode)

    def step(self, env_index: int, action: Any, reward: float) -> None:
        """`env_index` took one step of its running episode."""
        episode = self.running[env_index]
        episode.length += 1
        episode.total_reward += float(reward)
        episode.last_action, episode.last_reward = action, float(reward)
        self.callbacks.on_episode_step(worker=self.worker, episode=episode)

    def end(self, env_index: int) -> None:
        """`env_index`'s running episode ended."""
        episode = self.running.pop(env_index)
        self.callbacks.on_episode_end(worker=self.worker, episode=episode)
        self.finished_metrics.append(dict(episode.custom_metrics))

    def pop_custom_metrics(self) -> list[dict[str, float]]:
        """The custom metrics of the episodes that ended since the last call."""
        finished, self.finished_metrics = self.finished_metrics, []
        return finished


def make_callbacks(spec: Any) -> Callbacks | None:
    """A `Callbacks` instance from the config's `callbacks` (a subclass, or its
    "module:Class" path); None for none.

    Raises:
        TypeError: not a Callbacks subclass (the message says what to pass).
        ValueError: a path that does not import.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        module_name, _, attribute = spec.partition(":")
        try:
            value: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                value = getattr(value, part)
        except (ImportError, AttributeError, ValueError) as error:
            where = (" Callbacks defined in a script (__main__) cannot be found from another "
                     "process: define them in an importable module." if module_name ==
                     "__main__" else "")
            raise ValueError(
                f"callbacks={spec!r} does not import ({error}); pass a Callbacks subclass or "
                f"'package.module:Class'. Restoring a checkpoint, pass config={{'callbacks': "
                f"YourCallbacks}} (or None) to replace the ones it names.{where}") from error
        spec = value
    if not (isinstance(spec, type) and issubclass(spec, Callbacks)):
        raise TypeError(f"callbacks must be a subclass of flowrl.Callbacks (or its "
                        f"'module:Class' path); got {spec!r}. Subclass flowrl.Callbacks and "
                        f"override the methods you need.")
    return spec()


def summarize_custom_metrics(episodes: list[dict[str, float]]) -> dict[str, float]:
    """`<name>_mean`, `<name>_min`, `<name>_max` over the episodes that set `name`.

    Examples:
        >>> summarize_custom_metrics([{"hits": 1.0}, {"hits": 3.0}, {}])
        {'hits_mean': 2.0, 'hits_min': 1.0, 'hits_max': 3.0}
    """
    values: dict[str, list[float]] = {}
    for metrics in episodes:
        for name, value in metrics.items():
            values.setdefault(name, []).append(float(value))
    summary: dict[str, float] = {}
    for name, series in values.items():
        summary[f"{name}_mean"] = float(np.mean(series))
        summary[f"{name}_min"] = float(np.min(series))
        summary[f"{name}_max"] = float(np.max(series))
    return summary


__all__ = ["Callbacks", "Episode", "EpisodeCallbacks", "make_callbacks",
           "summarize_custom_metrics"]
