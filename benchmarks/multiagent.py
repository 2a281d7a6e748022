"""Multi-agent targets on MultiAgentArena (8x8, 50 steps), and the cost of multi-agent sampling.

Targets (median over seeds, 100-episode means at 200k env steps):
    two independent PPO policies:  agent1 >= 15 and agent2 > -4.3
    composed PPO (agent1) + DQN (agent2) plan: both above the random pair
A uniformly random pair scores about +2.1 / -4.3; it is measured in the same run and printed.

Sampling cost: CPU seconds per agent step of a multi-agent worker (one policy per agent, both
agents acting) over seconds per env step of a single-agent worker on the same arena, seen by
agent1 alone (agent2 moves at random inside the env). Target <= 1.3.

Every training run is a fresh process, as `flowrl.run("ppo", env="MultiAgentArena-v0",
config=...)` runs for a user.

    python benchmarks/multiagent.py                  # everything, 3 seeds
    python benchmarks/multiagent.py --seeds 1 --only ppo sampling
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np
from common import run_json_subprocess

from flowrl.envs import MultiAgentArena

STEPS = 200_000
AGENT1_TARGET = 15.0

PPO_CONFIG = {
    "num_workers": 0, "num_envs_per_worker": 8, "rollout_fragment_length": 100,
    "train_batch_size": 4000, "sgd_minibatch_size": 500, "num_sgd_iter": 10, "lr": 3e-4,
    "entropy_coeff": 0.01,
    "policies": {"agent1": {}, "agent2": {}},
    "policy_mapping": {"agent1": "agent1", "agent2": "agent2"},
}
"""Two independent PPO policies, one per agent."""

COMPOSED_CONFIG = {
    **PPO_CONFIG,
    "policies": {"agent1": {}, "agent2": {"algo": "dqn", "config": {
        "training_intensity": 1.0, "train_batch_size": 64, "learning_starts": 2000,
        "exploration_timesteps": 50_000, "target_network_update_freq": 2000,
        "model": {"fcnet_hiddens": [64, 64]}}}},
}
"""agent1 learns with PPO, agent2 with DQN, in one composed plan."""

RUN_CODE = """
import json, time
start = time.perf_counter()
import flowrl
from flowrl.plans.multiagent import multiagent_plan
config = {config!r}
result = flowrl.run("ppo", env="MultiAgentArena-v0", verbose=0,
                    config={{**config, "framework": {framework!r}, "seed": {seed}}},
                    plan=multiagent_plan if {composed!r} else None,
                    stop={{"timesteps_total": {steps}}})
rewards = result["policy_reward_mean"]
print(json.dumps({{"steps": result["timesteps_total"], "agent1": rewards["agent1"],
                  "agent2": rewards["agent2"], "train_s": result["time_total_s"],
                  "wall_s": time.perf_counter() - start}}))
"""


def random_pair_returns(episodes: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean episode return of each agent when both act uniformly at random."""
    env = MultiAgentArena()
    rng = np.random.default_rng(seed)
    totals = {"agent1": 0.0, "agent2": 0.0}
    for episode in range(episodes):
        env.reset(seed=seed * 100_000 + episode)
        while env.agents:
            _, rewards, _, _, _ = env.step({a: int(rng.integers(4)) for a in env.agents})
            for agent, reward in rewards.items():
                totals[agent] += reward
    return {agent: total / episodes for agent, total in totals.items()}


def train_runs(name: str, config: dict, seeds: int, framework: str, composed: bool,
               random_pair: dict[str, float]) -> None:
    runs = []
    for seed in range(seeds):
        code = RUN_CODE.format(config=config, framework=framework, seed=seed, steps=STEPS,
                               composed=composed)
        run = run_json_subprocess(code, timeout=3600)
        if run is not None:
            runs.append(run)
            print(f"  {name} seed {seed}: agent1 {run['agent1']:+.2f}, agent2 "
                  f"{run['agent2']:+.2f} at {run['steps']:,} steps, {run['train_s']:.0f} s "
                  f"training", flush=True)
    if not runs:
        print(f"{name}: every run failed")
        return
    agent1 = statistics.median(r["agent1"] for r in runs)
    agent2 = statistics.median(r["agent2"] for r in runs)
    if composed:
        passed = agent1 > random_pair["agent1"] and agent2 > random_pair["agent2"]
        goal = "both above the random pair"
    else:
        passed = agent1 >= AGENT1_TARGET and agent2 > random_pair["agent2"]
        goal = f"agent1 >= {AGENT1_TARGET:g}, agent2 > random"
    print(f"{name:24s} median of {len(runs)}: agent1 {agent1:+.2f}, agent2 {agent2:+.2f} "
          f"({goal}: {'PASS' if passed else 'FAIL'})", flush=True)


class Agent1Only(gym.Env):
    """The arena seen by agent1 alone: agent2 moves uniformly at random inside the env."""

    def __init__(self, config: dict | None = None) -> None:
        self.arena = MultiAgentArena(config)
        self.observation_space = self.arena.observation_space("agent1")
        self.action_space = self.arena.action_space("agent1")
        self.rng = np.random.default_rng(0)

    def reset(self, *, seed=None, options=None):
        observations, _ = self.arena.reset(seed=seed)
        return observations["agent1"], {}

    def step(self, action):
        observations, rewards, terminations, truncations, _ = self.arena.step(
            {"agent1": action, "agent2": int(self.rng.integers(4))})
        return (observations["agent1"], rewards["agent1"], terminations["agent1"],
                truncations["agent1"], {})


def sampling_cost(rounds: int = 9) -> None:
    """Seconds per agent step (multi-agent) over seconds per env step (single agent)."""
    import flowrl
    from flowrl.config import from_dict
    from flowrl.plans.ppo import PPO_POLICY, PPOConfig
    from flowrl.workers import RolloutWorker
    from flowrl.workers.multi_agent import MultiAgentRolloutWorker, MultiAgentSetup

    flowrl.init(local_mode=True)
    config = from_dict(PPOConfig, {"num_envs_per_worker": 8, "rollout_fragment_length": 100,
                                   "train_batch_size": 800, "seed": 0})
    common = dict(num_envs=8, rollout_fragment_length=100, seed=0, worker_index=1,
                  num_workers=1, num_threads=1)
    single_env = Agent1Only()
    single = RolloutWorker(env_creator=Agent1Only, env_config={}, policy_spec=PPO_POLICY,
                           config=config, observation_space=single_env.observation_space,
                           action_space=single_env.action_space, **common)
    setup = MultiAgentSetup.from_env(
        MultiAgentArena(), {"agent1": (PPO_POLICY, config), "agent2": (PPO_POLICY, config)},
        {"agent1": "agent1", "agent2": "agent2"})
    multi = MultiAgentRolloutWorker(env_creator=MultiAgentArena, env_config={},
                                    multi_agent=setup, **common)
    single.sample(), multi.sample()  # warm-up
    ratios = []
    # CPU time of this (single-threaded) process, so that other load on a shared machine does
    # not count; rounds interleave the two workers.
    for _ in range(rounds):
        start = time.process_time()
        steps = len(single.sample())
        per_env_step = (time.process_time() - start) / steps
        start = time.process_time()
        agent_steps = multi.sample().agent_steps()
        per_agent_step = (time.process_time() - start) / agent_steps
        ratios.append(per_agent_step / per_env_step)
    print(f"sampling: multi-agent CPU s/agent-step over single-agent CPU s/env-step, median of "
          f"{rounds} rounds: {statistics.median(ratios):.2f} (target <= 1.3; rounds "
          f"{', '.join(f'{r:.2f}' for r in ratios)})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--framework", default="torch", choices=["torch", "tf"])
    parser.add_argument("--only", nargs="*", choices=["ppo", "composed", "sampling"],
                        help="parts to run (default: all)")
    args = parser.parse_args()
    parts = args.only or ["ppo", "composed", "sampling"]
    random_pair = random_pair_returns()
    print(f"random pair: agent1 {random_pair['agent1']:+.2f}, agent2 "
          f"{random_pair['agent2']:+.2f} (mean of 2000 episodes)", flush=True)
    if "ppo" in parts:
        train_runs("PPO + PPO", PPO_CONFIG, args.seeds, args.framework, False, random_pair)
    if "composed" in parts:
        train_runs("composed PPO + DQN", COMPOSED_CONFIG, args.seeds, args.framework, True,
                   random_pair)
    if "sampling" in parts:
        sampling_cost()


if __name__ == "__main__":
    main()
