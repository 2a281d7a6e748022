"""`SumMinTree`: sums and minima over an array of non-negative weights, for prioritized replay.

Prioritized replay needs three things from its priorities, all fast for batches of hundreds of
items: draw indexes with probability proportional to their weight (a prefix-sum search), the
smallest positive weight (to normalize importance weights), and batched weight updates.

The tree here is a B-ary tree over one flat leaf array. Each internal level holds, per node, the
sum of its B children and the minimum of its positive children; levels are built until one holds
at most `top_size` nodes. Every operation works on whole index arrays at once, with a Python loop
only over the (few) levels:

- `set(indexes, values)` and `fill(start, stop, value)` write leaves; the touched ancestors are
  recomputed level by level, in one batch for all writes since the last query (`total`, `min`,
  `find_prefix_sum`), so a replay cycle of add, sample and update pays for one pass, not two.
- `find_prefix_sum(values)` runs `np.searchsorted` on the cumulative sum of the top level, then
  descends one level at a time for all queries together, picking in each node the child whose
  cumulative-sum interval holds the query.

A zero leaf is empty: it is never found by `find_prefix_sum` and is left out of `min`. Leaves are
float32 (priorities need no more precision, and the leaves are the only per-item cost), so a
positive value below float32's smallest subnormal rounds to zero and empties its leaf; internal
levels are float64 and are recomputed from their children (no running deltas), so sums stay
accurate to about 1e-15 relative however many updates they have seen.

Examples:
    >>> import numpy as np
    >>> tree = SumMinTree(5)
    >>> tree.set(np.arange(5), np.array([1.0, 2.0, 0.0, 3.0, 4.0]))
    >>> tree.total, tree.min
    (10.0, 1.0)
    >>> tree.find_prefix_sum(np.array([0.0, 0.99, 1.0, 2.99, 3.0, 9.99])).tolist()
    [0, 0, 1, 1, 3, 4]
"""

from __future__ import annotations

import numpy as np

LEAF_DTYPE = np.float32
NODE_DTYPE = np.float64
# Writes whose ancestors may wait for the next query before they are recomputed.
_MAX_STALE_WRITES = 64


class SumMinTree:
    """A B-ary tree keeping sums and positive minima over `capacity` non-negative leaf weights.

    Args:
        capacity: the number of leaves (items); all start empty (weight 0).
        branching: children per internal node; 16 balances the cost of gathering children
            against the number of levels for batches of a few hundred queries.
        top_size: stop adding levels once one has at most this many nodes; prefix-sum queries
            start with a binary search over that level's cumulative sums.

    Raises:
        TypeError: if `capacity`, `branching` or `top_size` is not an int.
        ValueError: if one is out of range, or `branching` is not a power of two.
    """

    def __init__(self, capacity: int, branching: int = 16, top_size: int = 4096) -> None:
        for name, value, least in (("capacity", capacity, 1), ("branching", branching, 2),
                                   ("top_size", top_size, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"SumMinTree {name} must be an int, got {value!r}")
            if value < least:
                raise ValueError(f"SumMinTree {name} must be >= {least}, got {name}={value}")
        if branching & (branching - 1):
            raise ValueError(f"SumMinTree branching must be a power of two, got {branching=}")
        self._capacity = int(capacity)
        self._branching = int(branching)
        # Level 0 is the leaves; every level is padded to a multiple of `branching` so that
        # level.reshape(-1, branching)[parent] is the children of `parent`.
        self._sums: list[np.ndarray] = [np.zeros(self._padded(self._capacity), LEAF_DTYPE)]
        self._mins: list[np.ndarray] = [self._sums[0]]  # the leaves serve both stacks
        size = self._capacity
        while size > top_size:
            size = -(-size // self._branching)
            self._sums.append(np.zeros(self._padded(size), NODE_DTYPE))
            self._mins.append(np.full(self._padded(size), np.inf, NODE_DTYPE))
        self._top_nodes = size
        # Parents of leaves written since the internal levels were last brought up to date:
        # writes only touch leaves, and the next query recomputes all their ancestors in one pass
        # (an add, a priority update and a sample then cost one pass over the levels, not two).
        self._stale_parents: list[np.ndarray] = []
        self._ones = np.ones(self._branching, NODE_DTYPE)
        self._top_cumulative = np.zeros(self._top_nodes + 1, NODE_DTYPE)
        # (this @ children.T)[j, q] = children[q, 0] + ... + children[q, j].
        self._through = np.tril(np.ones((self._branching,) * 2, NODE_DTYPE))

    def _padded(self, size: int) -> int:
        return -(-size // self._branching) * self._branching

    @property
    def capacity(self) -> int:
        """The number of leaves."""
        return self._capacity

    @property
    def leaves(self) -> np.ndarray:
        """A read-only view of the leaf weights (float32, length `capacity`)."""
        view = self._sums[0][: self._capacity]
        view.flags.writeable = False
        return view

    @property
    def nbytes(self) -> int:
        """Bytes held by all of the tree's arrays."""
        return sum(level.nbytes for level in self._sums) + sum(
            level.nbytes for level in self._mins[1:])

    @property
    def total(self) -> float:
        """The sum of all leaf weights."""
        self._refresh()
        return float(self._sums[-1][: self._top_nodes].sum(dtype=NODE_DTYPE))

    @property
    def min(self) -> float:
        """The smallest positive leaf weight, or `inf` when every leaf is empty."""
        self._refresh()
        top = self._mins[-1][: self._top_nodes]
        if len(self._mins) == 1:
            top = top[top > 0]
            return float(top.min()) if top.size else float("inf")
        return float(top.min())

    def get(self, indexes: np.ndarray) -> np.ndarray:
        """The leaf weights at `indexes`, as float64."""
        return self._sums[0][self._check_indexes(indexes)].astype(NODE_DTYPE)

    def set(self, indexes: np.ndarray, values: np.ndarray, *, validate: bool = True) -> None:
        """Sets the leaves at `indexes` to `values`; for a repeated index the last value wins.

        Args:
            indexes: 1-D integer leaf indexes.
            values: one weight per index.
            validate: check the arguments; a caller that has already checked them (as
                `PrioritizedReplayBuffer.update_priorities` does) may skip the cost.

        Raises:
            ValueError: on indexes out of range, mismatched lengths, or values that are negative,
                not finite, or too large for float32.
        """
        if validate:
            indexes = self._check_indexes(indexes)
            values = self._check_values(values, len(indexes))
        if not len(indexes):
            return
        # A stable sort keeps equal indexes in call order, so the last of each run wins; sorted
        # indexes also visit the tree's memory in order.
        order = np.argsort(indexes, kind="stable")
        nodes = indexes[order]
        last_of_run = np.ones(len(nodes), dtype=bool)
        np.not_equal(nodes[1:], nodes[:-1], out=last_of_run[:-1])
        self._sums[0][nodes[last_of_run]] = values[order[last_of_run]]
        self._mark_stale(nodes // self._branching)

    def fill(self, start: int, stop: int, value: float) -> None:
        """Sets the contiguous leaves `start:stop` to `value` (a fast path for new items)."""
        if not 0 <= start <= stop <= self._capacity:
            raise ValueError(
                f"fill needs 0 <= start <= stop <= capacity={self._capacity}, got "
                f"{start=}, {stop=}")
        if not 0 <= value <= np.finfo(LEAF_DTYPE).max:  # also False for NaN
            raise ValueError(
                f"tree values must be finite, >= 0 and at most float32 max, got {value=}")
        if start == stop:
            return
        self._sums[0][start:stop] = value
        self._mark_stale(np.arange(start // self._branching, (stop - 1) // self._branching + 1))

    def _mark_stale(self, parents: np.ndarray) -> None:
        if len(self._sums) == 1:  # no internal levels
            return
        self._stale_parents.append(parents)
        if len(self._stale_parents) >= _MAX_STALE_WRITES:  # bound the memory of many small writes
            self._refresh()

    def _refresh(self) -> None:
        """Recomputes the ancestors of every leaf written since the last refresh."""
        if not self._stale_parents:
            return
        nodes = np.concatenate(self._stale_parents)
        self._stale_parents = []
        for level in range(1, len(self._sums)):
            if level > 1:
                nodes = nodes // self._branching  # repeated nodes are recomputed alike
            self._recompute(level, nodes)

    def _recompute(self, level: int, nodes: np.ndarray) -> None:
        children = np.take(self._sums[level - 1].reshape(-1, self._branching), nodes, axis=0)
        # Short-axis reductions are slow in numpy; a matrix product sums rows much faster.
        self._sums[level][nodes] = children.astype(NODE_DTYPE, copy=False) @ self._ones
        if level == 1:  # leaves: zero means empty, so it must not count as the minimum
            children = np.where(children > 0, children, np.inf)
        else:
            children = np.take(self._mins[level - 1].reshape(-1, self._branching), nodes, axis=0)
        self._mins[level][nodes] = _row_minimum(children)

    def find_prefix_sum(self, values: np.ndarray, *, validate: bool = True) -> np.ndarray:
        """For each `v` in `values`, the leaf `i` with `sum(leaves[:i]) <= v < sum(leaves[:i+1])`.

        Values at or above `total` (for example by rounding) map to the last non-empty leaf, so
        an empty leaf is never returned.

        Args:
            values: 1-D prefix sums in `[0, total)`.
            validate: check that they are finite and non-negative; a caller that draws them
                itself may skip the cost.

        Raises:
            ValueError: if the tree is empty or a value is negative or not finite.
        """
        values = np.array(values, dtype=NODE_DTYPE)  # a copy: it is reduced in place below
        if values.ndim != 1:
            raise ValueError(f"find_prefix_sum needs a 1-D array, got shape {values.shape}")
        if validate and values.size and not (values.min() >= 0 and values.max() < np.inf):
            raise ValueError("find_prefix_sum needs finite, non-negative prefix sums")
        self._refresh()
        # _top_cumulative[0] = 0 and [i + 1] = the sum of the first i + 1 top-level nodes.
        top = self._top_cumulative
        np.cumsum(self._sums[-1][: self._top_nodes], dtype=NODE_DTYPE, out=top[1:])
        if top[-1] <= 0:
            raise ValueError("find_prefix_sum on an empty tree: set some positive leaves first")
        # The largest float below the total keeps every query inside a non-empty node.
        np.minimum(values, np.nextafter(top[-1], 0.0), out=values)
        nodes = np.searchsorted(top[1:], values, side="right")
        values -= top[nodes]
        queries = np.arange(len(values))
        for level in range(len(self._sums) - 2, -1, -1):
            children = np.take(self._sums[level].reshape(-1, self._branching), nodes, axis=0)
            children = children.astype(NODE_DTYPE, copy=False)
            # through[j, q] = the sum of query q's node's children 0..j, as one matrix product
            # laid out child-major, so the comparisons and counts below run along rows.
            through = self._through @ children.T
            # Rounding between a node's stored sum and its children's running sum.
            np.minimum(values, np.nextafter(through[-1], 0.0), out=values)
            choice = (through <= values).sum(axis=0)  # the first child whose running sum passes
            values -= through[choice, queries] - children[queries, choice]
            nodes = nodes * self._branching + choice
        return nodes

    def _check_indexes(self, indexes: np.ndarray) -> np.ndarray:
        indexes = np.asarray(indexes)
        if indexes.ndim != 1 or not (np.issubdtype(indexes.dtype, np.integer) or indexes.size == 0):
            raise TypeError(
                f"tree indexes must be a 1-D integer array, got dtype={indexes.dtype} "
                f"shape={indexes.shape}")
        indexes = indexes.astype(np.int64, copy=False)
        if indexes.size and (indexes.min() < 0 or indexes.max() >= self._capacity):
            raise ValueError(
                f"tree indexes must lie in [0, {self._capacity}), got min={indexes.min()} "
                f"max={indexes.max()}")
        return indexes

    @staticmethod
    def _check_values(values: np.ndarray, count: int) -> np.ndarray:
        values = np.asarray(values, dtype=NODE_DTYPE)
        if values.shape != (count,):
            raise ValueError(
                f"tree values must be a 1-D array with one value per index ({count}), "
                f"got shape {values.shape}")
        if values.size and not (np.isfinite(values).all() and values.min() >= 0
                                and values.max() <= np.finfo(LEAF_DTYPE).max):
            raise ValueError(
                "tree values must be finite, >= 0 and at most float32 max "
                f"({np.finfo(LEAF_DTYPE).max:.3g}); got min={values.min()}, max={values.max()}")
        return values


def _row_minimum(rows: np.ndarray) -> np.ndarray:
    """The minimum of each row of a (k, B) array. numpy reduces slowly along a short contiguous
    axis, so the rows are transposed into columns first (a small copy) and reduced along axis 0."""
    return np.ascontiguousarray(rows.T).min(axis=0)
