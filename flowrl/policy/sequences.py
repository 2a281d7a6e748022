"""Cutting a batch of steps into the sequences a recurrent model trains on.

A sampled batch holds steps, each env's steps in time order, with the state the model had
before each step (`state_in_{i}`). A recurrent model trains on sequences: runs of consecutive
steps of one episode, at most `max_seq_len` long, each starting from its first step's stored
state. `SequenceLayout` finds them; the policy then pads each to `max_seq_len` steps, runs the
model over [S, T] and takes the outputs of the real steps back as rows. A loss therefore sees
one output per real step, in the batch's row order, and padding never reaches it.

Columns the policy adds to the arrays a loss gets (beside the per-row columns):

- `seq_lens` [S]: each sequence's number of real steps;
- `seq_rows` [S * T]: the batch row in each padded slot (a padded slot repeats its sequence's
  last real row, so it holds finite values);
- `seq_slots` [N]: the padded slot of each row (to take the outputs back as rows);
- `seq_state_in_{i}` [S, ...]: the state at each sequence's start.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

SEQUENCE_COLUMNS = ("seq_lens", "seq_rows", "seq_slots")
"""Per-sequence and per-slot columns (not indexed by row); `seq_state_in_{i}` are too."""


@dataclass(frozen=True)
class SequenceLayout:
    """Where each sequence starts in the batch and how many steps it has."""

    starts: np.ndarray
    """First row of each sequence [S]."""
    lengths: np.ndarray
    """Real steps of each sequence [S]."""
    max_seq_len: int
    """T: the padded length."""

    @property
    def num_sequences(self) -> int:
        return len(self.starts)

    def rows(self, sequences: np.ndarray | None = None) -> np.ndarray:
        """The batch rows of the given sequences (all by default), sequence after sequence."""
        starts, lengths = self.starts, self.lengths
        if sequences is not None:
            starts, lengths = starts[sequences], lengths[sequences]
        if not len(starts):
            return np.zeros(0, np.int64)
        offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths,
                                                            lengths)
        return np.repeat(starts, lengths) + offsets

    def columns(self) -> dict[str, np.ndarray]:
        """`seq_lens`, `seq_rows` and `seq_slots` for a batch whose rows are exactly the
        sequences' rows in order (as `rows()` returns them)."""
        lengths, steps = self.lengths, self.max_seq_len
        sequence_of_row = np.repeat(np.arange(len(lengths)), lengths)
        first_row = np.cumsum(lengths) - lengths
        step_of_row = np.arange(len(sequence_of_row)) - first_row[sequence_of_row]
        slots = sequence_of_row * steps + step_of_row
        step = np.minimum(np.arange(steps)[None], lengths[:, None] - 1)
        rows = first_row[:, None] + step
        return {"seq_lens": lengths.astype(np.int64), "seq_rows": rows.reshape(-1).astype(
            np.int64), "seq_slots": slots.astype(np.int64)}


def sequence_layout(eps_id: np.ndarray, t: np.ndarray, max_seq_len: int, *,
                    fragment_length: int | None = None) -> SequenceLayout:
    """The sequences of a batch of steps: a new one starts where the episode changes, where the
    step is not the one after the previous row, every `max_seq_len` steps, and (time-major
    batches) at every multiple of `fragment_length` rows.

    Examples:
        >>> layout = sequence_layout(np.array([7, 7, 7, 8, 8]), np.array([0, 1, 2, 0, 1]), 2)
        >>> layout.starts.tolist(), layout.lengths.tolist()
        ([0, 2, 3], [2, 1, 2])
    """
    if max_seq_len < 1:
        raise ValueError(f"max_seq_len must be >= 1; got {max_seq_len=}")
    eps_id, t = np.asarray(eps_id), np.asarray(t).astype(np.int64)
    count = len(t)
    if count == 0:
        return SequenceLayout(np.zeros(0, np.int64), np.zeros(0, np.int64), max_seq_len)
    breaks = np.ones(count, bool)
    breaks[1:] = (eps_id[1:] != eps_id[:-1]) | (t[1:] != t[:-1] + 1)
    if fragment_length:
        breaks[np.arange(count) % fragment_length == 0] = True
    run_starts = np.flatnonzero(breaks)
    run_lengths = np.diff(np.append(run_starts, count))
    pieces = -(-run_lengths // max_seq_len)
    offsets = np.arange(int(pieces.sum())) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    starts = np.repeat(run_starts, pieces) + offsets * max_seq_len
    ends = np.repeat(run_starts + run_lengths, pieces)
    lengths = np.minimum(ends - starts, max_seq_len)
    return SequenceLayout(starts.astype(np.int64), lengths.astype(np.int64), max_seq_len)


def add_sequence_columns(arrays: Mapping[str, np.ndarray], layout: SequenceLayout,
                         state_columns: list[str]) -> dict[str, np.ndarray]:
    """`arrays` (per-row, already in the layout's row order) with the sequence columns added:
    `seq_lens`, `seq_rows`, `seq_slots` and each sequence's start state `seq_{state_in_i}`."""
    out = dict(arrays)
    out.update(layout.columns())
    first_rows = np.cumsum(layout.lengths) - layout.lengths
    for name in state_columns:
        out[f"seq_{name}"] = np.ascontiguousarray(arrays[name][first_rows])
    return out


def sequence_minibatches(arrays: Mapping[str, np.ndarray], layout: SequenceLayout,
                         state_columns: list[str], rows_per_minibatch: int,
                         rng: np.random.Generator) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of minibatches of whole sequences, in a shuffled order: each holds about
    `rows_per_minibatch` steps (as many sequences as that is on average), and the rows of its
    sequences with their sequence columns. `arrays` are the batch's per-row arrays."""
    count = layout.num_sequences
    total = int(layout.lengths.sum())
    per_minibatch = max(1, round(count * min(rows_per_minibatch, total) / max(total, 1)))
    order = rng.permutation(count)
    for start in range(0, count, per_minibatch):
        chosen = order[start:start + per_minibatch]
        rows = layout.rows(chosen)
        sub = SequenceLayout(np.cumsum(layout.lengths[chosen]) - layout.lengths[chosen],
                             layout.lengths[chosen], layout.max_seq_len)
        yield add_sequence_columns({name: value[rows] for name, value in arrays.items()},
                                   sub, state_columns)


def strip_sequence_columns(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-row arrays of a batch that has sequence columns."""
    return {name: value for name, value in arrays.items() if not is_sequence_column(name)}


def is_sequence_column(name: str) -> bool:
    """Whether a column is per sequence or per padded slot rather than per row."""
    return name in SEQUENCE_COLUMNS or name.startswith("seq_state_in_")
