"""Dataflow operators: where rollout workers, policies and the engine meet.

Sources and combinators keep the names users of earlier dataflow RL APIs know
(`ParallelRollouts`, `AsyncGradients`); per-item steps are small callable classes whose
`repr` is their label in the plan graph.
"""

from flowrl.ops.imperative import training_step_plan
from flowrl.ops.metrics import (
    APPLY_GRADS_TIMER,
    BROADCAST_TIMER,
    COMPUTE_GRADS_TIMER,
    KL_COEFF_INFO,
    LEARN_TIMER,
    NUM_ACTOR_RESTARTS_COUNTER,
    NUM_GRADIENT_UPDATES_COUNTER,
    NUM_WEIGHT_BROADCASTS_COUNTER,
    SAMPLE_TIMER,
    STEPS_SAMPLED_COUNTER,
    STEPS_TRAINED_COUNTER,
)
from flowrl.ops.results import DEFAULT_POLICY_ID, Gradients, TrainResult
from flowrl.ops.rollout_ops import (
    AsyncGradients,
    ComputeGradientsOnShard,
    ConcatBatches,
    ParallelRollouts,
    RecordSampledSteps,
    SelectExperiences,
    StandardizeFields,
)
from flowrl.ops.train_ops import (
    ApplyGradients,
    AverageGradients,
    BroadcastWeights,
    ComputeGradients,
    TrainOneStep,
)

__all__ = [
    "APPLY_GRADS_TIMER",
    "BROADCAST_TIMER",
    "COMPUTE_GRADS_TIMER",
    "DEFAULT_POLICY_ID",
    "KL_COEFF_INFO",
    "LEARN_TIMER",
    "NUM_ACTOR_RESTARTS_COUNTER",
    "NUM_GRADIENT_UPDATES_COUNTER",
    "NUM_WEIGHT_BROADCASTS_COUNTER",
    "SAMPLE_TIMER",
    "STEPS_SAMPLED_COUNTER",
    "STEPS_TRAINED_COUNTER",
    "ApplyGradients",
    "AsyncGradients",
    "AverageGradients",
    "BroadcastWeights",
    "ComputeGradients",
    "ComputeGradientsOnShard",
    "ConcatBatches",
    "Gradients",
    "ParallelRollouts",
    "RecordSampledSteps",
    "SelectExperiences",
    "StandardizeFields",
    "TrainOneStep",
    "TrainResult",
    "training_step_plan",
]
