"""Two algorithms in one plan: agent1 learns with PPO, agent2 with DQN, on MultiAgentArena.

Both policies act in the same rollout workers. A DQN policy under a PPO trainer makes the
Trainer run `flowrl.plans.multiagent.multiagent_plan`: it splits every rollout by policy
(`SelectExperiences`) and runs `ppo_flow` for agent1's policy and `dqn_flow` (its own replay
buffer, store and replay-train flows) for agent2's, joined with `Concurrently`. The plan,
printed first, shows both branches.

    python examples/ppo_dqn_multiagent.py              # about 100k env steps
    python examples/ppo_dqn_multiagent.py --steps 20000 --local-mode
"""

from __future__ import annotations

import argparse

import flowrl

CONFIG = {
    "num_workers": 1,
    "num_envs_per_worker": 8,
    "rollout_fragment_length": 100,
    "train_batch_size": 4000,
    "sgd_minibatch_size": 500,
    "num_sgd_iter": 10,
    "lr": 3e-4,
    "entropy_coeff": 0.01,
    "min_steps_per_iteration": 4000,
    "policies": {
        "explorer": {},  # the trainer's own algorithm: PPO
        "chaser": {"algo": "dqn", "config": {
            "training_intensity": 1.0, "train_batch_size": 64, "learning_starts": 2000,
            "exploration_timesteps": 50_000, "target_network_update_freq": 2000,
            "model": {"fcnet_hiddens": [64, 64]}}},
    },
    "policy_mapping": {"agent1": "explorer", "agent2": "chaser"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--framework", default="torch", choices=["torch", "tf"])
    parser.add_argument("--local-mode", action="store_true", help="run without Ray")
    args = parser.parse_args()
    config = {**CONFIG, "framework": args.framework, "seed": 0}
    trainer = flowrl.Trainer("ppo", env="MultiAgentArena-v0", config=config,
                             local_mode=args.local_mode)
    print(trainer.plan)
    try:
        result = trainer.train()
        while result["timesteps_total"] < args.steps:
            rewards = result["policy_reward_mean"]
            print(f"{result['timesteps_total']:>8,} env steps: explorer (PPO) "
                  f"{rewards['explorer']:+6.2f}, chaser (DQN) {rewards['chaser']:+6.2f}",
                  flush=True)
            result = trainer.train()
    finally:
        trainer.stop()


if __name__ == "__main__":
    main()
