"""`PrioritizedReplayBuffer`: proportional prioritized replay (Schaul et al., 2016).

Item i is sampled with probability P(i) = p_i^alpha / sum_k p_k^alpha. Each sample carries
importance weights w_i = (N * P(i))^-beta / max_k (N * P(k))^-beta, where the maximum weight
belongs to the item of smallest priority, so the weights lie in (0, 1]. New items enter with the
largest priority seen so far, so each is likely to be replayed at least once.

Examples:
    >>> import numpy as np
    >>> from flowrl.data.sample_batch import SampleBatch
    >>> buffer = PrioritizedReplayBuffer(capacity=8, alpha=1.0, beta=1.0, eps=0.0, seed=0)
    >>> buffer.add(SampleBatch({"obs": np.arange(4.0)}))
    >>> buffer.update_priorities(np.arange(4), np.array([1.0, 1.0, 1.0, 5.0]))
    >>> batch = buffer.sample(4)
    >>> sorted(batch.columns)
    ['batch_indexes', 'obs', 'weights']
    >>> round(float(batch["weights"].min()), 3)  # the row of priority 5: (5 / 1)^-1
    0.2
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from flowrl.data.sample_batch import SampleBatch
from flowrl.replay.buffer import ReplayBuffer
from flowrl.replay.ring_columns import RingColumns, state_scalar
from flowrl.replay.segment_tree import LEAF_DTYPE, SumMinTree

WEIGHTS = "weights"
BATCH_INDEXES = "batch_indexes"
# Tree leaves are float32: the smallest positive normal float32 stands in for weights that
# would round to zero (zero marks an empty slot in the tree).
_SMALLEST_LEAF = float(np.finfo(LEAF_DTYPE).tiny)


class PrioritizedReplayBuffer(ReplayBuffer):
    """A `ReplayBuffer` that samples rows in proportion to priority^alpha.

    Samples carry two extra columns: `weights` (float32 importance weights, see the module
    docstring) and `batch_indexes` (int64 buffer slots, to pass back to `update_priorities`).
    A slot index refers to whatever row occupies that slot now; a row overwritten since it was
    sampled takes the update.

    Args:
        capacity: the number of rows kept; older rows are overwritten first.
        alpha: how strongly priorities skew sampling; 0 is uniform, 1 fully proportional.
        beta: importance-weight exponent; 0 gives weights of 1, 1 fully corrects the bias.
            May be changed later (`buffer.beta = 0.7`) or per call (`sample(n, beta=...)`).
        eps: added to every priority passed to `update_priorities`, so no row becomes
            unreachable.
        seed: seeds the sampling generator.

    Raises:
        TypeError, ValueError: if an argument is out of range.
    """

    def __init__(self, capacity: int, alpha: float = 0.6, beta: float = 0.4, eps: float = 1e-6,
                 seed: int | None = None) -> None:
        super().__init__(capacity, seed)
        self._alpha = _non_negative("alpha", alpha)
        self._eps = _non_negative("eps", eps)
        self.beta = beta
        self._tree = SumMinTree(self.capacity)
        self._max_priority = 1.0

    @property
    def alpha(self) -> float:
        """The priority exponent (fixed: the tree stores priority^alpha)."""
        return self._alpha

    @property
    def eps(self) -> float:
        """The constant added to every priority given to `update_priorities`."""
        return self._eps

    @property
    def beta(self) -> float:
        """The importance-weight exponent used by `sample` when it is given no `beta`."""
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        self._beta = _non_negative("beta", value)

    @property
    def max_priority(self) -> float:
        """The largest priority (with eps) seen so far; new rows enter with it."""
        return self._max_priority

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns and the priority tree."""
        return super().nbytes + self._tree.nbytes

    def _before_write(self, arrays: dict[str, np.ndarray]) -> None:
        reserved = sorted({WEIGHTS, BATCH_INDEXES} & set(arrays))
        if reserved:
            raise ValueError(
                f"batch columns {reserved} are reserved: prioritized samples add them "
                "(importance weights and buffer slots); rename or drop them before add")

    def _after_write(self, start: int, count: int) -> None:
        leaf = self._leaf_weight(self._max_priority)
        first = min(count, self.capacity - start)
        self._tree.fill(start, start + first, leaf)
        self._tree.fill(0, count - first, leaf)

    def _leaf_weight(self, priority: float) -> float:
        return max(priority**self._alpha, _SMALLEST_LEAF)

    def sample(self, num_items: int, beta: float | None = None) -> SampleBatch:
        """`num_items` rows drawn with probability proportional to priority^alpha.

        Uses stratified sampling: the total priority mass is cut into `num_items` equal
        segments and one row is drawn from each; the rows are returned in random order.

        Args:
            num_items: rows to draw (with replacement).
            beta: importance-weight exponent for this call; defaults to `self.beta`.

        Raises:
            ValueError: if the buffer is empty, `num_items` is not positive, or `beta` < 0.
        """
        self._check_sample_size(num_items)
        beta = self._beta if beta is None else _non_negative("beta", beta)
        # One uniform draw per equal segment of the total mass: ascending prefix sums, hence
        # ascending slots, which the tree and the columns read fastest in that order.
        segments = np.arange(num_items) + self._rng.random(num_items)
        indexes = self._tree.find_prefix_sum(
            segments * (self._tree.total / num_items), validate=False)
        # (N P(i))^-beta / (N P_min)^-beta == (p_i / p_min)^-beta with p = priority^alpha.
        leaves = np.take(self._tree.leaves, indexes)
        weights = (leaves / np.float32(self._tree.min)) ** np.float32(-beta)
        self._sampled_count += num_items
        return self._ring.gather(indexes, order=self._rng.permutation(num_items),
                                 extra={WEIGHTS: weights, BATCH_INDEXES: indexes})

    def update_priorities(self, indexes: np.ndarray, priorities: np.ndarray) -> None:
        """Sets the priorities of the rows at `indexes` (buffer slots) to `priorities + eps`.

        For an index given twice, the last priority wins.

        Raises:
            TypeError: if `indexes` is not a 1-D integer array.
            ValueError: on indexes outside the filled slots, mismatched lengths, or priorities
                that are negative or not finite (the buffer is left unchanged).
        """
        indexes = np.asarray(indexes)
        if indexes.ndim != 1 or not (np.issubdtype(indexes.dtype, np.integer) or not indexes.size):
            raise TypeError(
                "update_priorities needs a 1-D integer array of buffer slots (the sample's "
                f"'batch_indexes'), got dtype={indexes.dtype} shape={indexes.shape}")
        priorities = np.asarray(priorities, dtype=np.float64)
        if priorities.shape != indexes.shape:
            raise ValueError(
                f"update_priorities needs one priority per index: got {indexes.shape[0]} "
                f"indexes and priorities of shape {priorities.shape}")
        if not indexes.size:
            return
        if indexes.min() < 0 or indexes.max() >= len(self):
            raise ValueError(
                f"update_priorities indexes must be filled slots in [0, {len(self)}), got "
                f"min={indexes.min()} max={indexes.max()}")
        # min and max propagate NaN, so these two reductions also catch non-finite values.
        lowest, highest = float(priorities.min()) + self._eps, float(priorities.max()) + self._eps
        if not (lowest >= self._eps and highest < math.inf):
            bad = priorities[~np.isfinite(priorities) | (priorities < 0)]
            raise ValueError(
                "priorities must be finite and >= 0 (e.g. |TD error|), got "
                f"{bad[:5].tolist()}{' ...' if bad.size > 5 else ''}")
        if lowest == 0:
            raise ValueError(
                "a priority of 0 with eps=0 would make its row unreachable; "
                "use eps > 0 or pass positive priorities")
        # x -> x^alpha is monotone, so the extremes of the leaves are those of the priorities.
        if self._alpha * math.log(highest) > math.log(np.finfo(LEAF_DTYPE).max):
            raise ValueError(
                f"priority^alpha overflows float32 for max priority {highest:.3g} and "
                f"alpha={self._alpha}; scale the priorities down")
        leaves = (priorities + self._eps) ** self._alpha
        if lowest**self._alpha < _SMALLEST_LEAF:
            np.maximum(leaves, _SMALLEST_LEAF, out=leaves)
        self._tree.set(indexes, leaves, validate=False)
        self._max_priority = max(self._max_priority, highest)

    def stats(self) -> dict[str, Any]:
        """`ReplayBuffer.stats()` plus alpha, beta, eps, the max priority (what new rows get)
        and the sum and minimum of priority^alpha over the stored rows."""
        return {**super().stats(), "alpha": self._alpha, "beta": self._beta, "eps": self._eps,
                "max_priority": self._max_priority,
                "priority_alpha_sum": self._tree.total,
                "priority_alpha_min": self._tree.min if len(self) else None}

    def get_state(self) -> dict[str, Any]:
        """`ReplayBuffer.get_state()` plus alpha, beta, eps, max priority and the per-row
        priority^alpha (`priority_alpha`, float32)."""
        return {**super().get_state(), "alpha": self._alpha, "beta": self._beta,
                "eps": self._eps, "max_priority": self._max_priority,
                "priority_alpha": self._tree.leaves[: len(self)].copy()}

    def _restore_extra(self, state: Mapping[str, Any], ring: RingColumns) -> Callable[[], None]:
        alpha = state_scalar(state, "alpha", float)
        if not math.isclose(alpha, self._alpha, rel_tol=1e-12, abs_tol=0.0):
            raise ValueError(
                f"replay state has alpha={alpha}, this buffer alpha={self._alpha}; the stored "
                "priorities are priority^alpha, so create the buffer with the saved alpha")
        beta = _non_negative("beta", state_scalar(state, "beta", float))
        eps = _non_negative("eps", state_scalar(state, "eps", float))
        max_priority = state_scalar(state, "max_priority", float)
        if not (math.isfinite(max_priority) and max_priority > 0):
            raise ValueError(
                f"replay state max_priority must be finite and > 0, got {max_priority}")
        if "priority_alpha" not in state:
            raise ValueError("replay state lacks 'priority_alpha'; pass get_state()'s dict")
        leaves = np.asarray(state["priority_alpha"])
        if leaves.shape != (ring.size,) or not (leaves.size == 0 or leaves.min() > 0):
            raise ValueError(
                f"replay state 'priority_alpha' must hold {ring.size} positive values, got "
                f"shape {leaves.shape}")
        tree = SumMinTree(ring.capacity)
        tree.set(np.arange(ring.size), leaves)

        def apply() -> None:
            self._beta, self._eps, self._max_priority, self._tree = beta, eps, max_priority, tree

        return apply

    def __repr__(self) -> str:
        return (f"PrioritizedReplayBuffer(size={len(self)}, capacity={self.capacity}, "
                f"alpha={self._alpha}, beta={self._beta})")


def add_with_priorities(buffer: Any, batch: Any, priorities: Any = None) -> None:
    """Adds `batch` to `buffer`; with `priorities`, the new rows get them instead of the
    buffer's current maximum (worker-side prioritization).

    A `MultiAgentReplayBuffer` takes a `MultiAgentBatch` and `{policy id: priorities}`.

    Raises:
        ValueError: priorities for a uniform buffer, or not one per row (nothing is added).
    """
    if not isinstance(buffer, ReplayBuffer):  # one buffer per policy: it splits the batch
        buffer.add(batch, priorities)
        return
    rows = len(next(iter(batch.values()))) if batch else 0
    if priorities is not None:
        if not isinstance(buffer, PrioritizedReplayBuffer):
            raise ValueError("initial priorities need a PrioritizedReplayBuffer (prioritized "
                             "replay); drop the priorities or use a prioritized buffer")
        priorities = np.asarray(priorities, dtype=np.float64).reshape(-1)
        if len(priorities) != rows:
            raise ValueError(f"add needs one initial priority per row: {rows} rows, "
                             f"{len(priorities)} priorities")
    buffer.add(batch if isinstance(batch, SampleBatch) else SampleBatch(dict(batch)))
    if priorities is not None and rows:
        # The ring writes rows in order, so the batch's last `kept` rows sit in the slots just
        # before the one the next row will go to.
        kept = min(rows, buffer.capacity)
        next_slot = buffer._ring.next_index  # noqa: SLF001 - the ring's write position
        slots = (next_slot - kept + np.arange(kept)) % buffer.capacity
        buffer.update_priorities(slots, priorities[rows - kept:])


def _non_negative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {name}={value}")
    return float(value)
