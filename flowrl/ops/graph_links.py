"""Side links of the plan graph that operators of several modules declare."""

from __future__ import annotations

from typing import Any

from flowrl.iter import GraphLink
from flowrl.iter.graph import LinkDirection


def workers_graph_link(workers: Any, direction: LinkDirection = "is", data: str = "") -> GraphLink:
    """The rollout workers of `workers` (a WorkerSet) as a side link of the plan graph.

    `ParallelRollouts`' source stands for them (`direction="is"`); an operator that sends them
    weights declares `workers_graph_link(workers, "to", "weights")`, drawn as a dashed edge
    back to that source.
    """
    return GraphLink(workers, "RolloutWorkers", "rollout workers", direction, data)
