"""`MultiAgentReplayBuffer`: one replay buffer per policy id, behind one buffer's interface.

Multi-agent plans store `MultiAgentBatch`es (one `SampleBatch` per policy) and replay
`MultiAgentBatch`es: each policy's rows go to its own buffer (its own capacity, prioritized or
uniform, alpha, beta, ...), and a sample holds rows of each policy, drawn from its buffer. So
the replay operators (`StoreToReplay`, `Replay`, `UpdatePriorities`) and the replay actors work
unchanged for one policy or several.

Examples:
    >>> import numpy as np
    >>> from flowrl.data.sample_batch import MultiAgentBatch, SampleBatch
    >>> from flowrl.replay import PrioritizedReplayBuffer, ReplayBuffer
    >>> buffer = MultiAgentReplayBuffer({"p1": ReplayBuffer(10, seed=0),
    ...                                  "p2": PrioritizedReplayBuffer(20, seed=0)})
    >>> buffer.add(MultiAgentBatch({"p1": SampleBatch({"obs": np.zeros(3)}),
    ...                             "p2": SampleBatch({"obs": np.ones(2)})}, env_steps=3))
    5
    >>> len(buffer), buffer.sizes()
    (5, {'p1': 3, 'p2': 2})
    >>> sample = buffer.sample(4)
    >>> sample
    MultiAgentBatch(env_steps=8, {'p1': 4 rows, 'p2': 4 rows})
    >>> sorted(sample.policy_batches["p2"].columns)
    ['batch_indexes', 'obs', 'weights']
    >>> buffer.update_priorities({"p2": sample.policy_batches["p2"]["batch_indexes"]},
    ...                          {"p2": np.full(4, 3.0)})
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from flowrl.data.sample_batch import MultiAgentBatch, SampleBatch
from flowrl.replay.buffer import ReplayBuffer
from flowrl.replay.prioritized import PrioritizedReplayBuffer, add_with_priorities
from flowrl.replay.ring_columns import state_scalar

STATE_FORMAT = "flowrl.replay.multi_agent/1"
_STATE_PREFIX = "policy{index}."


class MultiAgentReplayBuffer:
    """Holds one `ReplayBuffer` (or `PrioritizedReplayBuffer`) per policy id.

    - `add(batch)` stores each policy's rows of a `MultiAgentBatch` in that policy's buffer;
      rows of policies without a buffer (policies that do not train) are not stored.
    - `sample(n)` draws `n` rows from each non-empty buffer (or `{policy id: n}` from the named
      ones) and returns a `MultiAgentBatch` whose `env_steps` is the number of rows drawn.
    - `update_priorities({policy id: slots}, {policy id: priorities})` per policy.

    Args:
        buffers: policy id -> that policy's buffer.

    Raises:
        TypeError, ValueError: no buffers, or something that is not a single-policy buffer.
    """

    def __init__(self, buffers: Mapping[str, ReplayBuffer]) -> None:
        if not isinstance(buffers, Mapping) or not buffers:
            raise ValueError("MultiAgentReplayBuffer needs a dict policy id -> ReplayBuffer with "
                             f"at least one entry, got {buffers!r}")
        for policy_id, buffer in buffers.items():
            if not isinstance(policy_id, str) or not isinstance(buffer, ReplayBuffer):
                raise TypeError(
                    f"MultiAgentReplayBuffer needs str policy ids mapped to ReplayBuffer or "
                    f"PrioritizedReplayBuffer, got {policy_id!r}: {buffer!r}")
        self.buffers: dict[str, ReplayBuffer] = dict(buffers)

    @property
    def policy_ids(self) -> list[str]:
        """The policies this buffer stores rows of."""
        return list(self.buffers)

    @property
    def capacity(self) -> int:
        """The most rows kept, over all policies."""
        return sum(buffer.capacity for buffer in self.buffers.values())

    def __len__(self) -> int:
        return sum(len(buffer) for buffer in self.buffers.values())

    def sizes(self) -> dict[str, int]:
        """Policy id -> rows stored for it."""
        return {policy_id: len(buffer) for policy_id, buffer in self.buffers.items()}

    @property
    def nbytes(self) -> int:
        """Bytes held by all policies' buffers."""
        return sum(buffer.nbytes for buffer in self.buffers.values())

    @property
    def prioritized(self) -> bool:
        """True if some policy's buffer is a `PrioritizedReplayBuffer`."""
        return any(isinstance(b, PrioritizedReplayBuffer) for b in self.buffers.values())

    def add(self, batch: MultiAgentBatch | Mapping[str, SampleBatch] | SampleBatch,
            priorities: Mapping[str, np.ndarray] | None = None) -> int:
        """Copies each policy's rows into its buffer; returns the number of rows stored.

        Args:
            batch: a `MultiAgentBatch` (or a dict policy id -> SampleBatch). A plain
                `SampleBatch` is accepted when this buffer holds exactly one policy.
            priorities: policy id -> initial priorities of that policy's rows (worker-side
                prioritization); policies not named enter with their buffer's max priority.

        Raises:
            TypeError, ValueError: a batch that does not fit a policy's buffer, or priorities
                that do not (nothing is stored then).
        """
        parts = self._policy_parts(batch)
        priorities = dict(priorities or {})
        stored = {pid: part for pid, part in parts.items()
                  if pid in self.buffers and len(part)}
        for policy_id, part in stored.items():  # check everything before changing anything
            buffer = self.buffers[policy_id]
            arrays = buffer._ring.check(part)  # noqa: SLF001 - same package: a dry run of add
            buffer._before_write(arrays)  # noqa: SLF001
            _check_priorities(policy_id, buffer, part, priorities.get(policy_id))
        for policy_id, part in stored.items():
            add_with_priorities(self.buffers[policy_id], part, priorities.get(policy_id))
        return sum(len(part) for part in stored.values())

    def _policy_parts(self, batch: Any) -> dict[str, SampleBatch]:
        if isinstance(batch, MultiAgentBatch):
            return batch.policy_batches
        if isinstance(batch, SampleBatch):
            if len(self.buffers) != 1:
                raise TypeError(
                    f"MultiAgentReplayBuffer of policies {self.policy_ids} needs a "
                    "MultiAgentBatch (rows per policy), got a SampleBatch")
            return {self.policy_ids[0]: batch}
        if isinstance(batch, Mapping) and all(isinstance(v, SampleBatch) for v in batch.values()):
            return dict(batch)
        raise TypeError(f"MultiAgentReplayBuffer.add needs a MultiAgentBatch, got "
                        f"{type(batch).__name__}")

    def sample(self, num_items: int | Mapping[str, int], **options: Any) -> MultiAgentBatch:
        """Rows drawn from each policy's buffer, as a `MultiAgentBatch`.

        Args:
            num_items: rows per policy, from every non-empty buffer; or policy id -> rows,
                from those buffers only.
            options: further arguments of the buffers' `sample` (e.g. `beta`), passed to the
                prioritized ones.

        Raises:
            ValueError: every buffer is empty, or a named policy has no buffer or no rows.
        """
        if isinstance(num_items, Mapping):
            wanted = dict(num_items)
            unknown = sorted(set(wanted) - set(self.buffers))
            if unknown:
                raise ValueError(f"sample names policies {unknown} without a buffer; this "
                                 f"buffer holds {self.policy_ids}")
        else:
            wanted = {pid: num_items for pid, buffer in self.buffers.items() if len(buffer)}
            if not wanted:
                raise ValueError("cannot sample from an empty replay buffer; add a batch first")
        parts = {}
        for policy_id, count in wanted.items():
            buffer = self.buffers[policy_id]
            extra = options if isinstance(buffer, PrioritizedReplayBuffer) else {}
            parts[policy_id] = buffer.sample(count, **extra)
        return MultiAgentBatch(parts, env_steps=sum(len(part) for part in parts.values()))

    def update_priorities(self, indexes: Mapping[str, np.ndarray],
                          priorities: Mapping[str, np.ndarray]) -> None:
        """Sets new priorities per policy: `indexes[pid]` are slots of that policy's buffer
        (its sample's `batch_indexes`), `priorities[pid]` their new priorities.

        Raises:
            TypeError, ValueError: mismatched policy ids, a policy with a uniform buffer, or
                what `PrioritizedReplayBuffer.update_priorities` rejects.
        """
        if not isinstance(indexes, Mapping) or not isinstance(priorities, Mapping) or set(
                indexes) != set(priorities):
            raise TypeError("MultiAgentReplayBuffer.update_priorities needs two dicts with the "
                            "same policy ids: {policy id: slots}, {policy id: priorities}")
        for policy_id in indexes:
            if not isinstance(self.buffers.get(policy_id), PrioritizedReplayBuffer):
                raise ValueError(
                    f"update_priorities for policy {policy_id!r}, whose buffer is "
                    f"{self.buffers.get(policy_id)!r}; only prioritized buffers have priorities")
        for policy_id, policy_indexes in indexes.items():
            self.buffers[policy_id].update_priorities(policy_indexes, priorities[policy_id])

    def stats(self) -> dict[str, Any]:
        """Totals over the policies (size, capacity, added_count, sampled_count, nbytes) and
        each policy's own `stats()` under `policies`."""
        per_policy = {pid: buffer.stats() for pid, buffer in self.buffers.items()}
        totals = {key: sum(stats[key] for stats in per_policy.values())
                  for key in ("size", "capacity", "added_count", "sampled_count", "nbytes")}
        return {**totals, "policies": per_policy}

    def get_state(self) -> dict[str, Any]:
        """Every policy's buffer state in one flat dict of numpy arrays and plain values
        (keys `policy<i>.<key>`, in the order of `policy_ids`), so `np.savez` stores it."""
        state: dict[str, Any] = {"format": STATE_FORMAT, "kind": type(self).__name__,
                                 "policy_ids": json.dumps(self.policy_ids)}
        for index, buffer in enumerate(self.buffers.values()):
            prefix = _STATE_PREFIX.format(index=index)
            state.update({prefix + key: value for key, value in buffer.get_state().items()})
        return state

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores a state from `get_state()` of a buffer with the same policies (each of the
        same kind and capacity).

        Raises:
            ValueError: a malformed state, other policies, or a policy's state that its buffer
                rejects (the buffer is left unchanged).
        """
        if not isinstance(state, Mapping):
            raise TypeError(
                f"set_state needs the dict from get_state(), got {type(state).__name__}")
        found_format = state_scalar(state, "format", str)
        if found_format != STATE_FORMAT:
            raise ValueError(f"replay state format {found_format!r} is not {STATE_FORMAT!r}; "
                             "a single policy's buffer state goes into that policy's buffer")
        try:
            saved_ids = json.loads(state_scalar(state, "policy_ids", str))
        except ValueError as error:
            raise ValueError(f"replay state has invalid 'policy_ids': {error}") from error
        if saved_ids != self.policy_ids:
            raise ValueError(f"replay state holds policies {saved_ids}, this buffer "
                             f"{self.policy_ids}; restore it into a buffer with the same policies")
        restored = {}
        for index, (policy_id, buffer) in enumerate(self.buffers.items()):
            prefix = _STATE_PREFIX.format(index=index)
            part = {key[len(prefix):]: value for key, value in state.items()
                    if key.startswith(prefix)}
            fresh = copy.copy(buffer)  # set_state rebinds its arrays; the original keeps its own
            try:
                fresh.set_state(part)
            except (TypeError, ValueError) as error:
                raise ValueError(f"policy {policy_id!r}: {error}") from error
            restored[policy_id] = fresh
        self.buffers = restored

    def __repr__(self) -> str:
        inner = ", ".join(f"{pid!r}: {buffer!r}" for pid, buffer in self.buffers.items())
        return f"MultiAgentReplayBuffer({{{inner}}})"


def _check_priorities(policy_id: str, buffer: ReplayBuffer, part: SampleBatch,
                      priorities: np.ndarray | None) -> None:
    if priorities is None:
        return
    if not isinstance(buffer, PrioritizedReplayBuffer):
        raise ValueError(f"initial priorities for policy {policy_id!r}, whose buffer is uniform "
                         f"({buffer!r}); drop them or give it a prioritized buffer")
    if np.size(priorities) != len(part):
        raise ValueError(f"add needs one initial priority per row: policy {policy_id!r} has "
                         f"{len(part)} rows and {np.size(priorities)} priorities")


__all__ = ["MultiAgentReplayBuffer"]
