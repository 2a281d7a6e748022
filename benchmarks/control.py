"""Continuous-control learning targets: SAC, TD3, DDPG on Pendulum-v1 and discrete SAC on
CartPole-v1, each trained for a fixed env-step budget and then evaluated greedily.

Targets (median over seeds; the evaluation is `evaluation_num_episodes` greedy episodes after
the budget, as the rl-zoo reports its figures):
    SAC (torch, tf), TD3, DDPG on Pendulum-v1: evaluation mean >= -200 after 20,000 env steps
    discrete SAC on CartPole-v1: evaluation mean >= 400 after 100,000 env steps
    Ape-X DDPG (2 workers) on Pendulum-v1: evaluation mean >= -200 after 100,000 env steps

Every run is a fresh process with the algorithm's default config plus the seed (or the tuned
file a target names), on a local Ray cluster, as `flowrl.Trainer(algo, env=...)` runs for a
user. `--sb3` also runs Stable-Baselines3's SAC with the rl-zoo's Pendulum hyperparameters for
the same 20k steps, interleaved with flowrl's SAC, and prints the wall-time ratio.

    python benchmarks/control.py                        # everything, 3 seeds
    python benchmarks/control.py --only sac-torch-Pendulum-v1 --seeds 1
    python benchmarks/control.py --only sac-torch-Pendulum-v1 --sb3
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field

from common import run_json_subprocess


@dataclass(frozen=True)
class Target:
    algo: str
    framework: str
    env: str
    reward: float
    steps: int
    config: dict = field(default_factory=dict)
    eval_episodes: int = 100

    @property
    def name(self) -> str:
        return f"{self.algo}-{self.framework}-{self.env}"


TARGETS = [
    Target("sac", "torch", "Pendulum-v1", -200, 20_000),
    Target("sac", "tf", "Pendulum-v1", -200, 20_000),
    Target("td3", "torch", "Pendulum-v1", -200, 20_000),
    Target("ddpg", "torch", "Pendulum-v1", -200, 20_000),
    Target("sac", "torch", "CartPole-v1", 400, 100_000, eval_episodes=20),
    Target("apex_ddpg", "torch", "Pendulum-v1", -200, 100_000),
]

RUN_CODE = """
import json, time
start = time.perf_counter()
import flowrl
trainer = flowrl.Trainer({algo!r}, env={env!r}, config={{"framework": {framework!r},
    "seed": {seed}, "evaluation_num_episodes": {eval_episodes}, **{config!r}}})
while True:
    result = trainer.train()
    if result["timesteps_total"] >= {steps}:
        break
train_s = time.perf_counter() - start
evaluation = trainer.evaluate()["evaluation"]
print(json.dumps({{"steps": result["timesteps_total"], "eval": evaluation["episode_reward_mean"],
                  "train_mean": result["episode_reward_mean"], "wall_s": train_s}}))
"""

SB3_CODE = """
import json, time
start = time.perf_counter()
import gymnasium as gym
from stable_baselines3 import SAC
from stable_baselines3.common.evaluation import evaluate_policy
env = gym.make("Pendulum-v1")
model = SAC("MlpPolicy", env, learning_rate=1e-3, seed={seed}, verbose=0)
model.learn(total_timesteps={steps})
wall_s = time.perf_counter() - start
mean, _ = evaluate_policy(model, gym.make("Pendulum-v1"), n_eval_episodes=100)
print(json.dumps({{"steps": {steps}, "eval": float(mean), "train_mean": float("nan"),
                  "wall_s": wall_s}}))
"""


def run_once(target: Target, seed: int) -> dict | None:
    code = RUN_CODE.format(algo=target.algo, env=target.env, framework=target.framework,
                           seed=seed, eval_episodes=target.eval_episodes, config=target.config,
                           steps=target.steps)
    return run_json_subprocess(code, timeout=3600)


def run_sb3(seed: int, steps: int) -> dict | None:
    return run_json_subprocess(SB3_CODE.format(seed=seed, steps=steps), timeout=3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from this one")
    parser.add_argument("--only", nargs="*", help="target names, e.g. sac-torch-Pendulum-v1")
    parser.add_argument("--sb3", action="store_true",
                        help="also time SB3's SAC (zoo Pendulum settings), interleaved")
    args = parser.parse_args()
    targets = [t for t in TARGETS if not args.only or t.name in args.only]
    print(f"{'target':28s} {'threshold':>14s} {'median eval':>12s} {'median wall s':>14s} "
          f" solved  per seed (eval)")
    for target in targets:
        runs, sb3_runs = [], []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            runs.append(run_once(target, seed))
            if args.sb3 and target.algo == "sac" and target.env == "Pendulum-v1":
                sb3_runs.append(run_sb3(seed, target.steps))
        done = [r for r in runs if r is not None]
        if not done:
            print(f"{target.name:28s} failed to run")
            continue
        solved = sum(r["eval"] >= target.reward for r in done)
        evals = statistics.median(r["eval"] for r in done)
        wall = statistics.median(r["wall_s"] for r in done)
        per_seed = ", ".join(f"{r['eval']:.0f}" for r in done)
        threshold = f">={target.reward:.0f} @ {target.steps // 1000}k"
        print(f"{target.name:28s} {threshold:>14s} {evals:>12.1f} {wall:>14.1f}  "
              f"{solved}/{len(runs)}    {per_seed}", flush=True)
        sb3_done = [r for r in sb3_runs if r is not None]
        if sb3_done:
            sb3_wall = statistics.median(r["wall_s"] for r in sb3_done)
            print(f"{'  sb3 SAC (zoo settings)':28s} {'':>14s} "
                  f"{statistics.median(r['eval'] for r in sb3_done):>12.1f} {sb3_wall:>14.1f}  "
                  f"wall ratio flowrl/sb3 = {wall / sb3_wall:.2f}", flush=True)


if __name__ == "__main__":
    main()
