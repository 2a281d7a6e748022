"""Moved: the batch types live in `flowrl.data` (below both `flowrl.policy` and
`flowrl.replay`). This module re-exports them so `flowrl.policy.sample_batch` imports of 0.2
keep working; new code imports from `flowrl.data`."""

from flowrl.data.sample_batch import MultiAgentBatch, SampleBatch, concat_samples

__all__ = ["MultiAgentBatch", "SampleBatch", "concat_samples"]
