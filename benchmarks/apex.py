"""Ape-X's scaling and memory: env steps/s over DQN's, and driver RSS over a long run.

Targets (2 cores, CartPole-v1, default configs):
- Ape-X (2 rollout workers, 2 replay actors, a learner thread) samples >= 1.5x the env steps/s
  of DQN in one process (`num_workers=0`), measured in the same run: each measurement is a
  fresh process that trains one warm-up iteration, then `--seconds` of training (as in
  `throughput.py`); rounds interleave the two so background load hits them alike; medians are
  compared.
- The driver's resident memory (RSS) grows < 5% over a `--minutes` Ape-X run, from the first
  sample at or after minute 1 (the replay shards are full by then) to the mean of the last
  three samples. The replay actors' RSS is printed next to it.

    python benchmarks/apex.py                          # both parts: 3 rounds x 20 s, 5 minutes
    python benchmarks/apex.py --part throughput --rounds 1 --seconds 10
    python benchmarks/apex.py --part memory --minutes 2
"""

from __future__ import annotations

import argparse
import statistics

from common import run_json_subprocess
from throughput import measure

TARGET_RATIO = 1.5
TARGET_RSS_GROWTH = 0.05

MEMORY_CODE = """
import importlib, json, os, time
import ray
import flowrl
psutil = importlib.import_module("psutil")
flowrl.init()
trainer = flowrl.Trainer("apex", env="CartPole-v1", config={{"seed": {seed}}})
driver = psutil.Process()
samples = []  # (elapsed s, driver RSS, replay actors' RSS)
start = time.monotonic()
next_sample = 0.0
try:
    while (elapsed := time.monotonic() - start) < {minutes} * 60:
        result = trainer.train()
        elapsed = time.monotonic() - start
        if elapsed >= next_sample:
            actors_rss = 0
            for proc in psutil.process_iter(["cmdline"]):
                if "ReplayActor" in " ".join(proc.info["cmdline"] or []):
                    actors_rss += proc.memory_info().rss
            samples.append((elapsed, driver.memory_info().rss, actors_rss))
            next_sample = elapsed + 10.0
finally:
    trainer.stop()
    flowrl.shutdown()
print(json.dumps({{"samples": samples, "timesteps_total": result["timesteps_total"],
                  "reward": result["episode_reward_mean"], "seconds": elapsed}}))
"""


def growth(samples: list[tuple[float, float]], from_s: float = 60.0) -> float | None:
    """Relative growth from the first sample at or after `from_s` to the mean of the last
    three samples; None when the run ended too soon.

    Examples:
        >>> round(growth([(0, 50), (60, 100), (70, 100), (80, 103), (90, 106)]), 3)
        0.03
    """
    after = [value for t, value in samples if t >= from_s]
    if len(after) < 2:
        return None
    return sum(after[-3:]) / len(after[-3:]) / after[0] - 1.0


def throughput(rounds: int, seconds: float, framework: str) -> None:
    runs: dict[str, list[dict]] = {"apex": [], "dqn": []}
    for round_index in range(rounds):
        for algo in runs:
            result = measure(algo, framework, seconds, seed=round_index)
            if result is not None:
                runs[algo].append(result)
    if not runs["apex"] or not runs["dqn"]:
        print("a throughput run failed; see the errors above")
        return
    medians = {algo: statistics.median(r["sampled_per_s"] for r in done)
               for algo, done in runs.items()}
    for algo, done in runs.items():
        per_round = ", ".join(f"{r['sampled_per_s']:,.0f}" for r in done)
        trained = statistics.median(r["trained_per_s"] for r in done)
        print(f"{algo}-{framework}: {medians[algo]:,.0f} env steps/s sampled, "
              f"{trained:,.0f} samples/s trained (per round: {per_round})")
    ratio = medians["apex"] / medians["dqn"]
    print(f"Ape-X / DQN env steps/s: {ratio:.2f}x (target >= {TARGET_RATIO}x)", flush=True)


def memory(minutes: float, seed: int) -> None:
    result = run_json_subprocess(MEMORY_CODE.format(minutes=minutes, seed=seed),
                                 timeout=600 + 90 * minutes)
    if result is None:
        print("the memory run failed; see the errors above")
        return
    samples = result["samples"]
    driver = growth([(t, d) for t, d, _ in samples])
    actors = growth([(t, a) for t, _, a in samples if a])
    mb = [(round(t), round(d / 2**20), round(a / 2**20)) for t, d, a in samples]
    print(f"Ape-X {result['seconds']:.0f} s, {result['timesteps_total']:,} env steps, "
          f"final return {result['reward']:.1f}")
    print(f"(s, driver MB, replay actors MB): {mb}")
    def show(value: float | None) -> str:
        return "n/a (run too short)" if value is None else f"{100 * value:+.1f}%"
    print(f"driver RSS growth from minute 1: {show(driver)} (target < "
          f"{100 * TARGET_RSS_GROWTH:.0f}%); replay actors: {show(actors)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["both", "throughput", "memory"], default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--framework", default="torch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.part in ("both", "throughput"):
        throughput(args.rounds, args.seconds, args.framework)
    if args.part in ("both", "memory"):
        memory(args.minutes, args.seed)


if __name__ == "__main__":
    main()
