"""Replay buffer speed and memory at a million CartPole transitions.

1. CPU time per cycle of prioritized replay (add a 512-row batch, sample 512 rows, update their 512
   priorities) as a ratio to uniform replay (add 512 rows, sample 512 rows), both on 1M-capacity
   buffers filled from the same arrays, measured in the same run (target <= 3x).
2. Bytes held by a prioritized buffer of 1M CartPole transitions (every numpy array, priority
   tree included) as a ratio to the raw bytes of the transitions' columns (target <= 1.2x).

    python benchmarks/replay.py
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from flowrl.data.sample_batch import SampleBatch  # noqa: E402
from flowrl.replay import PrioritizedReplayBuffer, ReplayBuffer  # noqa: E402

CAPACITY = 1_000_000
BATCH = 512
CYCLES = 200
ROUNDS = 7


def cartpole_transitions(rows: int, seed: int = 0) -> SampleBatch:
    """`rows` transitions shaped like CartPole's: 4 floats of observation, a discrete action."""
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((rows, 4), dtype=np.float32)
    return SampleBatch({
        "obs": obs,
        "new_obs": obs + rng.normal(0, 0.05, (rows, 4)).astype(np.float32),
        "actions": rng.integers(0, 2, rows, dtype=np.int64),
        "rewards": np.ones(rows, np.float32),
        "terminateds": rng.random(rows) < 0.02,
        "truncateds": np.zeros(rows, bool),
    })


class Cycles:
    """Add/sample (and, prioritized, update) cycles on one buffer, fed from shared arrays."""

    def __init__(self, buffer: ReplayBuffer, transitions: SampleBatch) -> None:
        self.buffer = buffer
        self.buffer.add(transitions)  # full from the start, as in a long run
        self.incoming = [transitions[start:start + BATCH]
                         for start in range(0, CYCLES * BATCH, BATCH)]
        rng = np.random.default_rng(1)
        self.priorities = [np.abs(rng.standard_normal(BATCH)) for _ in range(CYCLES)]

    def seconds_per_cycle(self) -> float:
        prioritized = isinstance(self.buffer, PrioritizedReplayBuffer)
        start = time.thread_time()
        for batch, priorities in zip(self.incoming, self.priorities):
            self.buffer.add(batch)
            sample = self.buffer.sample(BATCH)
            if prioritized:
                self.buffer.update_priorities(sample["batch_indexes"], priorities)
        return (time.thread_time() - start) / CYCLES


def main() -> None:
    transitions = cartpole_transitions(CAPACITY)
    raw_bytes = sum(column.nbytes for column in transitions.values())
    contenders = {"uniform: add + sample": Cycles(ReplayBuffer(CAPACITY, seed=0), transitions),
                  "prioritized: add + sample + update_priorities":
                      Cycles(PrioritizedReplayBuffer(CAPACITY, seed=0), transitions)}
    # CPU time of this thread, so time spent descheduled on a shared machine does not count;
    # interleaved rounds, so neighbours polluting the caches slow both alike. Medians reported,
    # and in brackets the ratio of the best rounds (as timeit reports), the least disturbed.
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(ROUNDS):
        for name, contender in contenders.items():
            times[name].append(contender.seconds_per_cycle())
    baseline = statistics.median(times["uniform: add + sample"])
    best_baseline = min(times["uniform: add + sample"])
    print(f"Replay cycles of {BATCH} rows on full {CAPACITY:,}-row buffers of CartPole "
          f"transitions (thread CPU time, median of {ROUNDS} interleaved rounds of {CYCLES} "
          "cycles):")
    for name, values in times.items():
        seconds = statistics.median(values)
        target = "" if seconds == baseline else "  (target <= 3x)"
        print(f"  {name:48s} {seconds * 1e6:8.1f} us/cycle  {seconds / baseline:.2f}x "
              f"(best {min(values) / best_baseline:.2f}x){target}")
    print(f"Memory of {CAPACITY:,} CartPole transitions ({raw_bytes / CAPACITY:.0f} raw bytes "
          "per row):")
    for name, contender in contenders.items():
        held = contender.buffer.nbytes
        print(f"  {name.split(':')[0]:12s} {held / 2**20:8.1f} MiB  {held / raw_bytes:.3f}x raw "
              "column bytes (target <= 1.2x)")


if __name__ == "__main__":
    main()
