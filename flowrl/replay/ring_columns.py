"""`RingColumns`: fixed-size numpy ring storage for the columns of `SampleBatch`es.

One preallocated array per column, created on the first write from that batch's column dtypes
and row shapes. Writes copy the incoming rows into the ring (so a buffer never holds a reference
to a caller's arrays, nor pins Ray object-store memory); reads gather rows into new arrays. There
are no per-row Python objects.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flowrl.data.sample_batch import SampleBatch


class RingColumns:
    """Columns of `capacity` rows each, written as a ring: once full, the oldest rows go first.

    Args:
        capacity: rows kept; must be a positive int.
    """

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)):
            raise TypeError(f"replay capacity must be an int, got {capacity!r}")
        if capacity <= 0:
            raise ValueError(f"replay capacity must be a positive number of rows, got {capacity=}")
        self.capacity = int(capacity)
        self.columns: dict[str, np.ndarray] = {}
        self.size = 0
        self.next_index = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the column arrays."""
        return sum(column.nbytes for column in self.columns.values())

    def check(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validates `batch` against the stored columns and returns its columns as arrays.

        Raises:
            TypeError: if `batch` is not a mapping of column name to array, or a column has an
                object dtype or one that cannot be cast to the stored column's dtype.
            ValueError: if the batch has no columns, columns of unequal length or without a row
                dimension, or columns or row shapes that differ from those already stored.
        """
        if not isinstance(batch, Mapping):
            raise TypeError(
                f"replay add needs a SampleBatch (a dict of column arrays), got "
                f"{type(batch).__name__}")
        arrays = {name: np.asarray(value) for name, value in batch.items()}
        if not arrays:
            raise ValueError("replay add needs a batch with at least one column, got none")
        for name, array in arrays.items():
            if not isinstance(name, str):
                raise TypeError(f"SampleBatch column names must be str, got {name!r}")
            if array.ndim == 0:
                raise ValueError(
                    f"column {name!r} is a scalar; every column needs a leading row dimension")
            if array.dtype.hasobject:
                raise TypeError(
                    f"column {name!r} has dtype {array.dtype}; replay stores numeric, bool or "
                    "fixed-width string columns only (object arrays would need pickle)")
        lengths = {name: len(array) for name, array in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"all batch columns must have the same number of rows, got {lengths=}")
        if self.columns:
            self._check_against_stored(arrays)
        return arrays

    def _check_against_stored(self, arrays: dict[str, np.ndarray]) -> None:
        missing = sorted(set(self.columns) - set(arrays))
        extra = sorted(set(arrays) - set(self.columns))
        if missing or extra:
            raise ValueError(
                f"batch columns must match the buffer's columns {sorted(self.columns)}; "
                f"{missing=}, {extra=}")
        for name, array in arrays.items():
            stored = self.columns[name]
            if array.shape[1:] != stored.shape[1:]:
                raise ValueError(
                    f"column {name!r} has rows of shape {array.shape[1:]}, but the buffer "
                    f"stores rows of shape {stored.shape[1:]}")
            if not np.can_cast(array.dtype, stored.dtype, casting="same_kind"):
                raise TypeError(
                    f"column {name!r} has dtype {array.dtype}, which cannot be cast safely to "
                    f"the buffer's {stored.dtype}; convert it first, "
                    f"e.g. .astype({str(stored.dtype)!r})")

    def write(self, arrays: dict[str, np.ndarray]) -> tuple[int, int]:
        """Copies checked rows (from `check`) into the ring; returns the (start, count) written.

        Rows land as if written one by one: the k-th row ever written goes to slot
        `k % capacity`. A batch larger than the capacity therefore keeps its last `capacity`
        rows, at the slots they would have had. The written rows are at `start, start+1, ...`
        modulo the capacity.
        """
        if not self.columns:
            self.columns = {
                name: np.empty((self.capacity, *array.shape[1:]), dtype=array.dtype)
                for name, array in arrays.items()}
        rows = len(next(iter(arrays.values())))
        count = min(rows, self.capacity)
        start = (self.next_index + rows - count) % self.capacity
        first = min(count, self.capacity - start)
        for name, array in arrays.items():
            column = self.columns[name]
            source = array[rows - count:]
            np.copyto(column[start:start + first], source[:first], casting="same_kind")
            np.copyto(column[:count - first], source[first:], casting="same_kind")
        self.next_index = (self.next_index + rows) % self.capacity
        self.size = min(self.size + count, self.capacity)
        return start, count

    def gather(self, indexes: np.ndarray, order: np.ndarray | None = None,
               extra: Mapping[str, np.ndarray] | None = None) -> SampleBatch:
        """A new batch holding copies of the rows at `indexes`, plus the `extra` columns.

        With `order`, the rows (and the `extra` columns) come out as `rows[order]`. Reading the
        ring at ascending indexes and then reordering the small result is more than twice as
        fast as reading it at random indexes, so callers sort first and pass a permutation.
        """
        columns = {name: column[indexes] for name, column in self.columns.items()}
        columns.update(extra or {})
        if order is not None:
            columns = {name: column[order] for name, column in columns.items()}
        return SampleBatch(columns)

    def get_state(self) -> dict[str, object]:
        """Counters and the filled rows of every column (`column/<name>`), as numpy arrays."""
        state: dict[str, object] = {"capacity": self.capacity, "size": self.size,
                                    "next_index": self.next_index}
        for name, column in self.columns.items():
            state[f"column/{name}"] = column[: self.size].copy()
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, object]) -> RingColumns:
        """Rebuilds storage from `get_state()` output (also after `np.savez`/`np.load`).

        Raises:
            ValueError: if counters are missing or out of range, or a column's length differs
                from the stored size.
        """
        ring = cls(state_scalar(state, "capacity", int))
        size, next_index = state_scalar(state, "size", int), state_scalar(state, "next_index", int)
        if not 0 <= size <= ring.capacity or not 0 <= next_index < ring.capacity:
            raise ValueError(
                f"replay state has size={size}, next_index={next_index}; both must lie within "
                f"the capacity {ring.capacity}")
        if size < ring.capacity and next_index != size:
            raise ValueError(
                f"replay state has size={size} < capacity but next_index={next_index}; a ring "
                "that is not full writes next at index == size")
        for key, value in state.items():
            if not key.startswith("column/"):
                continue
            array = np.asarray(value)
            if array.ndim == 0 or len(array) != size:
                raise ValueError(
                    f"replay state {key!r} has shape {array.shape}; it needs {size} rows")
            column = np.empty((ring.capacity, *array.shape[1:]), dtype=array.dtype)
            column[:size] = array
            ring.columns[key.removeprefix("column/")] = column
        if size and not ring.columns:
            raise ValueError(f"replay state has size={size} but no 'column/<name>' arrays")
        ring.size, ring.next_index = size, next_index
        return ring


def state_scalar(state: Mapping[str, object], key: str, kind: type) -> object:
    """`state[key]` as a plain `kind` (int, float or str), unwrapping 0-d arrays from np.load."""
    if key not in state:
        raise ValueError(f"replay state lacks {key!r}; pass the dict that get_state() returned")
    value = state[key]
    if isinstance(value, np.ndarray):
        if value.ndim != 0:
            raise ValueError(f"replay state {key!r} must be a scalar, got shape {value.shape}")
        value = value.item()
    if kind is int and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if kind is float and isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    raise ValueError(f"replay state {key!r} must be of type {kind.__name__}, got {value!r}")
