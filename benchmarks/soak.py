"""Soak test: PPO on CartPole-v1 on Ray with a rollout worker killed every 30 s, against the same
run with no kills.

Each arm runs in a fresh process for the same wall-clock duration. The faults arm must still
reach a 100-episode mean return of 450, count every sampled step exactly once, and keep the
driver's and the workers' resident memory (RSS) from growing more than 5% from minute 2 to the
end. The cost of the faults is the ratio of env steps/s, faults arm over clean arm.

    python benchmarks/soak.py                 # 10 minutes per arm
    python benchmarks/soak.py --minutes 3     # a shorter soak
    python benchmarks/soak.py --arm faults    # one arm only, printed as JSON

How steps are audited: a driver-side tap right after the plan's rollouts records every batch
the workers deliver (rows, and a fingerprint of its observations, episode ids and step indices).
Exactly once means the rows the tap saw equal `timesteps_total`, and no batch came twice.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

TARGET = 450.0
MAX_RSS_GROWTH = 0.05
TUNED = Path(__file__).resolve().parent.parent / "examples" / "tuned" / "ppo-cartpole.yaml"
# Memory is sampled this often; growth compares the samples at minute 2 with the last ones.
RSS_SAMPLE_EVERY_S = 10.0
RSS_BASELINE_FROM_S = 120.0


class StepAudit:
    """Driver-side tap on the rollouts: counts rows and spots a batch delivered twice."""

    def __init__(self) -> None:
        self.rows = 0
        self.batches = 0
        self.duplicates = 0
        self._seen: set[str] = set()

    def __call__(self, batch: Any) -> Any:
        digest = hashlib.blake2b(digest_size=16)
        for column in ("obs", "eps_id", "t"):
            digest.update(batch[column].tobytes())
        fingerprint = digest.hexdigest()
        self.duplicates += fingerprint in self._seen
        self._seen.add(fingerprint)
        self.rows += len(batch)
        self.batches += 1
        return batch

    def __repr__(self) -> str:
        return "StepAudit()"


def audited_ppo_plan(audit: StepAudit):
    """flowrl's PPO flow with ``audit`` tapped in right after the rollouts."""
    from flowrl.ops import ParallelRollouts
    from flowrl.plans.ppo import ppo_flow

    def plan(workers, config):
        rollouts = ParallelRollouts(workers, mode="bulk_sync").for_each(audit)
        return ppo_flow(rollouts, workers, config)

    return plan


class WorkerKiller(threading.Thread):
    """Kills one remote rollout worker (round robin) every ``every_s`` seconds."""

    def __init__(self, workers: Any, every_s: float) -> None:
        super().__init__(daemon=True, name="soak-worker-killer")
        self.workers, self.every_s = workers, every_s
        self.kills = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        import ray

        while not self.stopped.wait(self.every_s):
            handles = self.workers.remote_workers()
            ray.kill(handles[self.kills % len(handles)], no_restart=True)
            self.kills += 1


def _worker_pid(worker: Any) -> int:
    return os.getpid()


def _worker_rss_bytes(workers: Any, psutil: Any) -> list[int]:
    """RSS of each remote worker that answers now (a dead one is skipped)."""
    from flowrl.iter import ActorDiedError, executor

    rss = []
    for handle in workers.remote_workers():
        try:
            pid = executor.get(executor.call(handle, "apply", _worker_pid), timeout=10)
            rss.append(psutil.Process(pid).memory_info().rss)
        except (ActorDiedError, psutil.Error):
            continue
        except TimeoutError:  # ray.exceptions.GetTimeoutError is a TimeoutError
            continue
    return rss


def run_arm(minutes: float, kill_every_s: float | None, seed: int, num_workers: int) -> dict:
    """Trains PPO for ``minutes`` (killing workers if ``kill_every_s``); returns the figures."""
    import importlib

    import ray  # noqa: F401 - puts Ray's bundled psutil on the path

    import flowrl
    from flowrl.config import load_config_file

    psutil = importlib.import_module("psutil")
    flowrl.init(num_cpus=num_workers)
    config = {**load_config_file(str(TUNED)), "seed": seed, "num_workers": num_workers,
              "num_cpus_per_worker": 1, "max_worker_restarts": 10}
    audit = StepAudit()
    trainer = flowrl.Trainer("ppo", env="CartPole-v1", config=config,
                             plan=audited_ppo_plan(audit))
    killer = WorkerKiller(trainer.workers, kill_every_s) if kill_every_s else None
    driver = psutil.Process()
    memory: list[tuple[float, int, float]] = []  # (elapsed s, driver RSS, mean worker RSS)
    first_target_s = None
    best = float("-inf")
    start = time.monotonic()
    next_memory_sample = 0.0
    if killer is not None:
        killer.start()
    try:
        while (elapsed := time.monotonic() - start) < minutes * 60:
            result = trainer.train()
            elapsed = time.monotonic() - start
            reward = result["episode_reward_mean"]
            if reward == reward:  # not NaN
                best = max(best, reward)
                if reward >= TARGET and first_target_s is None:
                    first_target_s = elapsed
            if elapsed >= next_memory_sample:
                workers_rss = _worker_rss_bytes(trainer.workers, psutil)
                mean_worker = sum(workers_rss) / len(workers_rss) if workers_rss else float("nan")
                memory.append((elapsed, driver.memory_info().rss, mean_worker))
                next_memory_sample = elapsed + RSS_SAMPLE_EVERY_S
    finally:
        if killer is not None:
            killer.stopped.set()
            killer.join()
        trainer.stop()
        flowrl.shutdown()
    steps = result["timesteps_total"]
    return {
        "seconds": elapsed,
        "timesteps_total": steps,
        "env_steps_per_s": steps / elapsed,
        "reached_target": first_target_s is not None,
        "first_target_s": first_target_s,
        "best_reward_mean": best,
        "final_reward_mean": result["episode_reward_mean"],
        "kills": killer.kills if killer else 0,
        "worker_restarts": result["num_worker_restarts"],
        "audited_rows": audit.rows,
        "audited_batches": audit.batches,
        "duplicate_batches": audit.duplicates,
        "driver_rss_growth": _growth([(t, d) for t, d, _ in memory]),
        "worker_rss_growth": _growth([(t, w) for t, _, w in memory if w == w]),
        "driver_rss_mb_end": memory[-1][1] / 2**20 if memory else None,
    }


def _growth(samples: list[tuple[float, float]]) -> float | None:
    """Relative RSS growth from the first sample at or after minute 2 to the mean of the last
    three samples; None when the run ended before minute 2."""
    after = [value for t, value in samples if t >= RSS_BASELINE_FROM_S]
    if len(after) < 2:
        return None
    return sum(after[-3:]) / len(after[-3:]) / after[0] - 1.0


def _run_arm_subprocess(arm: str, args: argparse.Namespace) -> dict | None:
    command = [sys.executable, __file__, "--arm", arm, "--minutes", str(args.minutes),
               "--kill-every", str(args.kill_every), "--seed", str(args.seed),
               "--num-workers", str(args.num_workers)]
    proc = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=args.minutes * 60 + 600)
    if proc.returncode != 0:
        print(f"{arm} arm failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _percent(value: float | None) -> str:
    return "n/a (shorter than 2 min)" if value is None else f"{value * 100:+.1f}%"


def _report(results: dict[str, dict | None]) -> None:
    print("\nSoak: PPO on CartPole-v1 on Ray, same duration per arm")
    for arm, r in results.items():
        if r is None:
            print(f"  {arm:6s} failed")
            continue
        exact = r["audited_rows"] == r["timesteps_total"] and r["duplicate_batches"] == 0
        target = (f"reached {TARGET:.0f} at {r['first_target_s']:.0f} s"
                  if r["reached_target"] else f"did NOT reach {TARGET:.0f}")
        print(f"  {arm:6s} {r['seconds']:6.0f} s  {r['timesteps_total']:>9,} steps  "
              f"{r['env_steps_per_s']:7.0f} steps/s  {target} (best {r['best_reward_mean']:.1f})"
              f"\n         kills {r['kills']}, restarts {r['worker_restarts']}, "
              f"steps counted exactly once: {exact} ({r['audited_rows']:,} rows tapped in "
              f"{r['audited_batches']:,} batches, {r['duplicate_batches']} duplicates)"
              f"\n         RSS growth from minute 2: driver {_percent(r['driver_rss_growth'])}, "
              f"workers {_percent(r['worker_rss_growth'])} (limit "
              f"{MAX_RSS_GROWTH * 100:.0f}%)")
    faults, clean = results.get("faults"), results.get("clean")
    if faults and clean:
        ratio = faults["env_steps_per_s"] / clean["env_steps_per_s"]
        print(f"  cost of faults: env steps/s ratio faults/clean = {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="duration of each arm")
    parser.add_argument("--kill-every", type=float, default=30.0,
                        help="seconds between worker kills in the faults arm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--arm", choices=["both", "faults", "clean"], default="both",
                        help="'both' runs each arm in a fresh process and compares them")
    args = parser.parse_args()
    if args.minutes <= 0 or args.kill_every <= 0 or args.num_workers < 1:
        parser.error("--minutes and --kill-every must be > 0 and --num-workers >= 1; got "
                     f"{args.minutes}, {args.kill_every} and {args.num_workers}.")
    if args.arm != "both":
        kill_every = args.kill_every if args.arm == "faults" else None
        print(json.dumps(run_arm(args.minutes, kill_every, args.seed, args.num_workers)))
        return
    results = {}
    for arm in ("faults", "clean"):
        print(f"running the {arm} arm for {args.minutes:g} min ...", flush=True)
        results[arm] = _run_arm_subprocess(arm, args)
    _report(results)


if __name__ == "__main__":
    main()
