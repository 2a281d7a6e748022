"""What flows through a plan: columnar experience batches and the policy ids that key them.

The lowest RL layer: `flowrl.replay`, `flowrl.policy`, the workers and the operators all import
from here, and this package imports nothing of flowrl.
"""

from flowrl.data.policy_ids import DEFAULT_POLICY_ID
from flowrl.data.sample_batch import MultiAgentBatch, SampleBatch, concat_samples

__all__ = ["DEFAULT_POLICY_ID", "MultiAgentBatch", "SampleBatch", "concat_samples"]
