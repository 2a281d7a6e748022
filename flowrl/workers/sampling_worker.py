"""`SamplingWorker`: what every rollout worker is, whatever env it steps.

A rollout worker is a shard of the dataflow engine (a `ParallelIteratorWorker` whose stream
is an endless sequence of `sample()` results, a Ray actor or an in-process object), the
settings of its envs and sampling, and a few calls the driver makes on every worker. The
single-agent `RolloutWorker` (gymnasium vector envs) and `MultiAgentRolloutWorker` (PettingZoo
parallel envs) are two ways of stepping envs built on this one base; neither restates the
other.
"""

from __future__ import annotations

import contextlib
import contextvars
from abc import abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, Literal

from flowrl.iter import ParallelIteratorWorker

BatchMode = Literal["truncate_episodes", "complete_episodes"]

_current_worker: contextvars.ContextVar[SamplingWorker | None] = contextvars.ContextVar(
    "flowrl_current_worker", default=None
)


def get_current_worker() -> SamplingWorker:
    """Returns the rollout worker whose shard is running the calling operator.

    Shard-side operators (for example A3C's gradient computation, which runs next to the
    samples it consumes) use this to reach the worker's policy, on Ray and in local mode alike.

    Raises:
        RuntimeError: when called outside a rollout worker's shard.
    """
    worker = _current_worker.get()
    if worker is None:
        raise RuntimeError(
            "get_current_worker() was called outside a rollout worker's shard. Use it only "
            "inside operators applied to ParallelRollouts(workers, mode='raw') before a gather."
        )
    return worker


class SamplingWorker(ParallelIteratorWorker):
    """A rollout worker: env settings, the shard protocol, and the calls every worker answers.

    Subclasses step their kind of env: they implement `sample()`, the policy calls
    (`get_policy`, `get_weights`, `set_weights`, `policies_to_train`), `get_episode_stats()`,
    `evaluate()` and `stop()`.

    Args:
        env_creator: `creator(env_config) -> env`, resolved on the driver.
        env_config: passed to `env_creator`.
        num_envs: env copies stepped together.
        rollout_fragment_length: steps per env per `sample()`.
        batch_mode: "truncate_episodes" or "complete_episodes" (see `RolloutWorker`).
        seed: run seed; envs and policies derive their own from it.
        worker_index: 0 for the driver's local worker, 1..n for remote ones.
    """

    def __init__(self, *, env_creator: Callable[[dict], Any], env_config: dict | None,
                 num_envs: int, rollout_fragment_length: int, batch_mode: BatchMode,
                 seed: int | None, worker_index: int) -> None:
        self.env_creator = env_creator
        self.env_config = dict(env_config or {})
        self.num_envs = num_envs
        self.rollout_fragment_length = rollout_fragment_length
        self.batch_mode = batch_mode
        self.seed = seed
        self.worker_index = worker_index
        super().__init__(self._sample_forever, repeat=False)

    @abstractmethod
    def sample(self) -> Any:
        """One sample: `rollout_fragment_length` steps of every env, postprocessed."""

    # --- shard protocol -------------------------------------------------------------------

    def _sample_forever(self) -> Iterator[Any]:
        while True:
            yield self.sample()

    def par_iter_next(self, *args: Any, **kwargs: Any) -> Any:
        with self._as_current():
            return super().par_iter_next(*args, **kwargs)

    def par_iter_next_batch(self, *args: Any, **kwargs: Any) -> Any:
        with self._as_current():
            return super().par_iter_next_batch(*args, **kwargs)

    @contextlib.contextmanager
    def _as_current(self) -> Iterator[None]:
        token = _current_worker.set(self)
        try:
            yield
        finally:
            _current_worker.reset(token)

    # --- calls the driver makes on every worker --------------------------------------------

    def apply(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Calls `fn(self, *args)` where the worker lives (how `foreach_worker` reaches it)."""
        return fn(self, *args)

    def ping(self) -> str:
        """Health check used when deciding whether a worker must be replaced."""
        return "ok"


def step_seed(seed: int | None, worker_index: int, env_index: int) -> int | None:
    """Derives one env's seed from the run seed, so every env of every worker differs."""
    if seed is None:
        return None
    return int(seed) * 10_007 + worker_index * 1_009 + env_index
