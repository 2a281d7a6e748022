"""Replay buffers: what an off-policy algorithm remembers.

`ReplayBuffer` samples uniformly; `PrioritizedReplayBuffer` samples in proportion to
priority^alpha and returns importance weights. Both store `SampleBatch` columns in preallocated
numpy rings and know nothing about Ray or deep-learning frameworks. `MultiAgentReplayBuffer`
holds one of them per policy id (multi-agent plans). `SequenceBuilder` cuts rollout steps into
the fixed-length sequences R2D2 stores as rows. See docs/replay.md.
"""

from flowrl.replay.buffer import ReplayBuffer
from flowrl.replay.multi_agent import MultiAgentReplayBuffer
from flowrl.replay.prioritized import (
    BATCH_INDEXES,
    WEIGHTS,
    PrioritizedReplayBuffer,
    add_with_priorities,
)
from flowrl.replay.segment_tree import SumMinTree
from flowrl.replay.sequences import SequenceBuilder

__all__ = ["BATCH_INDEXES", "WEIGHTS", "MultiAgentReplayBuffer", "PrioritizedReplayBuffer",
           "ReplayBuffer", "SequenceBuilder", "SumMinTree", "add_with_priorities"]
