"""`ReplayActor`: one shard of a replay memory that several flows write to and read from.

Ape-X spreads its replay memory over `num_replay_buffer_shards` of these. Each holds one
`ReplayBuffer` (or `PrioritizedReplayBuffer`) and runs as a Ray actor with `num_cpus=0` (a plain
object in local mode); create them with `create_replay_actors`. Rollout batches go in with
`add`, sampled batches come out with `replay`, and new priorities go back with
`update_priorities`. A `ReplayActor` is also a shard a `ParallelIterator` can read
(`flowrl.iter.from_actors(actors)`): its items are the results of `replay()`, which is None
while the shard holds fewer than `learning_starts` rows (the `Replay` operator drops those,
so no user function ever sees one). With `policies` (multi-agent plans) a shard holds one buffer
per policy id (`MultiAgentReplayBuffer`): `add` takes `MultiAgentBatch`es and `replay` returns
them, with rows of each policy whose buffer holds its own `learning_starts`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from flowrl.data import MultiAgentBatch, SampleBatch
from flowrl.iter import ParallelIteratorWorker, executor
from flowrl.replay import (
    MultiAgentReplayBuffer,
    PrioritizedReplayBuffer,
    ReplayBuffer,
    add_with_priorities,
)


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
        policies: policy id -> overrides of `capacity`, `num_items`, `learning_starts`,
            `prioritized`, `alpha`, `beta`, `eps` for that policy: the shard then holds one
            buffer per policy (a `MultiAgentReplayBuffer`); None holds one buffer.

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
        >>> shard = ReplayActor(10, num_items=2, policies={"p1": {}, "p2": {"num_items": 3}})
        >>> shard.add(MultiAgentBatch({"p1": SampleBatch({"obs": np.zeros(2)}),
        ...                            "p2": SampleBatch({"obs": np.ones(2)})}, env_steps=2))
        4
        >>> shard.replay()
        MultiAgentBatch(env_steps=5, {'p1': 2 rows, 'p2': 3 rows})
    """

    def __init__(self, capacity: int, *, num_items: int, learning_starts: int = 0,
                 prioritized: bool = True, alpha: float = 0.6, beta: float = 0.4,
                 eps: float = 1e-6, seed: int | None = None, idle_wait_s: float = 0.0,
                 policies: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        defaults = {"capacity": capacity, "num_items": num_items,
                    "learning_starts": learning_starts, "prioritized": prioritized,
                    "alpha": alpha, "beta": beta, "eps": eps}
        if policies is None:
            self.num_items: int | dict[str, int] = _check_num_items(num_items)
            self.learning_starts: int | dict[str, int] = _check_learning_starts(learning_starts)
            self.buffer: ReplayBuffer | MultiAgentReplayBuffer = _make_buffer(defaults, seed)
        else:
            settings = {}
            for policy_id, overrides in policies.items():
                unknown = sorted(set(overrides) - set(defaults))
                if unknown:
                    raise ValueError(f"ReplayActor policies[{policy_id!r}] sets unknown options "
                                     f"{unknown}; valid: {sorted(defaults)}")
                settings[policy_id] = {**defaults, **overrides}
            self.num_items = {policy_id: _check_num_items(options["num_items"])
                              for policy_id, options in settings.items()}
            self.learning_starts = {
                policy_id: _check_learning_starts(options["learning_starts"])
                for policy_id, options in settings.items()}
            self.buffer = MultiAgentReplayBuffer({
                policy_id: _make_buffer(options, None if seed is None else seed + index)
                for index, (policy_id, options) in enumerate(settings.items())})
        self.idle_wait_s = idle_wait_s
        self.num_added = 0
        ParallelIteratorWorker.__init__(self, self._replay_stream, repeat=False)

    def _replay_stream(self) -> Iterator[SampleBatch | None]:
        while True:
            yield self.replay()

    def add(self, batch: Mapping[str, np.ndarray] | MultiAgentBatch,
            priorities: np.ndarray | Mapping[str, np.ndarray] | None = None) -> int:
        """Stores the rows of `batch`, with initial `priorities` if given; returns the size.

        Without `priorities`, new rows of a prioritized shard enter with the largest priority
        seen so far. With them (worker-side prioritization), each row gets its own. A shard
        of several policies takes a `MultiAgentBatch` and `{policy id: priorities}`.

        Raises:
            TypeError: a `MultiAgentBatch` of several policies for a one-buffer shard.
            ValueError: priorities given for a uniform shard, or not one per row.
        """
        if isinstance(batch, MultiAgentBatch) and not isinstance(
                self.buffer, MultiAgentReplayBuffer):
            raise TypeError(
                f"This replay shard holds one buffer, but got a MultiAgentBatch of policies "
                f"{sorted(batch.policy_batches)}; create the shards with "
                "create_replay_actors(..., policies={policy id: {...}}) for one buffer each")
        before = len(self.buffer)
        add_with_priorities(self.buffer, batch, priorities)
        self.num_added += (len(self.buffer) - before if isinstance(
            self.buffer, MultiAgentReplayBuffer) else len(next(iter(batch.values()))))
        return len(self.buffer)

    def _ready_policies(self) -> dict[str, int]:
        buffers = self.buffer.buffers  # type: ignore[union-attr]
        return {policy_id: count for policy_id, count in self.num_items.items()  # type: ignore[union-attr]
                if len(buffers[policy_id]) >= max(self.learning_starts[policy_id], 1)}

    def ready(self) -> bool:
        """True once the shard holds at least `learning_starts` rows (and at least one); with
        several policies, once one policy's buffer holds its `learning_starts`."""
        if isinstance(self.buffer, MultiAgentReplayBuffer):
            return bool(self._ready_policies())
        return len(self.buffer) >= max(self.learning_starts, 1)

    def replay(self) -> SampleBatch | MultiAgentBatch | None:
        """`num_items` sampled rows (with `weights`, `batch_indexes` when prioritized), or
        None while the shard holds fewer than `learning_starts` rows. With several policies, a
        `MultiAgentBatch` with each ready policy's `num_items` rows."""
        if not self.ready():
            if self.idle_wait_s > 0:
                time.sleep(self.idle_wait_s)
            return None
        if isinstance(self.buffer, MultiAgentReplayBuffer):
            return self.buffer.sample(self._ready_policies())
        return self.buffer.sample(self.num_items)

    def update_priorities(self, indexes: np.ndarray | Mapping[str, np.ndarray],
                          priorities: np.ndarray | Mapping[str, np.ndarray]) -> None:
        """Sets new priorities (e.g. |TD error|) for the rows at `indexes` of this shard (per
        policy, `{policy id: slots}` and `{policy id: priorities}`, for several policies)."""
        if not isinstance(self.buffer, PrioritizedReplayBuffer | MultiAgentReplayBuffer):
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


def create_replay_actors(num_shards: int, *, capacity: int,
                         policies: Mapping[str, Mapping[str, Any]] | None = None,
                         **options: Any) -> list[Any]:
    """`num_shards` replay actors sharing `capacity` rows (and `learning_starts`) equally.

    Each runs as a Ray actor with `num_cpus=0`, or as a plain object in local mode.
    `options` are further `ReplayActor` arguments (`num_items`, `prioritized`, `alpha`, ...).
    `policies` (policy id -> that policy's overrides, see `ReplayActor`) gives each shard one
    buffer per policy; each policy's `capacity` and `learning_starts` are split likewise.

    Raises:
        ValueError: `num_shards` < 1, or fewer rows than shards.
    """
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"need at least one replay shard, got num_shards={num_shards!r}")
    for where, rows in [("", capacity)] + [
            (f" of policy {pid!r}", opts["capacity"]) for pid, opts in (policies or {}).items()
            if "capacity" in opts]:
        if rows < num_shards:
            raise ValueError(f"capacity={rows}{where} is less than one row per shard for "
                             f"num_shards={num_shards}; raise buffer_size")
    if policies is not None:
        options["policies"] = {pid: _per_shard(opts, num_shards)
                               for pid, opts in policies.items()}
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


def _per_shard(options: Mapping[str, Any], num_shards: int) -> dict[str, Any]:
    """One shard's part of a policy's replay options: its capacity and learning_starts split
    equally (rounding learning_starts up)."""
    shard = dict(options)
    if "capacity" in shard:
        shard["capacity"] = shard["capacity"] // num_shards
    if "learning_starts" in shard:
        shard["learning_starts"] = -(-int(shard["learning_starts"]) // num_shards)
    return shard


def _make_buffer(options: Mapping[str, Any], seed: int | None) -> ReplayBuffer:
    if options["prioritized"]:
        return PrioritizedReplayBuffer(options["capacity"], alpha=options["alpha"],
                                       beta=options["beta"], eps=options["eps"], seed=seed)
    return ReplayBuffer(options["capacity"], seed=seed)


def _check_num_items(num_items: Any) -> int:
    if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 1:
        raise ValueError(f"ReplayActor needs num_items >= 1 rows per sample, got "
                         f"{num_items=!r}")
    return num_items


def _check_learning_starts(learning_starts: Any) -> int:
    if learning_starts < 0:
        raise ValueError(f"ReplayActor needs learning_starts >= 0, got {learning_starts=}")
    return learning_starts
