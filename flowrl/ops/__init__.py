"""Dataflow operators: where rollout workers, policies and the engine meet.

Sources and combinators keep the names users of earlier dataflow RL APIs know
(`ParallelRollouts`, `AsyncGradients`); per-item steps are small callable classes whose
`repr` is their label in the plan graph.
"""

from flowrl.data import DEFAULT_POLICY_ID
from flowrl.ops.coefficient_ops import AdaptKLCoefficient, UpdateKL
from flowrl.ops.concurrency import Concurrently, Dequeue, Enqueue, WatchedQueue
from flowrl.ops.imperative import training_step_plan
from flowrl.ops.learner_thread import (
    LearnerOutput,
    LearnerThread,
    LockedLearnStep,
    MinibatchBuffer,
    StartLearnerThread,
)
from flowrl.ops.metrics import (
    APPLY_GRADS_TIMER,
    BROADCAST_TIMER,
    COMPUTE_GRADS_TIMER,
    KL_COEFF_INFO,
    LEARN_TIMER,
    NUM_ACTOR_RESTARTS_COUNTER,
    NUM_GRADIENT_UPDATES_COUNTER,
    NUM_TARGET_UPDATES_COUNTER,
    NUM_WEIGHT_BROADCASTS_COUNTER,
    REPLAY_PRIORITY_UPDATES_COUNTER,
    REPLAY_ROWS_ADDED_COUNTER,
    SAMPLE_TIMER,
    STEPS_SAMPLED_COUNTER,
    STEPS_TRAINED_COUNTER,
)
from flowrl.ops.replay_ops import (
    PRIORITIES,
    TD_ERRORS,
    Replay,
    StoreToReplay,
    UpdatePriorities,
    UpdateTargetNetwork,
)
from flowrl.ops.results import Gradients, MultiAgentGradients, TrainResult
from flowrl.ops.rollout_ops import (
    AsyncGradients,
    ComputeGradientsOnShard,
    ConcatBatches,
    DropSource,
    ParallelRollouts,
    PolicyRows,
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
    "AdaptKLCoefficient",
    "APPLY_GRADS_TIMER",
    "BROADCAST_TIMER",
    "COMPUTE_GRADS_TIMER",
    "DEFAULT_POLICY_ID",
    "KL_COEFF_INFO",
    "LEARN_TIMER",
    "NUM_ACTOR_RESTARTS_COUNTER",
    "NUM_GRADIENT_UPDATES_COUNTER",
    "NUM_TARGET_UPDATES_COUNTER",
    "NUM_WEIGHT_BROADCASTS_COUNTER",
    "PRIORITIES",
    "REPLAY_PRIORITY_UPDATES_COUNTER",
    "REPLAY_ROWS_ADDED_COUNTER",
    "SAMPLE_TIMER",
    "STEPS_SAMPLED_COUNTER",
    "STEPS_TRAINED_COUNTER",
    "TD_ERRORS",
    "ApplyGradients",
    "AsyncGradients",
    "AverageGradients",
    "BroadcastWeights",
    "ComputeGradients",
    "ComputeGradientsOnShard",
    "ConcatBatches",
    "DropSource",
    "Concurrently",
    "Dequeue",
    "Enqueue",
    "Gradients",
    "LearnerOutput",
    "LearnerThread",
    "LockedLearnStep",
    "MinibatchBuffer",
    "MultiAgentGradients",
    "StartLearnerThread",
    "ParallelRollouts",
    "PolicyRows",
    "RecordSampledSteps",
    "Replay",
    "SelectExperiences",
    "StandardizeFields",
    "StoreToReplay",
    "TrainOneStep",
    "TrainResult",
    "UpdateKL",
    "UpdatePriorities",
    "UpdateTargetNetwork",
    "WatchedQueue",
    "training_step_plan",
]
