"""Memory (issue 19): recurrent PPO and IMPALA learning targets, and PPO+LSTM's speed.

Learning targets (median of 3 seeds; steps decide, wall time is printed for reference): each
seed trains in its own process (one intra-op thread, local mode) and every `eval_every` env
steps plays 10 greedy episodes with its recurrent state carried; it stops at the first mean at
or above the target, or at the budget.

    ppo-lstm       PPO + LSTM, StatelessCartPole-v1: >= 400 within 300k (tuned file
                   examples/tuned/ppo-lstm-stateless-cartpole.yaml); the same PPO without
                   memory is run beside it and must stay below 150
    ppo-repeat     PPO + LSTM, RepeatAfterMe-v0: >= 80 within 100k (same tuned file)
    impala-lstm    IMPALA + LSTM, StatelessCartPole-v1, num_sgd_iter=2: >= 150 within 1M
    speed          env steps/s on CartPole-v1 of PPO + LSTM (the tuned file) and of the same
                   PPO with the default MLP model (64, 64, tanh), run alternately in one
                   process; prints the ratio (target >= 0.5)

    python benchmarks/recurrent.py ppo-lstm ppo-repeat impala-lstm speed
    python benchmarks/recurrent.py ppo-lstm --seeds 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TUNED = ROOT / "examples" / "tuned" / "ppo-lstm-stateless-cartpole.yaml"

SEED_CODE = """
import json, sys, time
import flowrl
config = {{**json.loads({config!r}), "seed": {seed}, "evaluation_num_episodes": 10}}
trainer = flowrl.Trainer({algorithm!r}, env={env!r}, config=config, local_mode=True)
start, best, reached, curve, next_eval, steps = time.monotonic(), float("-inf"), None, [], 0, 0
try:
    while steps < {max_steps}:
        result = trainer.train()
        steps = result["timesteps_total"]
        if steps < next_eval and steps < {max_steps}:
            continue
        next_eval = steps + {eval_every}
        score = trainer.evaluate()["evaluation"]["episode_reward_mean"]
        best = max(best, score)
        curve.append((steps, round(score, 1), round(result["episode_reward_mean"], 1)))
        print(json.dumps({{"progress": curve[-1]}}), file=sys.stderr, flush=True)
        if score >= {target}:
            reached = steps
            break
finally:
    trainer.stop()
print(json.dumps({{"reached": reached, "best": best, "steps": steps, "curve": curve,
                  "seconds": round(time.monotonic() - start, 1)}}))
"""

SPEED_CODE = """
import json, time
import flowrl
base = json.loads({config!r})
recurrent = base
plain = {{**base, "model": {{}}}}  # PPO's default MLP (64, 64, tanh)
rates = {{"lstm": [], "mlp": []}}
trainers = {{name: flowrl.Trainer("ppo", env="CartPole-v1", config=config, local_mode=True)
            for name, config in (("lstm", recurrent), ("mlp", plain))}}
try:
    for name, trainer in trainers.items():
        trainer.train()  # warm up (first optimizer step, compiled functions)
    for _ in range({rounds}):
        for name, trainer in trainers.items():
            start, steps = time.perf_counter(), 0
            while time.perf_counter() - start < {seconds}:
                steps += trainer.train()["timesteps_this_iter"]
            rates[name].append(steps / (time.perf_counter() - start))
finally:
    for trainer in trainers.values():
        trainer.stop()
print(json.dumps({{name: sorted(values)[len(values) // 2] for name, values in rates.items()}}))
"""


def tuned_config(**changes: object) -> dict:
    """The tuned PPO + LSTM file, with `changes` merged in (a nested `model` is merged too)."""
    config = yaml.safe_load(TUNED.read_text())
    model = {**config.get("model", {}), **dict(changes.pop("model", {}) or {})}
    return {**config, **changes, "model": model}


TARGETS = {
    "ppo-lstm": ("ppo", "StatelessCartPole-v1", tuned_config, 300_000, 400.0, 20_000),
    "ppo-repeat": ("ppo", "RepeatAfterMe-v0", tuned_config, 100_000, 80.0, 10_000),
    "impala-lstm": ("impala", "StatelessCartPole-v1",
                    lambda: {"num_sgd_iter": 2, "model": {"use_lstm": True,
                                                          "lstm_cell_size": 64}},
                    1_000_000, 150.0, 50_000),
}


def run(code: str, timeout: float) -> dict | None:
    """Runs `code` in a fresh interpreter with one intra-op thread; its last stdout line is
    JSON (None when it fails; its stderr, with progress lines, passes through)."""
    proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=timeout)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def learning(name: str, seeds: list[int], timeout: float, *, memory: bool = True) -> float:
    """Runs one learning target over `seeds`; prints each seed and returns the median steps
    to the target (inf when a seed misses). `memory=False` drops the recurrent wrapper."""
    algorithm, env, make_config, max_steps, target, eval_every = TARGETS[name]
    config = make_config()
    if not memory:
        config["model"] = {key: value for key, value in config["model"].items()
                           if not key.startswith(("use_lstm", "use_gru", "lstm_"))}
    label = name if memory else f"{name} without memory"
    reached, bests = [], []
    for seed in seeds:
        out = run(SEED_CODE.format(config=json.dumps(config), seed=seed, algorithm=algorithm,
                                   env=env, max_steps=max_steps, eval_every=eval_every,
                                   target=target), timeout)
        if out is None:
            print(f"{label} seed {seed}: failed", flush=True)
            reached.append(float("inf"))
            continue
        bests.append(out["best"])
        steps = out["reached"]
        shown = (f"{steps} env steps to >= {target:g}" if steps is not None
                 else f"not reached within {out['steps']} env steps (best {out['best']:.1f})")
        print(f"{label} seed {seed}: {shown}; {out['seconds']} s; curve (steps, greedy, "
              f"exploring): {out['curve']}", flush=True)
        reached.append(steps if steps is not None else float("inf"))
    median = statistics.median(reached)
    print(json.dumps({"target": label, "goal": f">= {target:g} within {max_steps}",
                      "steps_to_target": reached, "median": median,
                      "best_greedy": bests, "median_best": statistics.median(bests or [0]),
                      "verdict": "meets" if median <= max_steps else "misses"}), flush=True)
    return median


def speed(rounds: int, seconds: float, timeout: float) -> None:
    """PPO + LSTM against the MLP on CartPole-v1, both with the tuned file's PPO settings."""
    out = run(SPEED_CODE.format(config=json.dumps(tuned_config()), rounds=rounds,
                                seconds=seconds), timeout)
    if out is None:
        print("speed: failed")
        return
    ratio = out["lstm"] / out["mlp"]
    print(json.dumps({"target": "speed", "lstm_steps_per_s": round(out["lstm"]),
                      "mlp_steps_per_s": round(out["mlp"]), "ratio": round(ratio, 3),
                      "verdict": "meets" if ratio >= 0.5 else "misses"}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", choices=[*TARGETS, "speed"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=5, help="speed: alternating rounds")
    parser.add_argument("--seconds", type=float, default=10.0, help="speed: seconds per round")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds per process")
    args = parser.parse_args()
    for name in args.targets:
        if name == "speed":
            speed(args.rounds, args.seconds, args.timeout)
            continue
        learning(name, args.seeds, args.timeout)
        if name == "ppo-lstm":
            learning(name, args.seeds, args.timeout, memory=False)


if __name__ == "__main__":
    main()
