"""Policy-layer overhead: flowrl's Torch/TF policies vs. a bare framework loop, same network.

Per framework it measures
- `compute_actions` on a batch of 64 CartPole observations (µs per call), against a bare forward
  pass (numpy in, logits out) of the same 4-64-64-2 tanh network;
- `learn_on_minibatches` on 4,000 samples in minibatches of 128, one epoch (ms), against a bare
  loop (tensors made once, shuffled index minibatches, PG loss, backward, Adam) of the same net.

The ratio policy / bare is the policy layer's overhead (target <= 1.3x). Run:
``python benchmarks/policy_speed.py [--frameworks torch tf] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from flowrl.plans.pg import PG_POLICY  # noqa: E402
from flowrl.policy import SampleBatch  # noqa: E402

OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
ACTION_SPACE = gym.spaces.Discrete(2)
CONFIG = {"seed": 0}
BATCH, SAMPLES, MINIBATCH = 64, 4000, 128


def best_time(fn, calls: int, repeats: int) -> float:
    """The best mean seconds per call over `repeats` rounds of `calls` calls."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def training_batch(policy) -> SampleBatch:
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(SAMPLES, 4)).astype(np.float32)
    actions, _, _ = policy.compute_actions(obs)
    return SampleBatch(obs=obs, actions=actions,
                       advantages=rng.normal(size=SAMPLES).astype(np.float32))


def torch_bare(policy, obs, batch):
    import torch

    layers, weights = [], policy.get_weights()
    for name in ("pi/fc_0", "pi/fc_1", "pi/out"):
        kernel = weights[f"{name}/kernel"]
        linear = torch.nn.Linear(*kernel.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(kernel.T))
            linear.bias.copy_(torch.from_numpy(weights[f"{name}/bias"]))
        layers += [linear, torch.nn.Tanh()]
    net = torch.nn.Sequential(*layers[:-1])
    optimizer = torch.optim.Adam(net.parameters(), lr=4e-4)

    def forward():
        with torch.inference_mode():
            return net(torch.from_numpy(obs)).numpy()

    def learn():
        tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
        order = torch.randperm(SAMPLES)
        for start in range(0, SAMPLES, MINIBATCH):
            index = order[start : start + MINIBATCH]
            logp = torch.log_softmax(net(tensors["obs"][index]), -1)
            chosen = logp.gather(-1, tensors["actions"][index].unsqueeze(-1)).squeeze(-1)
            loss = -(chosen * tensors["advantages"][index]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()

    return forward, learn


def tf_bare(policy, obs, batch):
    import tensorflow as tf

    weights = policy.get_weights()
    names = ("pi/fc_0", "pi/fc_1", "pi/out")
    variables = [tf.Variable(weights[f"{n}/{p}"]) for n in names for p in ("kernel", "bias")]
    moments = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in variables]
    step = tf.Variable(0.0)

    def net(x):
        k0, b0, k1, b1, k2, b2 = variables
        return tf.matmul(tf.tanh(tf.matmul(tf.tanh(tf.matmul(x, k0) + b0), k1) + b1), k2) + b2

    forward_fn = tf.function(net, input_signature=[tf.TensorSpec((None, 4), tf.float32)])

    @tf.function(input_signature=[{"obs": tf.TensorSpec((None, 4), tf.float32),
                                   "actions": tf.TensorSpec((None,), tf.int64),
                                   "advantages": tf.TensorSpec((None,), tf.float32)},
                                  tf.TensorSpec((None,), tf.int32)])
    def train_step(data, index):
        with tf.GradientTape() as tape:
            logp = tf.nn.log_softmax(net(tf.gather(data["obs"], index)))
            actions = tf.cast(tf.gather(data["actions"], index), tf.int32)[:, None]
            chosen = tf.gather(logp, actions, batch_dims=1)[:, 0]
            loss = -tf.reduce_mean(chosen * tf.gather(data["advantages"], index))
        grads = tape.gradient(loss, variables)
        t = step.assign_add(1.0)
        for var, grad, (m, v) in zip(variables, grads, moments):
            m.assign(0.9 * m + 0.1 * grad)
            v.assign(0.999 * v + 0.001 * tf.square(grad))
            var.assign_sub(4e-4 / (1 - 0.9**t) * m / (tf.sqrt(v) / tf.sqrt(1 - 0.999**t) + 1e-8))
        return loss

    def forward():
        return forward_fn(obs).numpy()

    def learn():
        data = {k: tf.convert_to_tensor(v) for k, v in batch.items()}
        order = np.random.permutation(SAMPLES).astype(np.int32)
        for start in range(0, SAMPLES, MINIBATCH):
            train_step(data, tf.constant(order[start : start + MINIBATCH])).numpy()

    return forward, learn


def measure(framework: str, repeats: int) -> dict[str, float]:
    policy = PG_POLICY.build(OBS_SPACE, ACTION_SPACE, {**CONFIG, "framework": framework},
                             num_threads=1)
    obs = np.random.default_rng(1).normal(size=(BATCH, 4)).astype(np.float32)
    batch = training_batch(policy)
    bare_forward, bare_learn = (torch_bare if framework == "torch" else tf_bare)(
        policy, obs, batch)

    def policy_learn():
        policy.learn_on_minibatches(batch, num_sgd_iter=1, sgd_minibatch_size=MINIBATCH)

    return {
        "act_us": 1e6 * best_time(lambda: policy.compute_actions(obs), 500, repeats),
        "bare_act_us": 1e6 * best_time(bare_forward, 500, repeats),
        "learn_ms": 1e3 * best_time(policy_learn, 3, repeats),
        "bare_learn_ms": 1e3 * best_time(bare_learn, 3, repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", nargs="+", default=["torch", "tf"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{'framework':<10}{'compute_actions(64)':>22}{'bare fwd':>12}{'ratio':>8}"
          f"{'learn 4000/128':>18}{'bare':>10}{'ratio':>8}")
    for framework in args.frameworks:
        r = measure(framework, args.repeats)
        print(f"{framework:<10}{r['act_us']:>19.1f} µs{r['bare_act_us']:>9.1f} µs"
              f"{r['act_us'] / r['bare_act_us']:>7.2f}x{r['learn_ms']:>15.1f} ms"
              f"{r['bare_learn_ms']:>7.1f} ms{r['learn_ms'] / r['bare_learn_ms']:>7.2f}x")


if __name__ == "__main__":
    main()
