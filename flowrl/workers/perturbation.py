"""Worker side of ES and ARS: run antithetic episode pairs θ ± σε for perturbation requests.

A request names its perturbations by offsets into the shared noise table; the answer carries
those offsets back with the two returns and lengths of each pair, the version of the weights
it used, the observation statistics it gathered, and any noise-free evaluation episodes:

```python
request = PerturbationRequest(noise=table, offsets=(17, 90210), noise_stdev=0.02,
                              env_seeds=(3, 4), evaluate=False, action_noise_seed=5)
result = worker.apply(evaluate_perturbations, request)   # on a Ray actor or in-process
result.returns        # [[R+, R-], [R+, R-]]
```

The worker keeps one env for this (apart from its sampling envs) and acts with
`GradientFreePolicy.compute_actions_with`, so its own weights never change here; weights
arrive through `set_weights` (`BroadcastWeights`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from flowrl.policy.filters import RunningStat
from flowrl.workers.noise_table import SharedNoiseTable


@dataclass(frozen=True)
class PerturbationRequest:
    """What a worker is asked to evaluate: one antithetic pair per offset."""

    noise: SharedNoiseTable
    offsets: tuple[int, ...]
    noise_stdev: float
    env_seeds: tuple[int | None, ...]
    """One env reset seed per pair (both episodes of a pair start from the same state)."""
    evaluate: bool = False
    """Also run one episode of θ itself, without noise, reported as an evaluation episode."""
    action_noise_seed: int | None = None


@dataclass
class PerturbationResult:
    """A worker's answer: `(offset, return+, return-, lengths)` per pair, tagged."""

    offsets: np.ndarray
    returns: np.ndarray
    """[pairs, 2]: the return of θ + σε, then of θ − σε."""
    lengths: np.ndarray
    """[pairs, 2] episode lengths, as `returns`."""
    weights_version: int
    """The version of θ the episodes ran with (results for an older θ are dropped)."""
    observation_delta: dict[str, Any]
    """`RunningStat` state of the observations seen since the worker's last result."""
    eval_episodes: list[tuple[float, int]] = field(default_factory=list)
    worker_index: int = 0

    @property
    def env_steps(self) -> int:
        """Env steps this result cost (perturbed and evaluation episodes)."""
        return int(self.lengths.sum()) + sum(length for _, length in self.eval_episodes)


class _Evaluator:
    """Per-worker state: one env and the observation statistics since the last result."""

    def __init__(self, worker: Any) -> None:
        self.env: gym.Env = worker.env_creator(dict(worker.env_config))
        self.delta = RunningStat((worker.policy.obs_size,))

    def episode(self, policy: Any, theta: np.ndarray, seed: int | None,
                action_noise: np.random.Generator | None, record: bool) -> tuple[float, int]:
        obs, _ = self.env.reset(seed=seed)
        total, length, done = 0.0, 0, False
        seen = []
        while not done:
            if record:
                seen.append(policy.preprocess(obs)[0])
            action = policy.compute_actions_with(theta, np.asarray(obs)[None], action_noise)[0]
            obs, reward, terminated, truncated, _ = self.env.step(action)
            total += float(reward)
            length += 1
            done = terminated or truncated
        if seen:
            self.delta.push_rows(np.stack(seen))
        return total, length


_EVALUATORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def evaluate_perturbations(worker: Any, request: PerturbationRequest) -> PerturbationResult:
    """Runs the request's episode pairs on `worker` (a RolloutWorker with a
    `GradientFreePolicy`); call it through `worker.apply`."""
    evaluator = _EVALUATORS.get(worker)
    if evaluator is None:
        evaluator = _EVALUATORS[worker] = _Evaluator(worker)
    policy = worker.policy
    theta = policy.flat_weights
    dim = theta.size
    action_noise = (None if request.action_noise_seed is None
                    else np.random.default_rng(request.action_noise_seed))
    returns = np.zeros((len(request.offsets), 2))
    lengths = np.zeros((len(request.offsets), 2), dtype=np.int64)
    for row, (offset, seed) in enumerate(zip(request.offsets, request.env_seeds)):
        perturbation = request.noise_stdev * request.noise.get(offset, dim)
        for column, sign in enumerate((1.0, -1.0)):
            returns[row, column], lengths[row, column] = evaluator.episode(
                policy, (theta + sign * perturbation).astype(np.float32), seed, action_noise,
                record=True)
    eval_episodes = []
    if request.evaluate:
        eval_seed = None if request.env_seeds[0] is None else request.env_seeds[0] + 1
        episode = evaluator.episode(policy, theta, eval_seed, None, record=False)
        worker.episodes.record_episode(*episode)  # what the Trainer reports as episodes
        eval_episodes.append(episode)
    delta, evaluator.delta = evaluator.delta, RunningStat(evaluator.delta.mean.shape)
    return PerturbationResult(
        offsets=np.asarray(request.offsets, dtype=np.int64), returns=returns, lengths=lengths,
        weights_version=int(policy.weights_version), observation_delta=delta.get_state(),
        eval_episodes=eval_episodes, worker_index=int(worker.worker_index))


def close_evaluator(worker: Any) -> None:
    """Closes the env `evaluate_perturbations` opened on `worker` (if any)."""
    evaluator = _EVALUATORS.pop(worker, None)
    if evaluator is not None:
        evaluator.env.close()
