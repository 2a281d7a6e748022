"""`ReplayBuffer`: a fixed-capacity FIFO store of transitions with uniform sampling.

Examples:
    >>> import numpy as np
    >>> from flowrl.data.sample_batch import SampleBatch
    >>> buffer = ReplayBuffer(capacity=3, seed=0)
    >>> buffer.add(SampleBatch({"obs": np.arange(4.0), "actions": np.arange(4)}))
    >>> len(buffer), sorted(buffer.sample(5)["actions"].tolist())[0] >= 1  # row 0 was dropped
    (3, True)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from flowrl.data.sample_batch import SampleBatch
from flowrl.replay.ring_columns import RingColumns, state_scalar

STATE_FORMAT = "flowrl.replay/1"


class ReplayBuffer:
    """Keeps the last `capacity` rows added and samples them uniformly, with replacement.

    Rows are stored column by column in preallocated numpy rings (created on the first `add`,
    with that batch's dtypes and row shapes). `add` copies the rows in; `sample` returns copies.

    Args:
        capacity: the number of rows (transitions) kept; older rows are overwritten first.
        seed: seeds the sampling generator; equal seeds and equal calls give equal samples.

    Raises:
        TypeError, ValueError: if `capacity` is not a positive int.
    """

    def __init__(self, capacity: int, seed: int | None = None) -> None:
        self._ring = RingColumns(capacity)
        self._rng = np.random.default_rng(seed)
        self._added_count = 0
        self._sampled_count = 0

    @property
    def capacity(self) -> int:
        """The most rows the buffer keeps."""
        return self._ring.capacity

    def __len__(self) -> int:
        return self._ring.size

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffer's numpy arrays (columns, plus trees where prioritized)."""
        return self._ring.nbytes

    def add(self, batch: SampleBatch) -> None:
        """Copies the rows of `batch` into the buffer, overwriting the oldest rows when full.

        The first batch fixes the columns, their dtypes and row shapes; later batches must have
        the same columns with the same row shapes and dtypes that cast safely ("same_kind").
        A batch with more rows than the capacity keeps its last `capacity` rows. Slots are
        predictable: the k-th row ever added (counting from 0) is in slot `k % capacity`.

        Raises:
            TypeError, ValueError: on a batch that does not fit (the buffer is left unchanged).
        """
        arrays = self._ring.check(batch)
        self._before_write(arrays)
        start, count = self._ring.write(arrays)
        self._after_write(start, count)
        self._added_count += len(next(iter(arrays.values())))

    def _before_write(self, arrays: dict[str, np.ndarray]) -> None:
        """Hook for subclasses: more checks, before anything changes."""

    def _after_write(self, start: int, count: int) -> None:
        """Hook for subclasses: rows `start, ..., start+count-1` (modulo capacity) were written."""

    def sample(self, num_items: int) -> SampleBatch:
        """`num_items` rows drawn uniformly with replacement, as a new batch of copies.

        Raises:
            ValueError: if the buffer is empty or `num_items` is not a positive int.
        """
        self._check_sample_size(num_items)
        indexes = np.sort(self._rng.integers(0, len(self), size=num_items))
        self._sampled_count += num_items
        return self._ring.gather(indexes, order=self._rng.permutation(num_items))

    def _check_sample_size(self, num_items: int) -> None:
        if isinstance(num_items, bool) or not isinstance(num_items, (int, np.integer)):
            raise TypeError(f"sample needs an int number of items, got {num_items!r}")
        if num_items <= 0:
            raise ValueError(f"sample needs a positive number of items, got {num_items=}")
        if not len(self):
            raise ValueError("cannot sample from an empty replay buffer; add a batch first")

    def stats(self) -> dict[str, Any]:
        """Size, capacity, rows added and rows sampled so far, and bytes held."""
        return {"size": len(self), "capacity": self.capacity, "added_count": self._added_count,
                "sampled_count": self._sampled_count, "nbytes": self.nbytes}

    def get_state(self) -> dict[str, Any]:
        """The buffer's full state: numpy arrays plus plain int/float/str values only.

        The result can be saved with `np.savez(path, **state)` and restored with
        `set_state(dict(np.load(path, allow_pickle=False)))`; no pickle is involved.
        """
        return {"format": STATE_FORMAT, "kind": type(self).__name__, **self._ring.get_state(),
                "added_count": self._added_count, "sampled_count": self._sampled_count,
                "rng_state": json.dumps(self._rng.bit_generator.state)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores a state from `get_state()` (of a buffer of the same kind and capacity).

        Raises:
            ValueError: if the state is malformed or was taken from a different kind of buffer
                or capacity (the buffer is left unchanged).
        """
        if not isinstance(state, Mapping):
            raise TypeError(
                f"set_state needs the dict from get_state(), got {type(state).__name__}")
        found_format = state_scalar(state, "format", str)
        if found_format != STATE_FORMAT:
            raise ValueError(f"replay state format {found_format!r} is not {STATE_FORMAT!r}")
        kind = state_scalar(state, "kind", str)
        if kind != type(self).__name__:
            raise ValueError(
                f"replay state was taken from a {kind}; restore it into a {kind}, "
                f"not a {type(self).__name__}")
        capacity = state_scalar(state, "capacity", int)
        if capacity != self.capacity:
            raise ValueError(
                f"replay state has capacity {capacity}, this buffer {self.capacity}; "
                "create the buffer with the saved capacity")
        ring = RingColumns.from_state(state)
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = json.loads(state_scalar(state, "rng_state", str))
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(f"replay state has an invalid 'rng_state': {error}") from error
        counters = {key: state_scalar(state, key, int) for key in ("added_count", "sampled_count")}
        apply_extra = self._restore_extra(state, ring)
        self._ring, self._rng = ring, rng
        self._added_count, self._sampled_count = counters["added_count"], counters["sampled_count"]
        apply_extra()

    def _restore_extra(self, state: Mapping[str, Any], ring: RingColumns) -> Any:
        """Hook for subclasses: validates their part of `state` without changing anything, and
        returns a function that applies it."""
        return lambda: None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={len(self)}, capacity={self.capacity})"
