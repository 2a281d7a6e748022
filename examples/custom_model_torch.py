"""Train PPO on CartPole-v1 with your own PyTorch network in place of the built-in one.

A model is an ordinary `torch.nn.Module` that meets its algorithm's model contract; PPO's is
`forward(obs) -> (dist_inputs [B, num_outputs], values [B])` (see docs/architecture.md, "The
model contract"). flowrl builds it as `Model(obs_shape, action_space, num_outputs,
model_config, **custom_model_config)`.

    python examples/custom_model_torch.py --local     # in this process, a short run
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

import flowrl


class ActorCritic(nn.Module):
    """Separate policy and value MLPs; the policy head starts small (near-uniform actions)."""

    def __init__(self, obs_shape, action_space, num_outputs, model_config, hidden=64):
        super().__init__()
        size = int(np.prod(obs_shape))
        self.pi = nn.Sequential(nn.Linear(size, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                nn.Tanh(), nn.Linear(hidden, num_outputs))
        self.vf = nn.Sequential(nn.Linear(size, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        nn.init.orthogonal_(self.pi[-1].weight, gain=0.01)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs.float().reshape(obs.shape[0], -1)
        return self.pi(x), self.vf(x).squeeze(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--local", action="store_true", help="run in-process, without Ray")
    parser.add_argument("--iterations", type=int, default=15)
    args = parser.parse_args()
    result = flowrl.run(
        "ppo", env="CartPole-v1", local_mode=args.local,
        config={"framework": "torch", "seed": 0, "num_workers": 0 if args.local else 2,
                "lr": 3e-4, "train_batch_size": 2048, "num_sgd_iter": 10,
                "model": {"custom_model": ActorCritic, "custom_model_config": {"hidden": 64}}},
        stop={"training_iteration": args.iterations, "episode_reward_mean": 450})
    print(f"mean return {result['episode_reward_mean']:.1f} after "
          f"{result['timesteps_total']:,} steps")


if __name__ == "__main__":
    main()
