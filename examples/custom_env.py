"""Your own environment: a gymnasium.Env registered with flowrl, and the callbacks, periodic
evaluation and observation normalization that go with it (docs/custom_env.md walks through
it).

The env is a thermostat: the observation is the room temperature and the outside
temperature (in degrees, unscaled, so the observation filter helps); the actions heat, wait
or cool; the reward is minus the distance to 21 degrees. An episode lasts 50 steps
(truncated, never terminated).

    python examples/custom_env.py                     # about 20 s, in this process
    python examples/custom_env.py --iterations 30 --ray
"""

from __future__ import annotations

import argparse
import tempfile

import gymnasium as gym
import numpy as np

import flowrl


class Thermostat(gym.Env):
    """Keep a room at 21 degrees. `env_config` may set `outside` (degrees) and `steps`."""

    def __init__(self, env_config: dict | None = None) -> None:
        config = dict(env_config or {})
        self.outside = float(config.get("outside", 5.0))
        self.max_steps = int(config.get("steps", 50))
        self.observation_space = gym.spaces.Box(-50.0, 60.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(3)  # 0: cool, 1: wait, 2: heat
        self.temperature, self.steps = 15.0, 0

    def _obs(self) -> np.ndarray:
        return np.array([self.temperature, self.outside], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.temperature = float(self.np_random.uniform(10.0, 30.0))
        self.steps = 0
        return self._obs(), {}

    def step(self, action):
        drift = 0.1 * (self.outside - self.temperature)  # the room cools toward the outside
        self.temperature += drift + (float(action) - 1.0) * 1.5
        self.steps += 1
        reward = -abs(self.temperature - 21.0)
        return self._obs(), reward, False, self.steps >= self.max_steps, {}


# Registered when this module is imported, so `flowrl rollout --env-module
# examples/custom_env.py` finds the env of a saved checkpoint again.
flowrl.register_env("Thermostat-v0", Thermostat)


class ComfortMetrics(flowrl.Callbacks):
    """Reports the share of steps within one degree of 21 as a custom metric."""

    def on_episode_start(self, *, worker, episode):
        episode.user_data["comfortable"] = 0

    def on_episode_step(self, *, worker, episode):
        episode.user_data["comfortable"] += int(episode.last_reward > -1.0)

    def on_episode_end(self, *, worker, episode):
        episode.custom_metrics["comfortable_share"] = (
            episode.user_data["comfortable"] / episode.length)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--ray", action="store_true", help="use a local Ray cluster")
    args = parser.parse_args()
    config = {
        "env_config": {"outside": 5.0},          # passed to Thermostat(env_config)
        "num_workers": 1 if args.ray else 0,
        "observation_filter": "MeanStdFilter",   # degrees in, standardized rows to the model
        "callbacks": ComfortMetrics,             # custom metrics in every record
        "evaluation_interval": 5,                # greedy episodes every 5 iterations
        "seed": 0,
    }
    trainer = flowrl.Trainer("ppo", env="Thermostat-v0", config=config, local_mode=not args.ray)
    try:
        for _ in range(args.iterations):
            result = trainer.train()
            line = (f"iter {result['training_iteration']:3d}  return "
                    f"{result['episode_reward_mean']:8.1f}  comfortable "
                    f"{result['custom_metrics']['comfortable_share_mean']:.2f}")
            if "evaluation" in result:
                line += f"  evaluation {result['evaluation']['episode_reward_mean']:8.1f}"
            print(line, flush=True)
        checkpoint = trainer.save(tempfile.mkdtemp(prefix="thermostat-"))
    finally:
        trainer.stop()
    print(f"checkpoint: {checkpoint}")
    print(f"replay it:  flowrl rollout {checkpoint} --episodes 3 --env-module "
          f"examples/custom_env.py")


if __name__ == "__main__":
    main()
