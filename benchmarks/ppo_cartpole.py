"""Time from process start until PPO reaches a 100-episode mean return of 450 on CartPole-v1.

Each contender runs in a fresh process (so imports and cluster start-up count), one after the
other on the same machine, and the figure printed is the ratio of its time to Stable-Baselines3's
measured in the same run (SB3 with the rl-zoo CartPole hyperparameters). Lower is better; the
project's goal is 0.5x.

    python benchmarks/ppo_cartpole.py            # flowrl on Ray, flowrl in-process, SB3
    python benchmarks/ppo_cartpole.py --seeds 3  # median over three seeds

SB3 is an optional benchmark dependency (`pip install -c constraints.txt stable-baselines3`);
without it the script reports absolute times only.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import run_json_subprocess

TARGET = 450.0
MAX_STEPS = 300_000
# flowrl runs with its tuned CartPole file, as SB3 runs with rl-zoo's tuned values.
TUNED = str(Path(__file__).resolve().parent.parent / "examples" / "tuned" / "ppo-cartpole.yaml")

FLOWRL_CODE = """
import json, sys, time
start = time.perf_counter()
import flowrl
from flowrl.config import load_config_file
config = {{**load_config_file({tuned!r}), "seed": {seed}}}
result = flowrl.run("ppo", env="CartPole-v1", config=config, local_mode={local},
                    stop={{"episode_reward_mean": {target}, "timesteps_total": {max_steps}}},
                    verbose=0)
print(json.dumps({{"seconds": time.perf_counter() - start + {import_offset},
                  "steps": result["timesteps_total"],
                  "reward": result["episode_reward_mean"]}}))
"""

SB3_CODE = """
import json, time
start = time.perf_counter()
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

class StopAtTarget(BaseCallback):
    def _on_step(self):
        buffer = self.model.ep_info_buffer
        return not (len(buffer) == buffer.maxlen and
                    np.mean([e["r"] for e in buffer]) >= {target})

# rl-zoo's tuned CartPole-v1 hyperparameters.
env = make_vec_env("CartPole-v1", n_envs=8, seed={seed})
model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98,
            n_epochs=20, ent_coef=0.0, learning_rate=1e-3, clip_range=0.2, seed={seed},
            device="cpu", verbose=0)
model.learn(total_timesteps={max_steps}, callback=StopAtTarget())
buffer = model.ep_info_buffer
print(json.dumps({{"seconds": time.perf_counter() - start, "steps": model.num_timesteps,
                  "reward": float(np.mean([e["r"] for e in buffer]))}}))
"""

# The interpreter's own start-up (before the first line of the script) is measured once and
# added, so "from process start" includes it for every contender alike.
_IMPORT_OFFSET_CODE = "pass"


def _run(code: str) -> dict | None:
    return run_json_subprocess(code, timeout=900)


def _interpreter_start_seconds() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", _IMPORT_OFFSET_CODE], check=True)
    return time.perf_counter() - start


def _has_sb3() -> bool:
    return subprocess.run([sys.executable, "-c", "import stable_baselines3"],
                          capture_output=True).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="seeds per contender (median)")
    args = parser.parse_args()
    offset = _interpreter_start_seconds()
    contenders = {
        "flowrl PPO (Ray, 1 worker)": lambda s: FLOWRL_CODE.format(
            seed=s, local=False, target=TARGET, max_steps=MAX_STEPS, import_offset=offset,
            tuned=TUNED),
        "flowrl PPO (local mode)": lambda s: FLOWRL_CODE.format(
            seed=s, local=True, target=TARGET, max_steps=MAX_STEPS, import_offset=offset,
            tuned=TUNED),
    }
    if _has_sb3():
        contenders["Stable-Baselines3 PPO"] = lambda s: SB3_CODE.format(
            seed=s, target=TARGET, max_steps=MAX_STEPS)
    results: dict[str, list[dict]] = {}
    for name, make_code in contenders.items():
        runs = [r for r in (_run(make_code(seed)) for seed in range(args.seeds)) if r]
        results[name] = runs
        for r in runs:
            print(f"  {name}: {r['seconds']:.1f} s, {r['steps']:,} steps, "
                  f"reward {r['reward']:.1f}", flush=True)
    baseline = results.get("Stable-Baselines3 PPO")
    base_s = statistics.median(r["seconds"] for r in baseline) if baseline else None
    print(f"\nTime to a 100-episode mean return of {TARGET:.0f} on CartPole-v1 (median):")
    for name, runs in results.items():
        if not runs:
            print(f"  {name:32s} failed")
            continue
        seconds = statistics.median(r["seconds"] for r in runs)
        ratio = f"{seconds / base_s:5.2f}x SB3" if base_s else "(no SB3 baseline)"
        solved = sum(r["reward"] >= TARGET for r in runs)
        print(f"  {name:32s} {seconds:6.1f} s  {ratio}  solved {solved}/{len(runs)}")


if __name__ == "__main__":
    main()
