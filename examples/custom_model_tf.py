"""Train PPO on CartPole-v1 with your own Keras network in place of the built-in one.

A model is an ordinary Keras model that meets its algorithm's model contract; PPO's is
`call(obs) -> (dist_inputs [B, num_outputs], values [B])` (see docs/architecture.md, "The
model contract"). flowrl builds it as `Model(obs_shape, action_space, num_outputs,
model_config, **custom_model_config)` and calls it inside its compiled `tf.function`s.

    python examples/custom_model_tf.py --local     # in this process, a short run
"""

from __future__ import annotations

import argparse

import keras
import tensorflow as tf

import flowrl


class ActorCritic(keras.Model):
    """Separate policy and value MLPs; the policy head starts small (near-uniform actions)."""

    def __init__(self, obs_shape, action_space, num_outputs, model_config, hidden=64):
        super().__init__()
        self.pi_hidden = [keras.layers.Dense(hidden, activation="tanh") for _ in range(2)]
        self.pi_out = keras.layers.Dense(
            num_outputs, kernel_initializer=keras.initializers.Orthogonal(gain=0.01))
        self.vf_hidden = keras.layers.Dense(hidden, activation="tanh")
        self.vf_out = keras.layers.Dense(1)

    def call(self, obs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.reshape(tf.cast(obs, tf.float32), [tf.shape(obs)[0], -1])
        logits = x
        for layer in self.pi_hidden:
            logits = layer(logits)
        return self.pi_out(logits), tf.squeeze(self.vf_out(self.vf_hidden(x)), -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--local", action="store_true", help="run in-process, without Ray")
    parser.add_argument("--iterations", type=int, default=15)
    args = parser.parse_args()
    result = flowrl.run(
        "ppo", env="CartPole-v1", local_mode=args.local,
        config={"framework": "tf", "seed": 0, "num_workers": 0 if args.local else 2,
                "lr": 3e-4, "train_batch_size": 2048, "num_sgd_iter": 10,
                "model": {"custom_model": ActorCritic, "custom_model_config": {"hidden": 64}}},
        stop={"training_iteration": args.iterations, "episode_reward_mean": 450})
    print(f"mean return {result['episode_reward_mean']:.1f} after "
          f"{result['timesteps_total']:,} steps")


if __name__ == "__main__":
    main()
