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
    """Where each sequence starts and how many steps it has, in the batch's rows taken in
    `order` (each agent's steps of each episode together, in time order)."""

    starts: np.ndarray
    """First position (in `order`) of each sequence [S]."""
    lengths: np.ndarray
    """Real steps of each sequence [S]."""
    max_seq_len: int
    """T: the padded length."""
    order: np.ndarray | None = None
    """The batch rows in sequence order; None: the rows' own order."""

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
        positions = np.repeat(starts, lengths) + offsets
        return positions if self.order is None else self.order[positions]

    def columns(self) -> dict[str, np.ndarray]:
        """`seq_lens`, `seq_rows` and `seq_slots` for a batch whose sequences tile all its
        rows (taken in `order`)."""
        lengths, steps = self.lengths, self.max_seq_len
        sequence_of_position = np.repeat(np.arange(len(lengths)), lengths)
        first = np.cumsum(lengths) - lengths
        step_of_position = np.arange(len(sequence_of_position)) - first[sequence_of_position]
        order = (np.arange(len(sequence_of_position)) if self.order is None
                 else np.asarray(self.order))
        slots = np.empty(len(order), np.int64)
        slots[order] = sequence_of_position * steps + step_of_position
        step = np.minimum(np.arange(steps)[None], lengths[:, None] - 1)
        rows = order[first[:, None] + step]
        return {"seq_lens": lengths.astype(np.int64),
                "seq_rows": rows.reshape(-1).astype(np.int64), "seq_slots": slots}

    def first_rows(self) -> np.ndarray:
        """The batch row each sequence starts at [S]."""
        first = np.cumsum(self.lengths) - self.lengths
        return first if self.order is None else np.asarray(self.order)[first]


def sequence_layout(eps_id: np.ndarray, t: np.ndarray, max_seq_len: int, *,
                    agent_index: np.ndarray | None = None) -> SequenceLayout:
    """The sequences of a batch of steps. The rows are taken episode by episode and, in a
    multi-agent batch, agent by agent (keeping their order otherwise); a new sequence starts
    where the episode or agent changes, where the step is not the one after the previous row,
    and every `max_seq_len` steps.

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
    agent = np.zeros(count, np.int64) if agent_index is None else np.asarray(agent_index)
    order = np.lexsort((np.arange(count), agent, eps_id))
    eps_id, t, agent = eps_id[order], t[order], agent[order]
    breaks = np.ones(count, bool)
    breaks[1:] = (eps_id[1:] != eps_id[:-1]) | (agent[1:] != agent[:-1]) | (t[1:] != t[:-1] + 1)
    run_starts = np.flatnonzero(breaks)
    run_lengths = np.diff(np.append(run_starts, count))
    pieces = -(-run_lengths // max_seq_len)
    offsets = np.arange(int(pieces.sum())) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    starts = np.repeat(run_starts, pieces) + offsets * max_seq_len
    ends = np.repeat(run_starts + run_lengths, pieces)
    lengths = np.minimum(ends - starts, max_seq_len)
    ordered = None if np.array_equal(order, np.arange(count)) else order.astype(np.int64)
    return SequenceLayout(starts.astype(np.int64), lengths.astype(np.int64), max_seq_len,
                          ordered)


def add_sequence_columns(arrays: Mapping[str, np.ndarray], layout: SequenceLayout,
                         state_columns: list[str]) -> dict[str, np.ndarray]:
    """`arrays` (per-row, all rows of the layout's sequences) with the sequence columns added:
    `seq_lens`, `seq_rows`, `seq_slots` and each sequence's start state `seq_{state_in_i}`."""
    out = dict(arrays)
    out.update(layout.columns())
    first_rows = layout.first_rows()
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


def layout_of(arrays: Mapping[str, np.ndarray], max_seq_len: int) -> SequenceLayout:
    """The layout whose `columns()` gave `arrays`' sequence columns (rows back from `seq_rows`).

    Examples:
        >>> layout = sequence_layout(np.array([2, 1, 2, 1]), np.array([0, 0, 1, 1]), 3)
        >>> layout_of(layout.columns(), 3).rows().tolist()
        [1, 3, 0, 2]
    """
    lengths = np.asarray(arrays["seq_lens"])
    slots = np.asarray(arrays["seq_rows"]).reshape(len(lengths), max_seq_len)
    valid = np.arange(max_seq_len)[None] < lengths[:, None]
    return SequenceLayout(np.cumsum(lengths) - lengths, lengths, max_seq_len, slots[valid])


def strip_sequence_columns(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-row arrays of a batch that has sequence columns."""
    return {name: value for name, value in arrays.items() if not is_sequence_column(name)}


def is_sequence_column(name: str) -> bool:
    """Whether a column is per sequence or per padded slot rather than per row."""
    return name in SEQUENCE_COLUMNS or name.startswith("seq_state_in_")
