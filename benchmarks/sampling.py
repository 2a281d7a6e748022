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
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402

import flowrl  # noqa: E402
from flowrl.config import from_dict  # noqa: E402
from flowrl.env import get_env_creator  # noqa: E402
from flowrl.ops import LEARN_TIMER, SAMPLE_TIMER, ParallelRollouts  # noqa: E402
from flowrl.plans import get_policy_class  # noqa: E402
from flowrl.plans.ppo import PPOConfig  # noqa: E402
from flowrl.workers import WorkerSet  # noqa: E402

NUM_ENVS = 8
FRAGMENT = 64
MEASURE_S = 8.0


def hand_written_loop(seconds: float) -> float:
    """Steps/s of the simplest correct sampler: one process, one vector env, one policy."""
    config = from_dict(PPOConfig, {"seed": 0})
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * NUM_ENVS,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    policy = get_policy_class("ppo")(envs.single_observation_space, envs.single_action_space,
                                     {**config.to_dict(), "num_threads": 1})
    obs, _ = envs.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        actions, _ = policy.compute_actions(obs)
        obs, _, _, _, _ = envs.step(actions)
        steps += NUM_ENVS
    return steps / (time.perf_counter() - start)


def parallel_rollouts(seconds: float, mode: str) -> float:
    """Steps/s of ParallelRollouts over 2 remote workers (Ray actors)."""
    config = from_dict(PPOConfig, {"num_workers": 2, "num_envs_per_worker": NUM_ENVS,
                                   "rollout_fragment_length": FRAGMENT, "seed": 0,
                                   "train_batch_size": 2 * NUM_ENVS * FRAGMENT})
    workers = WorkerSet(env_creator=get_env_creator("CartPole-v1"),
                        policy_class=get_policy_class("ppo"), config=config)
    try:
        kwargs = {"num_async": 2} if mode == "async" else {}
        stream = iter(ParallelRollouts(workers, mode=mode, **kwargs))
        for _ in range(3):  # warm-up: actors started, first samples taken
            next(stream)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            steps += len(next(stream))
        return steps / (time.perf_counter() - start)
    finally:
        workers.stop()


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
    baseline = hand_written_loop(MEASURE_S)
    flowrl.init(num_cpus=2)
    results = {mode: parallel_rollouts(MEASURE_S, mode) for mode in ("bulk_sync", "async")}
    print(f"Sampling CartPole-v1, {NUM_ENVS} envs per process, policy inference included:")
    print(f"  hand-written single-process loop     {baseline:9,.0f} steps/s  (baseline)")
    for mode, rate in results.items():
        print(f"  ParallelRollouts, 2 workers, {mode:9s} {rate:9,.0f} steps/s  "
              f"{rate / baseline:.2f}x (target >= 1.5x)")
    other, sample, learn = dataflow_share()
    print("PPO iteration (local mode, 512 steps, 8 epochs of minibatch SGD):")
    print(f"  sampling {sample:6.1%}   SGD {learn:6.1%}   everything else {other:6.1%} "
          f"(target < 5%)")


if __name__ == "__main__":
    main()
