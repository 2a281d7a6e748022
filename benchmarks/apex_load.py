"""Ape-X under machine load: env steps to 450 on CartPole-v1 with and without busy neighbours.

Target (issue 17): Ape-X with its default config (2 rollout workers, 2 replay shards,
`training_intensity` 5) reaches a 100-episode mean return >= 450 within 300k env steps on
3/3 seeds, both on a quiet machine and with `--busy 2` (two busy-looping processes started
beside each run, as other work on a 2-core machine would be). The measured replay ratio
(`learner/replay_ratio`: rows trained per env step sampled since `learning_starts`) is printed
per seed: with `training_intensity` set it stays within 10% of it whatever the load; with
`--config '{"training_intensity": null}'` (the free-running learner) it follows the load.

Every run is a fresh process (`flowrl.run`, as a user runs it) on a local Ray cluster.

    python benchmarks/apex_load.py --seeds 3                 # quiet
    python benchmarks/apex_load.py --seeds 3 --busy 2        # beside two busy loops
    python benchmarks/apex_load.py --seeds 1 --busy 2 --config '{"training_intensity": null}'
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from common import run_json_subprocess

TARGET_REWARD = 450
MAX_STEPS = 300_000
RATIO_TOLERANCE = 0.10

RUN_CODE = """
import json, os, time
start = time.perf_counter()
import flowrl
result = flowrl.run("apex", env="CartPole-v1", verbose=0, log_dir={log_dir!r},
                    checkpoint_freq=0, config={{"seed": {seed}, **json.loads({config!r})}},
                    stop={{"episode_reward_mean": {reward}, "timesteps_total": {max_steps}}})
counters = result["info"]["counters"]
print(json.dumps({{"steps": result["timesteps_total"], "reward": result["episode_reward_mean"],
                  "ratio": result["info"].get("learner/replay_ratio"),
                  "trained": counters.get("learner/steps_trained", 0),
                  "train_s": result["time_total_s"], "wall_s": time.perf_counter() - start,
                  "load": os.getloadavg()[0]}}))
"""

BUSY_LOOP = "while True:\n    pass\n"


def run_once(seed: int, config: dict, busy: int) -> dict | None:
    """One Ape-X run in a fresh process, with `busy` busy-looping processes beside it."""
    neighbours = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
    try:
        with tempfile.TemporaryDirectory(prefix="apex_load_") as log_dir:
            code = RUN_CODE.format(log_dir=os.path.join(log_dir, "run"), seed=seed,
                                   config=json.dumps(config), reward=TARGET_REWARD,
                                   max_steps=MAX_STEPS)
            return run_json_subprocess(code, timeout=3600)
    finally:
        for process in neighbours:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--busy", type=int, default=0,
                        help="busy-looping processes to run beside each run (e.g. 2)")
    parser.add_argument("--config", default="{}", help="Ape-X config overrides as JSON")
    args = parser.parse_args()
    config = json.loads(args.config)
    intensity = config.get("training_intensity", 5.0)
    mode = f"{args.busy} busy loops" if args.busy else "quiet"
    print(f"Ape-X CartPole-v1, {mode}, config {config or 'default'}, "
          f"target >= {TARGET_REWARD} within {MAX_STEPS:,} env steps", flush=True)
    runs = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        run = run_once(seed, config, args.busy)
        if run is None:
            print(f"seed {seed}: the run failed; see the errors above", flush=True)
            continue
        runs.append(run)
        solved = run["reward"] >= TARGET_REWARD
        ratio = run["ratio"]
        off = "" if intensity is None or not ratio else (
            f" ({100 * (ratio / intensity - 1):+.1f}% of {intensity})")
        print(f"seed {seed}: {'solved at' if solved else 'budget out at'} {run['steps']:,} env "
              f"steps (return {run['reward']:.1f}), replay ratio {ratio:.2f}{off}, "
              f"{run['steps'] / run['train_s']:,.0f} env steps/s, {run['train_s']:.0f} s "
              f"training, load average {run['load']:.1f}", flush=True)
    if not runs:
        return
    solved = sum(r["reward"] >= TARGET_REWARD for r in runs)
    within = (sum(abs(r["ratio"] / intensity - 1) <= RATIO_TOLERANCE for r in runs)
              if intensity is not None else None)
    steps = statistics.median(r["steps"] for r in runs)
    ratio = statistics.median(r["ratio"] for r in runs)
    print(f"{mode}: {solved}/{len(runs)} solved, median {steps:,.0f} env steps; replay ratio "
          f"median {ratio:.2f}"
          + (f", within {100 * RATIO_TOLERANCE:.0f}% of {intensity} on {within}/{len(runs)}"
             if within is not None else " (free-running)"), flush=True)


if __name__ == "__main__":
    main()
