"""`ReplayActor`: one shard of a replay memory that several flows write to and read from.

Ape-X spreads its replay memory over `num_replay_buffer_shards` of these. Each holds one
`ReplayBuffer` (or `PrioritizedReplayBuffer`) and runs as a Ray actor with `num_cpus=0` (a plain
object in local mode); create them with `create_replay_actors`. Rollout batches go in with
`add`, sampled batches come out with `replay`, and new priorities go back with
`update_priorities`. A `ReplayActor` is also a shard a `ParallelIterator` can read
(`flowrl.iter.from_actors(actors)`): its items are the results of `replay()`, which is None
while the shard holds fewer than `learning_starts` rows (the `Replay` operator drops those,
so no user function ever sees one).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from flowrl.iter import ParallelIteratorWorker, executor
from flowrl.policy import SampleBatch
from flowrl.replay import PrioritizedReplayBuffer, ReplayBuffer


class ReplayActor(ParallelIteratorWorker):
    """Holds one replay-buffer shard and serves `add`, `replay` and `update_priorities`.

    Args:
        capacity: rows this shard keeps.
        num_items: rows per `replay()` sample (the learner's train batch size).
        learning_starts: rows this shard must hold before `replay()` returns samples.
        prioritized: use a `PrioritizedReplayBuffer` (else uniform sampling).
        alpha, beta, eps: the prioritized buffer's exponents and priority floor.
        seed: seeds the buffer's sampling.
        idle_wait_s: how long `replay()` sleeps before answering None while the shard is not
            ready, so a reader polling it does not spin a core (0 in local mode).

    Examples:
        >>> import numpy as np
        >>> actor = ReplayActor(capacity=10, num_items=2, learning_starts=3, seed=0)
        >>> actor.add(SampleBatch({"obs": np.zeros((2, 1)), "rewards": np.ones(2)}))
        2
        >>> actor.replay() is None  # fewer than learning_starts rows
        True
        >>> actor.add(SampleBatch({"obs": np.zeros((2, 1)), "rewards": np.ones(2)}))
        4
        >>> sorted(actor.replay().columns)
        ['batch_indexes', 'obs', 'rewards', 'weights']
    """

    def __init__(self, capacity: int, *, num_items: int, learning_starts: int = 0,
                 prioritized: bool = True, alpha: float = 0.6, beta: float = 0.4,
                 eps: float = 1e-6, seed: int | None = None, idle_wait_s: float = 0.0) -> None:
        if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 1:
            raise ValueError(f"ReplayActor needs num_items >= 1 rows per sample, got "
                             f"{num_items=!r}")
        if learning_starts < 0:
            raise ValueError(f"ReplayActor needs learning_starts >= 0, got {learning_starts=}")
        if prioritized:
            self.buffer: ReplayBuffer = PrioritizedReplayBuffer(
                capacity, alpha=alpha, beta=beta, eps=eps, seed=seed)
        else:
            self.buffer = ReplayBuffer(capacity, seed=seed)
        self.num_items = num_items
        self.learning_starts = learning_starts
        self.idle_wait_s = idle_wait_s
        self.num_added = 0
        ParallelIteratorWorker.__init__(self, self._replay_stream, repeat=False)

    def _replay_stream(self) -> Iterator[SampleBatch | None]:
        while True:
            yield self.replay()

    def add(self, batch: Mapping[str, np.ndarray], priorities: np.ndarray | None = None) -> int:
        """Stores the rows of `batch`, with initial `priorities` if given; returns the size.

        Without `priorities`, new rows of a prioritized shard enter with the largest priority
        seen so far. With them (worker-side prioritization), each row gets its own.

        Raises:
            ValueError: priorities given for a uniform shard, or not one per row.
        """
        add_with_priorities(self.buffer, batch, priorities)
        self.num_added += len(next(iter(batch.values())))
        return len(self.buffer)

    def ready(self) -> bool:
        """True once the shard holds at least `learning_starts` rows (and at least one)."""
        return len(self.buffer) >= max(self.learning_starts, 1)

    def replay(self) -> SampleBatch | None:
        """`num_items` sampled rows (with `weights`, `batch_indexes` when prioritized), or
        None while the shard holds fewer than `learning_starts` rows."""
        if not self.ready():
            if self.idle_wait_s > 0:
                time.sleep(self.idle_wait_s)
            return None
        return self.buffer.sample(self.num_items)

    def update_priorities(self, indexes: np.ndarray, priorities: np.ndarray) -> None:
        """Sets new priorities (e.g. |TD error|) for the rows at `indexes` of this shard."""
        if not isinstance(self.buffer, PrioritizedReplayBuffer):
            raise ValueError("update_priorities needs a prioritized shard (prioritized=True)")
        self.buffer.update_priorities(indexes, priorities)

    def stats(self) -> dict[str, Any]:
        """The buffer's statistics plus `learning_starts`."""
        return {**self.buffer.stats(), "learning_starts": self.learning_starts}

    def get_state(self) -> dict[str, Any]:
        """The buffer's state (numpy arrays and plain values; see `ReplayBuffer.get_state`)."""
        return self.buffer.get_state()

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores a state from `get_state()`."""
        self.buffer.set_state(state)

    def ping(self) -> str:
        """Answers "ok"; a dead actor's ping raises instead."""
        return "ok"

    def __repr__(self) -> str:
        return f"ReplayActor({self.buffer!r}, learning_starts={self.learning_starts})"


def add_with_priorities(buffer: ReplayBuffer, batch: Mapping[str, np.ndarray],
                        priorities: np.ndarray | None = None) -> None:
    """Adds `batch` to `buffer`; with `priorities`, the new rows get them instead of the
    buffer's current maximum (worker-side prioritization).

    Raises:
        ValueError: priorities for a uniform buffer, or not one per row (nothing is added).
    """
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


def create_replay_actors(num_shards: int, *, capacity: int, **options: Any) -> list[Any]:
    """`num_shards` replay actors sharing `capacity` rows (and `learning_starts`) equally.

    Each runs as a Ray actor with `num_cpus=0`, or as a plain object in local mode.
    `options` are further `ReplayActor` arguments (`num_items`, `prioritized`, `alpha`, ...).

    Raises:
        ValueError: `num_shards` < 1, or fewer rows than shards.
    """
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"need at least one replay shard, got num_shards={num_shards!r}")
    if capacity < num_shards:
        raise ValueError(f"capacity={capacity} is less than one row per shard for "
                         f"num_shards={num_shards}; raise buffer_size")
    learning_starts = int(options.pop("learning_starts", 0))
    seed = options.pop("seed", None)
    if "idle_wait_s" not in options:
        options["idle_wait_s"] = 0.0 if executor.is_local_mode() else 0.005
    return [
        executor.create_actor(
            ReplayActor, capacity // num_shards, num_cpus=0,
            learning_starts=-(-learning_starts // num_shards),
            seed=None if seed is None else seed + 1000 * index, **options)
        for index in range(num_shards)
    ]
