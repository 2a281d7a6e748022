"""Observation normalization: running statistics that merge exactly, and the mean/std filter
a policy applies to its observation rows (`observation_filter="MeanStdFilter"`).

Workers each count the observations they see; the learner merges their counts (in any order,
exactly) and sends the merged statistics back, so every worker and the learner normalize the
same way. ES and ARS merge them inside their plans; the other algorithms once per training
iteration (`WorkerSet.sync_observation_filters`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

_MIN_STD = 1e-2
FILTER_CLIP = 10.0
"""Normalized observations are clipped to +-this many standard deviations."""
OBSERVATION_FILTERS = ("NoFilter", "MeanStdFilter")


class RunningStat:
    """Count, mean and sum of squared deviations of a stream of observation rows (Welford).

    Two `RunningStat`s merge exactly (Chan et al.'s parallel formula), so workers can each
    count the observations they saw and the learner adds their deltas in any order.

    Examples:
        >>> a, b = RunningStat((1,)), RunningStat((1,))
        >>> a.push_rows(np.array([[1.0], [3.0]])); b.push_rows(np.array([[5.0]]))
        >>> a.merge(b); a.count, a.mean.tolist(), round(float(a.var[0]), 3)
        (3, [3.0], 4.0)
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.count = 0
        self.mean = np.zeros(shape, dtype=np.float64)
        self.sum_sq = np.zeros(shape, dtype=np.float64)

    def push_rows(self, rows: np.ndarray) -> None:
        """Adds a batch of observation rows (first axis: rows)."""
        rows = np.asarray(rows, dtype=np.float64)
        if len(rows) == 0:
            return
        other = RunningStat(self.mean.shape)
        other.count = len(rows)
        other.mean = rows.mean(axis=0)
        other.sum_sq = ((rows - other.mean) ** 2).sum(axis=0)
        self.merge(other)

    def merge(self, other: RunningStat) -> None:
        """Adds another stat's observations to this one."""
        if other.count == 0:
            return
        total = self.count + other.count
        delta = other.mean - self.mean
        self.sum_sq = self.sum_sq + other.sum_sq + delta**2 * self.count * other.count / total
        self.mean = self.mean + delta * other.count / total
        self.count = total

    @property
    def var(self) -> np.ndarray:
        """Sample variance per dimension (ones before two observations were seen)."""
        if self.count < 2:
            return np.ones_like(self.mean)
        return self.sum_sq / (self.count - 1)

    @property
    def std(self) -> np.ndarray:
        """Standard deviation per dimension, at least 0.01 so constant inputs stay finite."""
        return np.maximum(np.sqrt(self.var), _MIN_STD)

    def get_state(self) -> dict[str, Any]:
        return {"count": int(self.count), "mean": self.mean.copy(), "sum_sq": self.sum_sq.copy()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RunningStat:
        stat = cls(np.asarray(state["mean"]).shape)
        stat.count = int(state["count"])
        stat.mean = np.asarray(state["mean"], dtype=np.float64).copy()
        stat.sum_sq = np.asarray(state["sum_sq"], dtype=np.float64).copy()
        return stat


class MeanStdFilter:
    """Normalizes observation rows by the running mean and std of the rows it has seen.

    `running` is what it normalizes with: the merged statistics it was last given plus what it
    saw since; `delta` is what it saw since the last `pop_delta()`, for the learner to merge.

    Examples:
        >>> f = MeanStdFilter((1,))
        >>> f.push(np.array([[1.0], [3.0]]))
        >>> f.normalize(np.array([[2.0]])).tolist(), f.pop_delta()["count"], f.delta.count
        ([[0.0]], 2, 0)
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.running = RunningStat(shape)
        self.delta = RunningStat(shape)

    def push(self, rows: np.ndarray) -> None:
        """Counts a batch of (unnormalized) observation rows."""
        self.running.push_rows(rows)
        self.delta.push_rows(rows)

    def normalize(self, rows: np.ndarray) -> np.ndarray:
        """`(rows - mean) / std`, clipped to +-FILTER_CLIP, as float32."""
        scaled = (np.asarray(rows, np.float64) - self.running.mean) / self.running.std
        return np.clip(scaled, -FILTER_CLIP, FILTER_CLIP).astype(np.float32)

    def pop_delta(self) -> dict[str, Any]:
        """The statistics of the rows pushed since the last call (and forgets them)."""
        delta, self.delta = self.delta, RunningStat(self.delta.mean.shape)
        return delta.get_state()

    def merge_delta(self, delta: Mapping[str, Any]) -> None:
        """Adds another filter's `pop_delta()` to what this one normalizes with."""
        self.running.merge(RunningStat.from_state(delta))

    def set_running(self, state: Mapping[str, Any]) -> None:
        """Normalizes from now on with `state` (the learner's merged statistics) plus what
        this filter saw since its last `pop_delta()`."""
        self.running = RunningStat.from_state(state)
        self.running.merge(self.delta)

    def get_state(self) -> dict[str, Any]:
        return self.running.get_state()

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.running = RunningStat.from_state(state)
        self.delta = RunningStat(self.running.mean.shape)


def make_observation_filter(name: str, shape: tuple[int, ...], dtype: Any) -> MeanStdFilter | None:
    """The filter `observation_filter` names for observation rows of `shape`, or None.

    Raises:
        ValueError: an unknown name, or a filter over image (uint8) rows.
    """
    if name == "NoFilter":
        return None
    if name != "MeanStdFilter":
        raise ValueError(f"observation_filter={name!r} is not one of {list(OBSERVATION_FILTERS)}.")
    if np.dtype(dtype) == np.uint8:
        raise ValueError("observation_filter='MeanStdFilter' normalizes vector observations; "
                         "these are uint8 images, which the conv trunk scales itself. Use "
                         "observation_filter='NoFilter'.")
    return MeanStdFilter(shape)
