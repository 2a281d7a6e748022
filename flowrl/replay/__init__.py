"""Replay buffers: what an off-policy algorithm remembers.

`ReplayBuffer` samples uniformly; `PrioritizedReplayBuffer` samples in proportion to
priority^alpha and returns importance weights. Both store `SampleBatch` columns in preallocated
numpy rings and know nothing about Ray or deep-learning frameworks. See docs/replay.md.
"""

from flowrl.replay.buffer import ReplayBuffer
from flowrl.replay.prioritized import BATCH_INDEXES, WEIGHTS, PrioritizedReplayBuffer
from flowrl.replay.segment_tree import SumMinTree

__all__ = ["BATCH_INDEXES", "WEIGHTS", "PrioritizedReplayBuffer", "ReplayBuffer", "SumMinTree"]
