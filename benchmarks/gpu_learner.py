"""GPU learner: IMPALA's learner updates/s and env steps/s with the learner on CPU and on GPU.

IMPALA on CartPole-v1 with a larger network (`fcnet_hiddens` [512, 512] by default), once with
the learner on the CPU (`num_gpus=0`) and once on the GPU (`num_gpus=1`); the rollout workers
act on the CPU both times. Each measurement is a fresh process: one warm-up iteration
(start-up, first weights, CUDA initialisation), then `--seconds` of training. It reports
learner updates per second (from the learner thread's `num_updates` over the window, and
`info/learner_thread/updates_per_s`, the rate over the last 100 updates), env steps sampled
and trained per second (`timesteps_total` and `num_steps_trained` over the window) and the
policy lag. Two 60 s measurements take under 4 minutes with start-up.

Needs a GPU: without one it exits at once, saying so.

    python benchmarks/gpu_learner.py                       # torch, 60 s each
    python benchmarks/gpu_learner.py --seconds 30 --hiddens 1024 1024 --num-workers 8
    python benchmarks/gpu_learner.py --framework tf
"""

from __future__ import annotations

import argparse
import sys

from common import run_json_subprocess

RUN_CODE = """
import json, time
import flowrl
config = {{"framework": {framework!r}, "seed": 0, "num_gpus": {num_gpus},
          "num_workers": {num_workers}, "model": {{"fcnet_hiddens": {hiddens!r}}}}}
if {learner_threads!r} is not None:
    config["learner_num_threads"] = {learner_threads!r}
trainer = flowrl.Trainer("impala", env="CartPole-v1", config=config)
try:
    first = trainer.train()
    thread0 = first["info"]["learner_thread"]
    steps0, trained0 = first["timesteps_total"], first["num_steps_trained"]
    updates0 = thread0["num_updates"]
    start = time.perf_counter()
    while time.perf_counter() - start < {seconds}:
        result = trainer.train()
    elapsed = time.perf_counter() - start
    thread = result["info"]["learner_thread"]
    print(json.dumps({{
        "updates_per_s": (thread["num_updates"] - updates0) / elapsed,
        "recent_updates_per_s": thread["updates_per_s"],
        "sampled_per_s": (result["timesteps_total"] - steps0) / elapsed,
        "trained_per_s": (result["num_steps_trained"] - trained0) / elapsed,
        "learn_time_ms": thread["learn_time_ms"],
        "policy_lag_mean": thread.get("policy_lag_mean"),
        "device": str(getattr(trainer.get_policy(), "device", None)),
        "reward": result["episode_reward_mean"]}}))
finally:
    trainer.stop()
"""


def visible_gpus(framework: str) -> tuple[int, str]:
    """(GPUs the framework sees, how they were counted)."""
    if framework == "torch":
        import torch

        return torch.cuda.device_count(), "torch.cuda.device_count()"
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU")), 'tf.config.list_physical_devices("GPU")'


def measure(num_gpus: int, args: argparse.Namespace) -> dict | None:
    code = RUN_CODE.format(framework=args.framework, num_gpus=num_gpus, hiddens=args.hiddens,
                           num_workers=args.num_workers, seconds=args.seconds,
                           learner_threads=args.cpu_learner_threads if not num_gpus else None)
    return run_json_subprocess(code, timeout=300 + 2 * args.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="training time measured per device, after one warm-up iteration")
    parser.add_argument("--framework", choices=("torch", "tf"), default="torch")
    parser.add_argument("--hiddens", type=int, nargs="+", default=[512, 512],
                        help="the model's fcnet_hiddens")
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--cpu-learner-threads", type=int, default=None,
                        help="learner_num_threads of the CPU run (default: IMPALA's, 1)")
    args = parser.parse_args()
    count, how = visible_gpus(args.framework)
    if count == 0:
        sys.exit(f"benchmarks/gpu_learner.py compares a CPU and a GPU learner, but this machine "
                 f"has no GPU that {args.framework} sees ({how} == 0). Run it on a machine "
                 f"with a GPU (and a CUDA build of {args.framework}).")
    print(f"IMPALA, CartPole-v1, {args.framework}, fcnet_hiddens={args.hiddens}, "
          f"num_workers={args.num_workers}, {args.seconds:g} s per device ({count} GPU(s) "
          f"visible)", flush=True)
    rows = {}
    for label, num_gpus in (("cpu", 0), ("gpu", 1)):
        rows[label] = measure(num_gpus, args)
        if rows[label] is None:
            sys.exit(f"the {label} learner run failed (its stderr is above)")
    print(f"{'learner':8s} {'device':>8s} {'updates/s':>10s} {'recent':>8s} {'ms/update':>10s} "
          f"{'sampled/s':>10s} {'trained/s':>10s} {'lag':>5s} {'reward':>7s}")
    for label, row in rows.items():
        lag = row["policy_lag_mean"]
        print(f"{label:8s} {row['device']:>8s} {row['updates_per_s']:10.2f} "
              f"{row['recent_updates_per_s']:8.2f} {row['learn_time_ms']:10.1f} "
              f"{row['sampled_per_s']:10.0f} {row['trained_per_s']:10.0f} "
              f"{lag if lag is not None else float('nan'):5.1f} {row['reward']:7.1f}")
    cpu, gpu = rows["cpu"], rows["gpu"]
    if cpu["updates_per_s"] > 0 and cpu["sampled_per_s"] > 0:
        print(f"GPU / CPU: learner updates/s x{gpu['updates_per_s'] / cpu['updates_per_s']:.2f}, "
              f"env steps/s x{gpu['sampled_per_s'] / cpu['sampled_per_s']:.2f}")


if __name__ == "__main__":
    main()
