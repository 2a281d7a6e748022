"""Train PPO on CartPole-v1 until the 100-episode mean return reaches 450.

    python examples/run_ppo.py            # on a local Ray cluster that starts by itself
    python examples/run_ppo.py --local    # everything in this process (pdb works)
"""

from __future__ import annotations

import argparse

import flowrl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--local", action="store_true", help="run in-process, without Ray")
    parser.add_argument("--framework", choices=["torch", "tf"], default="torch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = flowrl.run(
        "ppo",
        env="CartPole-v1",
        config={"framework": args.framework, "seed": args.seed},
        stop={"episode_reward_mean": 450, "timesteps_total": 300_000},
        local_mode=args.local,
    )
    print(f"reached {result['episode_reward_mean']:.1f} after {result['timesteps_total']:,} "
          f"steps in {result['time_total_s']:.1f} s of training")


if __name__ == "__main__":
    main()
