"""flowrl's dataflow engine: lazy parallel and local iterators over Ray actors or in-process.

Examples:
    >>> import flowrl, flowrl.iter
    >>> flowrl.init(local_mode=True)
    >>> flowrl.iter.from_range(6, num_shards=2).for_each(lambda x: x * x).gather_sync().take(3)
    [0, 9, 1]
"""

from flowrl.iter import executor
from flowrl.iter.errors import ActorDiedError, ActorStalledError, FlowError
from flowrl.iter.graph import GraphLink
from flowrl.iter.local_iterator import LocalIterator, merge_iterators
from flowrl.iter.metrics import MetricsContext, SharedMetrics, TimerStat
from flowrl.iter.parallel_iterator import (
    ParallelIterator,
    from_actors,
    from_items,
    from_iterators,
    from_range,
)
from flowrl.iter.sources import PollingSource
from flowrl.iter.transforms import NonBlockingStep
from flowrl.iter.worker import ParallelIteratorWorker

__all__ = [
    "ActorDiedError",
    "ActorStalledError",
    "FlowError",
    "GraphLink",
    "LocalIterator",
    "MetricsContext",
    "NonBlockingStep",
    "ParallelIterator",
    "ParallelIteratorWorker",
    "PollingSource",
    "SharedMetrics",
    "TimerStat",
    "executor",
    "from_actors",
    "from_items",
    "from_iterators",
    "from_range",
    "merge_iterators",
]
