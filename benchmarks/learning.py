"""Learning targets: env steps and wall time until each algorithm reaches its threshold.

Targets (100-episode mean return on CartPole-v1, median over seeds):
    PPO  >= 450 within 100k env steps, with torch and with tf
    A2C  >= 450 within 500k
    A3C  >= 450 within 500k
    PG   >= 150 within 200k
    IMPALA >= 450 within 60 s wall from process start (2 cores), torch and tf
    APPO   >= 450 within 90 s wall from process start
    DQN  >= 450 within 150k env steps, with torch and with tf
    APEX >= 450 within 300k env steps (2 workers, 2 replay shards)

Every run is a fresh process with the algorithm's default config (plus the seed), on a local
Ray cluster, exactly as `flowrl.run(algo, env="CartPole-v1")` runs for a user.

    python benchmarks/learning.py                       # everything, 3 seeds
    python benchmarks/learning.py --only ppo-torch --seeds 1
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass

from common import run_json_subprocess


@dataclass(frozen=True)
class Target:
    algo: str
    framework: str
    reward: float
    max_steps: int
    max_wall_s: float | None = None
    """A wall-time target (from process start); the run is also stopped after this much
    training time."""

    @property
    def name(self) -> str:
        return f"{self.algo}-{self.framework}"


TARGETS = [
    Target("ppo", "torch", 450, 100_000),
    Target("ppo", "tf", 450, 100_000),
    Target("a2c", "torch", 450, 500_000),
    Target("a3c", "torch", 450, 500_000),
    Target("pg", "torch", 150, 200_000),
    Target("impala", "torch", 450, 2_000_000, max_wall_s=60),
    Target("impala", "tf", 450, 2_000_000, max_wall_s=60),
    Target("appo", "torch", 450, 2_000_000, max_wall_s=90),
    Target("dqn", "torch", 450, 150_000),
    Target("dqn", "tf", 450, 150_000),
    Target("apex", "torch", 450, 300_000),
]

RUN_CODE = """
import json, time
start = time.perf_counter()
import flowrl
result = flowrl.run({algo!r}, env="CartPole-v1", verbose=0,
                    config={{"framework": {framework!r}, "seed": {seed}}},
                    stop={{"episode_reward_mean": {reward}, "timesteps_total": {max_steps},
                          "time_total_s": {max_train_s}}})
print(json.dumps({{"steps": result["timesteps_total"], "reward": result["episode_reward_mean"],
                  "train_s": result["time_total_s"], "wall_s": time.perf_counter() - start}}))
"""


def run_once(target: Target, seed: int) -> dict | None:
    code = RUN_CODE.format(algo=target.algo, framework=target.framework, seed=seed,
                           reward=target.reward, max_steps=target.max_steps,
                           max_train_s=target.max_wall_s or 10**9)
    return run_json_subprocess(code, timeout=1800)


def _solved(target: Target, run: dict) -> bool:
    in_time = target.max_wall_s is None or run["wall_s"] <= target.max_wall_s
    return run["reward"] >= target.reward and in_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="target names, e.g. ppo-torch a2c-torch")
    args = parser.parse_args()
    targets = [t for t in TARGETS if not args.only or t.name in args.only]
    print(f"{'target':12s} {'threshold':>16s} {'median steps':>13s} {'median train s':>15s} "
          f"{'median wall s':>14s}  solved  per seed (steps)")
    for target in targets:
        runs = [run_once(target, seed) for seed in range(args.seeds)]
        done = [r for r in runs if r is not None]
        solved = sum(_solved(target, r) for r in done)
        if not done:
            print(f"{target.name:12s} failed to run")
            continue
        steps = statistics.median(r["steps"] for r in done)
        train_s = statistics.median(r["train_s"] for r in done)
        wall_s = statistics.median(r["wall_s"] for r in done)
        threshold = (f">={target.reward:.0f} in {target.max_wall_s:.0f}s" if target.max_wall_s
                     else f">={target.reward:.0f} in {target.max_steps // 1000}k")
        per_seed = ", ".join(f"{r['steps']:,}" + ("" if _solved(target, r) else "*")
                             for r in done)
        print(f"{target.name:12s} {threshold:>16s} {steps:>13,.0f} {train_s:>15.1f} "
              f"{wall_s:>14.1f}  {solved}/{len(runs)}   {per_seed}", flush=True)
    print("(* = budget (steps or wall time) exhausted before the threshold)")


if __name__ == "__main__":
    main()
