"""ES and ARS: learning targets, throughput with 1 and 2 workers, driver CPU share, noise table.

Targets (issue 20; median over seeds):
    ARS (linear) CartPole-v1  >= 475 within   100k env steps
    ES           CartPole-v1  >= 475 within     1M env steps
    ARS          Pendulum-v1  >= -300 within    2M env steps
    env steps/s with 2 rollout workers >= 1.6x with 1 (2 cores); driver CPU < 10% of an iteration
    noise-table creation time and object-store bytes per node (one copy per node, 2-node cluster)

"Reached" means: after an update, 10 noise-free episodes of the current weights (run by this
script, not counted in env steps) average at least the target. Env steps count every episode
the workers ran: perturbed, stale (dropped) and their own evaluation episodes. Every run is a
fresh process on a local Ray cluster with the tuned config named below.

    python benchmarks/gradient_free.py learning --only ars-cartpole --seeds 0 1 2
    python benchmarks/gradient_free.py throughput
    python benchmarks/gradient_free.py noise-table
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from common import run_json_subprocess

ROOT = Path(__file__).resolve().parents[1]

# name: (algo, env, target, max env steps, tuned config, evaluate every this many env steps)
TUNED = {
    "ars-cartpole": ("ars", "CartPole-v1", 475.0, 100_000, "examples/tuned/ars-cartpole.yaml",
                     0),
    "es-cartpole": ("es", "CartPole-v1", 475.0, 1_000_000, "examples/tuned/es-cartpole.yaml",
                    0),
    "ars-pendulum": ("ars", "Pendulum-v1", -300.0, 2_000_000,
                     "examples/tuned/ars-pendulum.yaml", 10_000),
}

LEARN_CODE = """
import json, time, sys
import gymnasium as gym, numpy as np, yaml, flowrl
algo, env_id, target, max_steps, tuned, every, seed, workers = {args!r}
config = yaml.safe_load(open(tuned))
config.update(seed=seed, num_workers=workers)
flowrl.init(num_cpus=2)
trainer = flowrl.Trainer(algo, env=env_id, config=config)
policy = trainer.get_policy()
env = gym.make(env_id)

def evaluate(episodes=10):
    total = 0.0
    for episode in range(episodes):
        obs, _ = env.reset(seed=10_000 + episode)
        done = False
        while not done:
            action = policy.compute_actions_with(policy.flat_weights, obs[None])[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total += reward
            done = terminated or truncated
    return total / episodes

start = time.perf_counter()
reached, best, steps, curve, last = None, -1e9, 0, [], -10**9
while steps < max_steps:
    result = trainer.train()
    steps = result["timesteps_total"]
    if steps - last < every:
        continue
    last = steps
    score = evaluate()
    best = max(best, score)
    curve.append((steps, round(score, 1)))
    if score >= target:
        reached = steps
        break
wall = time.perf_counter() - start
counters = result["info"]["counters"]
trainer.stop()
print(json.dumps(dict(reached=reached, best=best, steps=steps, wall_s=wall,
                      stale=counters.get("gradient_free/stale_results_dropped", 0),
                      iterations=result["training_iteration"], curve=curve[-5:])))
"""

THROUGHPUT_CODE = """
import json, time
import flowrl
workers, iterations = {args!r}
flowrl.init(num_cpus=2)
config = dict(num_workers=workers, seed=0, noise_size=25_000_000, ars_num_directions=32,
              ars_top_directions=32, pairs_per_request=2, eval_prob=0.0, noise_stdev=0.02)
trainer = flowrl.Trainer("ars", env="Pendulum-v1", config=config)
trainer.train()  # warm-up: creates the table, starts the workers
creation = trainer.metrics.info["gradient_free/noise_table_creation_s"]
steps0, wall0, cpu0 = trainer.metrics.counters["sampler/env_steps"], time.perf_counter(), \
    time.process_time()
for _ in range(iterations):
    result = trainer.train()
wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
steps = result["timesteps_total"] - steps0
trainer.stop()
print(json.dumps(dict(workers=workers, env_steps_per_s=steps / wall,
                      driver_cpu_share=cpu / wall, noise_creation_s=creation)))
"""

NOISE_CODE = """
import json, time
import numpy as np, ray
from ray.cluster_utils import Cluster
from ray._private.internal_api import node_stats
from flowrl.iter import executor
from flowrl.workers.noise_table import SharedNoiseTable
size = {args!r}
store = 400 * 2**20
cluster = Cluster(initialize_head=True, head_node_args=dict(
    num_cpus=2, object_store_memory=store, resources={{"node_a": 2}}))
cluster.add_node(num_cpus=2, object_store_memory=store, resources={{"node_b": 2}})
cluster.wait_for_nodes()
ray.init(address=cluster.address)
executor.init(local_mode=False, address=cluster.address)

def used_bytes():
    out = {{}}
    for node in ray.nodes():
        name = "node_a" if "node_a" in node["Resources"] else "node_b"
        stats = node_stats(node["NodeManagerAddress"], node["NodeManagerPort"])
        out[name] = int(stats.store_stats.object_store_bytes_used)
    return out

before = used_bytes()
table = SharedNoiseTable(size=size, seed=1)
start = time.perf_counter()
table.create()
creation_s = time.perf_counter() - start
after_create = used_bytes()

@ray.remote(num_cpus=0)
class Reader:
    def read(self, table):
        view = table.view()
        self.view = view  # keep the mapping, as a rollout worker does
        return dict(node=ray.get_runtime_context().get_node_id()[:8],
                    writeable=bool(view.flags.writeable), owndata=bool(view.flags.owndata),
                    checksum=float(view[:1000].sum()))

# Two readers on each node: they map the node's one copy.
readers = [Reader.options(resources={{node: 1}}).remote()
           for node in ("node_a", "node_a", "node_b", "node_b")]
answers = ray.get([r.read.remote(table) for r in readers])
after_read = used_bytes()
print(json.dumps(dict(noise_size=size, table_bytes=table.nbytes, creation_s=creation_s,
                      readers=answers, store_bytes_before=before,
                      store_bytes_after_create=after_create,
                      store_bytes_after_4_readers=after_read)))
ray.shutdown()
cluster.shutdown()
"""


def learning(names: list[str], seeds: list[int], workers: int) -> None:
    for name in names:
        algo, env_id, target, max_steps, tuned, every = TUNED[name]
        runs = []
        for seed in seeds:
            args = (algo, env_id, target, max_steps, str(ROOT / tuned), every, seed, workers)
            out = run_json_subprocess(LEARN_CODE.format(args=args), timeout=3000)
            print(f"{name} seed {seed}: {out}", flush=True)
            runs.append(out)
        reached = [r["reached"] if r and r["reached"] else float("inf") for r in runs]
        median = statistics.median(reached)
        verdict = "PASS" if median <= max_steps else "FAIL"
        print(f"{name}: target {target} within {max_steps} env steps: median steps "
              f"{median} over seeds {seeds} -> {verdict}", flush=True)


def throughput(iterations: int) -> None:
    rates = {}
    for workers in (1, 2):
        out = run_json_subprocess(THROUGHPUT_CODE.format(args=(workers, iterations)), 1200)
        print(json.dumps(out), flush=True)
        rates[workers] = out["env_steps_per_s"] if out else float("nan")
    print(f"2 workers / 1 worker: {rates[2] / rates[1]:.2f}x (target >= 1.6x)", flush=True)


def noise_table(size: int) -> None:
    out = run_json_subprocess(NOISE_CODE.format(args=size), 600)
    print(json.dumps(out), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    learn = sub.add_parser("learning")
    learn.add_argument("--only", nargs="*", default=list(TUNED), choices=list(TUNED))
    learn.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    learn.add_argument("--workers", type=int, default=2)
    speed = sub.add_parser("throughput")
    speed.add_argument("--iterations", type=int, default=10)
    noise = sub.add_parser("noise-table")
    noise.add_argument("--size", type=int, default=25_000_000)
    args = parser.parse_args()
    if args.command == "learning":
        learning(args.only, args.seeds, args.workers)
    elif args.command == "throughput":
        throughput(args.iterations)
    else:
        noise_table(args.size)
    return None


if __name__ == "__main__":
    sys.exit(main())
