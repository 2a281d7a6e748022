"""R2D2 on StatelessCartPole-v1 (CartPole without its velocities): env steps to a greedy
evaluation of >= 300.

Target (issue): the median over 3 seeds reaches >= 300 within 300k env steps, default config.
Each seed trains in its own process (one intra-op thread, local mode), one seed after the other;
every `--eval-every` env steps the learner's policy plays `--eval-episodes` greedy episodes
(epsilon 0, the recurrent state carried) and the seed stops at the first mean >= `--target` or
at `--max-steps`. Steps decide, not wall time (printed for reference).

    python benchmarks/r2d2.py                       # seeds 0 1 2, defaults
    python benchmarks/r2d2.py --seeds 1 --config '{"burn_in": 0}'
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

SEED_CODE = """
import json, time
import flowrl
config = {{"seed": {seed}, "min_steps_per_iteration": {eval_every},
          "evaluation_num_episodes": {eval_episodes}, **json.loads({overrides!r})}}
trainer = flowrl.Trainer("r2d2", env="StatelessCartPole-v1", config=config, local_mode=True)
start, best, reached, curve = time.monotonic(), float("-inf"), None, []
try:
    while True:
        result = trainer.train()
        steps = result["timesteps_total"]
        score = trainer.evaluate()["evaluation"]["episode_reward_mean"]
        best = max(best, score)
        curve.append((steps, round(score, 1), round(result["episode_reward_mean"], 1)))
        print(json.dumps({{"progress": curve[-1]}}), file=__import__("sys").stderr, flush=True)
        if score >= {target}:
            reached = steps
            break
        if steps >= {max_steps}:
            break
finally:
    trainer.stop()
print(json.dumps({{"reached": reached, "best": best, "steps": steps, "curve": curve,
                  "seconds": round(time.monotonic() - start, 1)}}))
"""


def run_seed(seed: int, args: argparse.Namespace) -> dict | None:
    code = SEED_CODE.format(seed=seed, eval_every=args.eval_every,
                            eval_episodes=args.eval_episodes, overrides=args.config,
                            target=args.target, max_steps=args.max_steps)
    # stderr passes through: each evaluation's progress line shows while the seed runs.
    proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=args.timeout)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=300_000)
    parser.add_argument("--target", type=float, default=300.0)
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--config", default="{}", help="JSON overrides of R2D2's config")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds per seed")
    args = parser.parse_args()
    reached = []
    for seed in args.seeds:
        out = run_seed(seed, args)
        if out is None:
            print(f"seed {seed}: failed")
            reached.append(float("inf"))
            continue
        steps = out["reached"]
        shown = (f"{steps} env steps to >= {args.target:g}" if steps is not None
                 else f"not reached within {out['steps']} env steps (best {out['best']:.1f})")
        print(f"seed {seed}: {shown}; {out['seconds']} s; curve (steps, greedy, "
              f"exploring): {out['curve']}", flush=True)
        reached.append(steps if steps is not None else float("inf"))
    median = statistics.median(reached)
    verdict = "meets" if median <= args.max_steps else "misses"
    print(json.dumps({"seeds": args.seeds, "steps_to_target": reached, "median": median,
                      "target": f">= {args.target:g} within {args.max_steps}",
                      "verdict": verdict}))


if __name__ == "__main__":
    main()
