"""Sampling throughput and the dataflow layer's own cost.

1. Env steps per second of `ParallelRollouts` over 2 remote rollout workers on CartPole-v1,
   as a ratio to a hand-written single-process loop that steps the same vector env with the
   same policy network, measured in the same run (target >= 1.5x on two cores).
2. The share of a PPO iteration spent outside sampling and SGD: everything the plan does
   besides `worker.sample()` and `policy.learn_on_minibatches()` (batch concatenation,
   standardization, weight sync, KL update, the iterator machinery), in local mode with one
   process so nothing overlaps (target < 5%).

    python benchmarks/sampling.py
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402

import flowrl  # noqa: E402
from flowrl.config import from_dict  # noqa: E402
from flowrl.env import get_env_creator  # noqa: E402
from flowrl.ops import LEARN_TIMER, SAMPLE_TIMER, ParallelRollouts  # noqa: E402
from flowrl.plans.ppo import (
    PPO_POLICY,  # noqa: E402
    PPOConfig,  # noqa: E402
)
from flowrl.workers import WorkerSet  # noqa: E402

NUM_ENVS = 8
FRAGMENT = 64
MEASURE_S = 3.0
ROUNDS = 5


class HandWrittenLoop:
    """The simplest correct sampler: one process, one vector env, one policy, no bookkeeping."""

    def __init__(self) -> None:
        config = from_dict(PPOConfig, {"seed": 0})
        self.envs = gym.vector.SyncVectorEnv(
            [lambda: gym.make("CartPole-v1")] * NUM_ENVS,
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        self.policy = PPO_POLICY.build(
            self.envs.single_observation_space, self.envs.single_action_space, config,
            num_threads=1)
        self.obs, _ = self.envs.reset(seed=0)

    def steps_per_second(self, seconds: float) -> float:
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            actions, _, _ = self.policy.compute_actions(self.obs)
            self.obs, _, _, _, _ = self.envs.step(actions)
            steps += NUM_ENVS
        return steps / (time.perf_counter() - start)


class Rollouts:
    """ParallelRollouts over 2 remote workers (Ray actors), kept running between measurements."""

    def __init__(self, mode: str) -> None:
        config = from_dict(PPOConfig, {"num_workers": 2, "num_envs_per_worker": NUM_ENVS,
                                       "rollout_fragment_length": FRAGMENT, "seed": 0,
                                       "train_batch_size": 2 * NUM_ENVS * FRAGMENT,
                                       # Two worker sets coexist here; each asks for 1 CPU.
                                       "num_cpus_per_worker": 0.5})
        self.workers = WorkerSet(env_creator=get_env_creator("CartPole-v1"),
                                 policy_spec=PPO_POLICY, config=config)
        kwargs = {"num_async": 2} if mode == "async" else {}
        self.stream = iter(ParallelRollouts(self.workers, mode=mode, **kwargs))
        for _ in range(3):  # warm-up: actors started, first samples taken
            next(self.stream)

    def steps_per_second(self, seconds: float) -> float:
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            steps += len(next(self.stream))
        return steps / (time.perf_counter() - start)


def dataflow_share(iterations: int = 40) -> tuple[float, float, float]:
    """(share outside sampling and SGD, sample share, SGD share) of PPO iterations."""
    trainer = flowrl.Trainer("ppo", env="CartPole-v1", local_mode=True,
                             config={"num_workers": 0, "seed": 0})
    try:
        for _ in range(3):
            trainer.train()
        timers = trainer.metrics.timers
        sample0, learn0 = timers[SAMPLE_TIMER].total, timers[LEARN_TIMER].total
        start = time.perf_counter()
        for _ in range(iterations):
            trainer.train()
        total = time.perf_counter() - start
        sample = timers[SAMPLE_TIMER].total - sample0
        learn = timers[LEARN_TIMER].total - learn0
    finally:
        trainer.stop()
    return (total - sample - learn) / total, sample / total, learn / total


def main() -> None:
    flowrl.init(num_cpus=2)
    contenders = {"hand-written single-process loop": HandWrittenLoop(),
                  "ParallelRollouts, 2 workers, bulk_sync": Rollouts("bulk_sync"),
                  "ParallelRollouts, 2 workers, async": Rollouts("async")}
    # Interleaved rounds, so a noisy neighbour slows every contender alike; medians reported.
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(ROUNDS):
        for name, contender in contenders.items():
            rates[name].append(contender.steps_per_second(MEASURE_S))
    baseline = statistics.median(rates["hand-written single-process loop"])
    print(f"Sampling CartPole-v1, {NUM_ENVS} envs per process, policy inference included "
          f"(median of {ROUNDS} interleaved rounds):")
    for name, values in rates.items():
        rate = statistics.median(values)
        target = "" if rate == baseline else "  (target >= 1.5x)"
        print(f"  {name:40s} {rate:9,.0f} steps/s  {rate / baseline:.2f}x{target}")
    for contender in contenders.values():
        if isinstance(contender, Rollouts):
            contender.workers.stop()
    other, sample, learn = dataflow_share()
    print("PPO iteration (local mode, 512 steps, 8 epochs of minibatch SGD):")
    print(f"  sampling {sample:6.1%}   SGD {learn:6.1%}   everything else {other:6.1%} "
          f"(target < 5%)")


if __name__ == "__main__":
    main()
