"""A Ray Tune sweep over PPO's learning rate on CartPole, with flowrl's Trainable.

    pip install 'flowrl[tune]'        # or: make setup
    python examples/tune_ppo.py       # results and checkpoints under ~/ray_results/ppo_lr_sweep

Each trial is one flowrl Trainer; Tune reports its results (`episode_reward_mean`,
`timesteps_total`, ...) and keeps its checkpoints (`Trainer.save`) in Tune's usual places.
Watch the sweep with `tensorboard --logdir ~/ray_results/ppo_lr_sweep`.
"""

from __future__ import annotations

from ray import tune

import flowrl.tune


def main() -> None:
    tuner = tune.Tuner(
        flowrl.tune.trainable("ppo"),
        param_space={
            "env": "CartPole-v1",
            "num_workers": 1,
            "lr": tune.grid_search([1e-3, 3e-4]),
        },
        tune_config=tune.TuneConfig(metric="episode_reward_mean", mode="max"),
        run_config=tune.RunConfig(
            name="ppo_lr_sweep",
            stop={"episode_reward_mean": 450, "timesteps_total": 100_000},
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=5, num_to_keep=2,
                                                    checkpoint_at_end=True),
        ),
    )
    results = tuner.fit()
    best = results.get_best_result()
    print(f"best lr: {best.config['lr']}, return {best.metrics['episode_reward_mean']:.1f} "
          f"after {best.metrics['timesteps_total']} env steps; checkpoint: {best.checkpoint}")


if __name__ == "__main__":
    main()
