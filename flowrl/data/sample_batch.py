"""Columnar experience batches: `SampleBatch`, `MultiAgentBatch` and `concat_samples`.

A `SampleBatch` is a `dict` from column name to a numpy array whose first dimension is the row
(time step) index. Every column has the same number of rows. Because the columns are plain numpy
arrays inside a plain dict, a batch pickled with protocol 5 (as Ray's object store does) shares
its column buffers zero-copy with the reader.

Examples:
    >>> import numpy as np
    >>> batch = SampleBatch({"obs": np.zeros((4, 2), np.float32), "rewards": np.arange(4.0)})
    >>> len(batch), batch.columns
    (4, ['obs', 'rewards'])
    >>> len(batch[1:3]), float(batch[1:3]["rewards"].sum())
    (2, 3.0)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np


class SampleBatch(dict):
    """A columnar batch of experience: a dict of equally long numpy arrays.

    Standard columns are named by the class constants below; any other column is allowed.
    `len(batch)` is the number of rows, not the number of columns.

    Args:
        columns: a mapping from column name to array-like (converted with `np.asarray`).
        **kwargs: more columns, as keywords.

    Raises:
        ValueError: if the columns do not all have the same number of rows.
    """

    OBS = "obs"
    NEW_OBS = "new_obs"
    ACTIONS = "actions"
    REWARDS = "rewards"
    TERMINATEDS = "terminateds"
    TRUNCATEDS = "truncateds"
    EPS_ID = "eps_id"
    T = "t"
    ACTION_LOGP = "action_logp"
    ACTION_DIST_INPUTS = "action_dist_inputs"
    VF_PREDS = "vf_preds"
    ADVANTAGES = "advantages"
    VALUE_TARGETS = "value_targets"
    STATE_IN_PREFIX = "state_in_"
    """Recurrent models: `state_in_0`, `state_in_1`, ... hold the state fed in at each row."""
    SEQ_LENS = "seq_lens"
    """Recurrent models: the valid length of each [B, T] sequence (sequencing: issue 19)."""

    def state_in_columns(self) -> list[str]:
        """The `state_in_{i}` columns of a recurrent policy's batch, in state order."""
        prefix = self.STATE_IN_PREFIX
        names = [name for name in self if name.startswith(prefix) and name[len(prefix):].isdigit()]
        return sorted(names, key=lambda name: int(name[len(prefix):]))

    def __init__(self, columns: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__()
        merged = dict(columns or {}, **kwargs)
        for name, value in merged.items():
            dict.__setitem__(self, name, np.asarray(value))
        self._check_lengths()

    def _check_lengths(self) -> None:
        lengths = {name: _rows(value) for name, value in self.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"all SampleBatch columns must have the same number of rows, got {lengths=}; "
                "build each column from the same time steps"
            )

    @property
    def count(self) -> int:
        """The number of rows."""
        for value in self.values():
            return _rows(value)
        return 0

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return dict.__len__(self) > 0

    @property
    def columns(self) -> list[str]:
        """The column names, in insertion order."""
        return list(self.keys())

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return dict.__getitem__(self, key)
        if isinstance(key, (int, np.integer)):
            return {name: value[key] for name, value in self.items()}
        if isinstance(key, (slice, np.ndarray, list)):
            return SampleBatch({name: value[key] for name, value in self.items()})
        raise TypeError(
            f"SampleBatch indices must be a column name, a row slice, an int or an index "
            f"array, got {type(key).__name__}={key!r}"
        )

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"SampleBatch column names must be str, got {key=}")
        array = np.asarray(value)
        if dict.__len__(self) and _rows(array) != self.count:
            raise ValueError(
                f"column {key!r} has {_rows(array)} rows but the batch has {self.count}; "
                "a new column needs one entry per row"
            )
        dict.__setitem__(self, key, array)

    def copy(self) -> SampleBatch:
        """A new batch holding copies of every column."""
        return SampleBatch({name: value.copy() for name, value in self.items()})

    def __reduce__(self) -> tuple:
        return (SampleBatch, (dict(self),))

    def shuffle(self, seed: int | np.random.Generator | None = None) -> SampleBatch:
        """Returns a new batch whose rows are a random permutation of this batch's rows."""
        rng = np.random.default_rng(seed)
        return self[rng.permutation(self.count)]

    def minibatches(
        self,
        size: int,
        shuffle: bool = True,
        seed: int | np.random.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[SampleBatch]:
        """Yields consecutive minibatches of `size` rows (the last one may be smaller).

        Args:
            size: rows per minibatch; must be positive.
            shuffle: permute the rows first.
            seed: seed or generator for the permutation.
            drop_last: skip a final minibatch smaller than `size`.
        """
        if size <= 0:
            raise ValueError(f"minibatch size must be a positive int, got {size=}")
        order = np.random.default_rng(seed).permutation(self.count) if shuffle else None
        for start in range(0, self.count, size):
            stop = min(start + size, self.count)
            if drop_last and stop - start < size:
                return
            yield self[order[start:stop]] if order is not None else self[start:stop]

    def split_by_episode(self) -> list[SampleBatch]:
        """Splits the batch into contiguous per-episode pieces (slices, no copies).

        Uses `eps_id` changes when present, and also ends a piece after every row whose
        `terminateds` or `truncateds` is set.
        """
        if self.count == 0:
            return []
        ends = np.zeros(self.count, dtype=bool)
        if self.EPS_ID in self:
            eps = self[self.EPS_ID]
            ends[:-1] |= eps[1:] != eps[:-1]
        for done_column in (self.TERMINATEDS, self.TRUNCATEDS):
            if done_column in self:
                ends |= self[done_column].astype(bool)
        if self.EPS_ID not in self and not (self.TERMINATEDS in self or self.TRUNCATEDS in self):
            raise ValueError(
                "split_by_episode needs an 'eps_id', 'terminateds' or 'truncateds' column, "
                f"got columns={self.columns}"
            )
        ends[-1] = True
        stops = np.flatnonzero(ends) + 1
        starts = np.concatenate([[0], stops[:-1]])
        return [self[int(a) : int(b)] for a, b in zip(starts, stops)]

    def __repr__(self) -> str:
        lines = [f"SampleBatch({self.count} rows, {dict.__len__(self)} columns)"]
        for name, value in self.items():
            lines.append(f"  {name:<20} {_summary(value)}")
        return "\n".join(lines)

    __str__ = __repr__


class MultiAgentBatch:
    """Per-policy `SampleBatch`es plus the number of environment steps they came from.

    Args:
        policy_batches: policy id -> that policy's batch.
        env_steps: environment steps the batch covers (each step may hold several agents).
    """

    def __init__(self, policy_batches: Mapping[str, SampleBatch], env_steps: int) -> None:
        self.policy_batches = dict(policy_batches)
        self.env_steps = int(env_steps)

    @property
    def count(self) -> int:
        """The number of environment steps (as `len`)."""
        return self.env_steps

    def __len__(self) -> int:
        return self.env_steps

    def agent_steps(self) -> int:
        """The total number of rows over all policies."""
        return sum(len(b) for b in self.policy_batches.values())

    def __reduce__(self) -> tuple:
        return (MultiAgentBatch, (self.policy_batches, self.env_steps))

    def __repr__(self) -> str:
        inner = ", ".join(f"{pid!r}: {len(b)} rows" for pid, b in self.policy_batches.items())
        return f"MultiAgentBatch(env_steps={self.env_steps}, {{{inner}}})"


def concat_samples(
    batches: Sequence[SampleBatch | MultiAgentBatch],
) -> SampleBatch | MultiAgentBatch:
    """Concatenates batches row-wise (per policy for `MultiAgentBatch`es).

    Empty batches are skipped. All non-empty `SampleBatch`es must have the same columns.

    Raises:
        ValueError: on mixed batch types or mismatched columns.
    """
    batches = list(batches)
    if batches and all(isinstance(b, MultiAgentBatch) for b in batches):
        grouped: dict[str, list[SampleBatch]] = {}
        for b in batches:
            for pid, pb in b.policy_batches.items():
                grouped.setdefault(pid, []).append(pb)
        merged = {pid: concat_samples(parts) for pid, parts in grouped.items()}
        return MultiAgentBatch(merged, sum(b.env_steps for b in batches))
    if not all(isinstance(b, SampleBatch) for b in batches):
        kinds = sorted({type(b).__name__ for b in batches})
        raise ValueError(
            f"concat_samples needs all SampleBatch or all MultiAgentBatch, got {kinds=}"
        )
    non_empty = [b for b in batches if dict.__len__(b) and b.count]
    if not non_empty:
        return SampleBatch()
    if len(non_empty) == 1:
        return non_empty[0]
    columns = non_empty[0].columns
    for b in non_empty[1:]:
        if set(b.columns) != set(columns):
            raise ValueError(
                "concat_samples needs identical columns; "
                f"missing={sorted(set(columns) - set(b.columns))}, "
                f"extra={sorted(set(b.columns) - set(columns))}"
            )
    return SampleBatch({c: np.concatenate([b[c] for b in non_empty]) for c in columns})


def _rows(value: np.ndarray) -> int:
    return int(value.shape[0]) if value.ndim else 1


def _summary(value: np.ndarray) -> str:
    text = f"shape={tuple(value.shape)} dtype={value.dtype}"
    if value.size and (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
        numeric = value.astype(np.float64)
        text += f" min={numeric.min():.4g} max={numeric.max():.4g} mean={numeric.mean():.4g}"
    return text
