"""Throughput during training: env steps/s of IMPALA (and APPO) next to PPO's, same run.

Target: IMPALA samples >= 8,000 env steps/s while training on CartPole-v1 with its default
config on a 2-core machine (RLlib 2.60's IMPALA: about 920). PPO is the baseline measured in
the same run, so the printed ratio does not depend on how busy the machine is.

Each measurement is a fresh process with the algorithm's default config: it trains one warm-up
iteration (start-up, first weights, compilation), then `--seconds` of training, and reports
the env steps sampled and trained per second over that window. Rounds interleave the
algorithms so background load hits them alike; the medians are printed.

    python benchmarks/throughput.py                     # impala, appo, ppo; 3 rounds
    python benchmarks/throughput.py --rounds 1 --seconds 10 --frameworks torch tf
"""

from __future__ import annotations

import argparse
import statistics

from common import run_json_subprocess

TARGET_STEPS_PER_S = 8_000

RUN_CODE = """
import json, time
import flowrl
trainer = flowrl.Trainer({algo!r}, env="CartPole-v1",
                         config={{"framework": {framework!r}, "seed": {seed}}})
try:
    first = trainer.train()
    steps0, trained0 = first["timesteps_total"], first["num_steps_trained"]
    start = time.perf_counter()
    while time.perf_counter() - start < {seconds}:
        result = trainer.train()
    elapsed = time.perf_counter() - start
    thread = result["info"].get("learner_thread", {{}})
    print(json.dumps({{
        "sampled_per_s": (result["timesteps_total"] - steps0) / elapsed,
        "trained_per_s": (result["num_steps_trained"] - trained0) / elapsed,
        "learner_updates_per_s": thread.get("updates_per_s"),
        "policy_lag_mean": thread.get("policy_lag_mean"),
        "reward": result["episode_reward_mean"]}}))
finally:
    trainer.stop()
"""


def measure(algo: str, framework: str, seconds: float, seed: int) -> dict | None:
    """One fresh-process measurement of `algo` training for `seconds` after a warm-up."""
    code = RUN_CODE.format(algo=algo, framework=framework, seconds=seconds, seed=seed)
    return run_json_subprocess(code, timeout=600 + 4 * seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--algos", nargs="*", default=["impala", "appo", "ppo"])
    parser.add_argument("--frameworks", nargs="*", default=["torch"])
    args = parser.parse_args()
    names = [(algo, framework) for framework in args.frameworks for algo in args.algos]
    runs: dict[tuple[str, str], list[dict]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        for algo, framework in names:
            result = measure(algo, framework, args.seconds, seed=round_index)
            if result is not None:
                runs[(algo, framework)].append(result)
    print(f"{'algo':14s} {'sampled/s':>10s} {'trained/s':>10s} {'vs PPO':>7s} "
          f"{'updates/s':>10s} {'lag':>5s}  per round (sampled/s)")
    for algo, framework in names:
        done = runs[(algo, framework)]
        if not done:
            print(f"{algo}-{framework:8s} failed to run")
            continue
        sampled = statistics.median(r["sampled_per_s"] for r in done)
        trained = statistics.median(r["trained_per_s"] for r in done)
        baseline = runs.get(("ppo", framework)) or []
        ratio = (sampled / statistics.median(r["sampled_per_s"] for r in baseline)
                 if baseline else float("nan"))
        updates = [r["learner_updates_per_s"] for r in done if r["learner_updates_per_s"]]
        lags = [r["policy_lag_mean"] for r in done if r["policy_lag_mean"] is not None]
        per_round = ", ".join(f"{r['sampled_per_s']:,.0f}" for r in done)
        print(f"{algo + '-' + framework:14s} {sampled:>10,.0f} {trained:>10,.0f} {ratio:>6.2f}x "
              f"{statistics.median(updates) if updates else float('nan'):>10.1f} "
              f"{statistics.median(lags) if lags else float('nan'):>5.2f}  {per_round}",
              flush=True)
    print(f"(target: impala sampled/s >= {TARGET_STEPS_PER_S:,} on 2 cores)")


if __name__ == "__main__":
    main()
