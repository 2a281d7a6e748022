"""Names of the shared counters and timers that operators write (STYLE G13).

Operators reach the shared metrics context only through `LocalIterator.get_metrics()`, and
spell keys only through these constants.
"""

STEPS_SAMPLED_COUNTER = "sampler/env_steps"
"""Env steps sampled by all rollout workers since the start of training."""
STEPS_TRAINED_COUNTER = "learner/steps_trained"
"""Samples the learner has trained on (counted once per batch, not per SGD epoch)."""
NUM_WEIGHT_BROADCASTS_COUNTER = "learner/weight_broadcasts"
"""Times the learner's weights were sent to rollout workers."""
NUM_GRADIENT_UPDATES_COUNTER = "learner/gradient_updates"
"""Gradient applications on the learner (A3C, A2C microbatches)."""
NUM_ACTOR_RESTARTS_COUNTER = "num_actor_restarts"
"""Dead shard actors the engine replaced (written by the engine, read by reporting)."""

SAMPLE_TIMER = "timers/sample"
LEARN_TIMER = "timers/learn"
COMPUTE_GRADS_TIMER = "timers/compute_grads"
APPLY_GRADS_TIMER = "timers/apply_grads"
BROADCAST_TIMER = "timers/broadcast_weights"

KL_COEFF_INFO = "learner/kl_coeff"
"""Latest adaptive KL coefficient (PPO), kept in the metrics context's `info`."""

NUM_TARGET_UPDATES_COUNTER = "learner/target_updates"
"""Times the learner's target network was updated (DQN, Ape-X)."""
REPLAY_ROWS_ADDED_COUNTER = "replay/rows_added"
"""Rows stored into replay buffers (local or replay actors)."""
REPLAY_PRIORITY_UPDATES_COUNTER = "replay/priority_updates"
"""Rows whose replay priority was updated from TD errors."""
