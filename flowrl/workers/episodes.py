"""Per-env episode bookkeeping for rollout workers: ids, step indices, returns and lengths."""

from __future__ import annotations

import numpy as np


class EpisodeTracker:
    """Tracks the running episode of every env in a vector env.

    `step(rewards, dones)` is called once per vector step; it returns the episode id and the
    in-episode step index of each env *for that step*, and records (return, length) of every
    episode that ended on it.

    Examples:
        >>> tracker = EpisodeTracker(num_envs=2, worker_index=1)
        >>> eps_id, t = tracker.step(np.array([1.0, 1.0]), np.array([False, True]))
        >>> t.tolist(), tracker.pop_completed()
        ([0, 0], [(1.0, 1)])
    """

    def __init__(self, *, num_envs: int, worker_index: int) -> None:
        self._base = worker_index * 1_000_000_000
        self._next_episode = num_envs
        self.eps_id = self._base + np.arange(num_envs, dtype=np.int64)
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self._completed: list[tuple[float, int]] = []

    def step(self, rewards: np.ndarray, dones: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advances every env by one step; returns (eps_id, t) of the step just taken."""
        eps_id, t = self.eps_id.copy(), self.t.copy()
        self.returns += rewards
        self.t += 1
        for i in np.flatnonzero(dones):
            self._completed.append((float(self.returns[i]), int(self.t[i])))
            self.returns[i] = 0.0
            self.t[i] = 0
            self.eps_id[i] = self._base + self._next_episode
            self._next_episode += 1
        return eps_id, t

    def record_episode(self, episode_return: float, length: int) -> None:
        """Records an episode run outside the vector env (e.g. an ES evaluation episode)."""
        self._completed.append((float(episode_return), int(length)))

    def pop_completed(self) -> list[tuple[float, int]]:
        """Returns and clears the episodes finished since the last call."""
        done, self._completed = self._completed, []
        return done
