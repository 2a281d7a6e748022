"""Where samples come from: rollout workers and the worker set a plan drives."""

from flowrl.workers.episodes import EpisodeTracker
from flowrl.workers.multi_agent import MultiAgentRolloutWorker, MultiAgentSetup
from flowrl.workers.rollout_worker import RolloutWorker
from flowrl.workers.sampling_worker import SamplingWorker, get_current_worker
from flowrl.workers.worker_set import WorkerSet

__all__ = ["EpisodeTracker", "MultiAgentRolloutWorker", "MultiAgentSetup", "RolloutWorker",
           "SamplingWorker", "WorkerSet", "get_current_worker"]
