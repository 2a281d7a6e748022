"""The imperative escape hatch: an ordinary `training_step` function run as a plan."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from flowrl.iter import LocalIterator
from flowrl.ops.results import TrainResult

StepFn = Callable[[Any, Any], TrainResult]


class _RepeatStep:
    """The plan's source: calls `step_fn(workers, config)` once per item, forever."""

    def __init__(self, step_fn: StepFn, workers: Any, config: Any) -> None:
        self.step_fn, self.workers, self.config = step_fn, workers, config

    def __call__(self) -> Iterator[TrainResult]:
        for _ in itertools.count():
            yield self.step_fn(self.workers, self.config)


def training_step_plan(step_fn: StepFn) -> Callable[[Any, Any], LocalIterator[TrainResult]]:
    """Turns an imperative `step_fn(workers, config) -> TrainResult` into a plan function.

    Inside `step_fn` call flowrl's operators as plain functions (`TrainOneStep(...)(batch)`,
    `BroadcastWeights(...)(result)`, ...) or the workers directly; they read and write the
    plan's metrics context, so the Trainer still reports counters, timers and episodes, and
    `save`/`restore` still checkpoint them. The plan graph is a single `training_step` node.

    Examples:
        >>> def my_step(workers, config):  # doctest: +SKIP
        ...     batch = workers.local_worker().sample()
        ...     RecordSampledSteps()(batch)
        ...     return TrainOneStep(workers)(batch)
        >>> trainer = flowrl.Trainer("pg", env="CartPole-v1",  # doctest: +SKIP
        ...                          plan=training_step_plan(my_step))
    """
    name = getattr(step_fn, "__name__", type(step_fn).__name__)

    def plan(workers: Any, config: Any) -> LocalIterator[TrainResult]:
        return LocalIterator(_RepeatStep(step_fn, workers, config), name=f"training_step({name})")

    plan.__name__ = f"training_step_plan({name})"
    return plan
