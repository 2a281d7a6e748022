"""`model.use_lstm` / `use_gru`: recurrent wrappers, sequences in the losses, acting with state.

The wrappers (`TorchRecurrentModel`, `TFRecurrentModel`) must compute the same function of the
same weights in both frameworks; the losses must see one output per real step (padding never
reaches them); the training forward over sequences must reproduce what the sampler computed
step by step; workers store the previous action and reward for models that read them.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from torch import nn

import flowrl
from flowrl.config import from_dict
from flowrl.env import get_env_creator, make_env
from flowrl.plans.dqn import DQN_POLICY
from flowrl.plans.impala import IMPALA_POLICY, IMPALAConfig
from flowrl.plans.ppo import PPO_POLICY, PPOConfig
from flowrl.plans.sac import SAC_POLICY
from flowrl.workers.rollout_worker import RolloutWorker

FRAMEWORKS = ["torch", pytest.param("tf", marks=pytest.mark.tf)]
ENV = "StatelessCartPole-v1"


def recurrent_model(cell="use_lstm", **overrides):
    return {cell: True, "lstm_cell_size": 8, "fcnet_hiddens": [16], "max_seq_len": 6,
            "lstm_use_prev_action": True, "lstm_use_prev_reward": True, **overrides}


def worker_for(spec, config_class, framework, *, fragment=24, **overrides):
    config = from_dict(config_class, {"framework": framework, "seed": 0, "num_workers": 0,
                                      "rollout_fragment_length": fragment,
                                      "model": recurrent_model(), **overrides})
    env = make_env(ENV)
    return RolloutWorker(env_creator=get_env_creator(ENV), env_config={}, policy_spec=spec,
                         config=config, observation_space=env.observation_space,
                         action_space=env.action_space, num_envs=3,
                         rollout_fragment_length=fragment, seed=1)


def numpy_of(value):
    return np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)


@pytest.fixture(params=FRAMEWORKS)
def framework(request):
    return request.param


@pytest.mark.tf
@pytest.mark.parametrize("cell", ["use_lstm", "use_gru"])
@pytest.mark.parametrize("spec", [PPO_POLICY, DQN_POLICY], ids=["actor_critic", "q"])
def test_torch_and_tf_compute_the_same_function_of_the_same_weights(cell, spec):
    obs_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    outputs, weights = [], None
    for framework in ("torch", "tf"):
        config = {"framework": framework, "seed": 0, "model": recurrent_model(cell)}
        policy = spec.build(obs_space, gym.spaces.Discrete(2), config)
        if weights is None:
            weights = policy.get_weights()
        else:
            policy.set_weights(weights)
        rng = np.random.default_rng(0)
        state = [rng.normal(size=(3, 8)).astype(np.float32) for _ in policy.initial_state()]
        to = policy._to_framework
        out = policy.model(to(rng.uniform(-1, 1, (3, 5, 3)).astype(np.float32)),
                           [to(value) for value in state], to(np.array([5, 2, 3])),
                           prev_actions=to(rng.normal(size=(3, 5, 2)).astype(np.float32)),
                           prev_rewards=to(rng.normal(size=(3, 5)).astype(np.float32)))
        outputs.append([numpy_of(value) for value in out[:-1]]
                       + [[numpy_of(value) for value in out[-1]]])
    valid = np.arange(5)[None] < np.array([5, 2, 3])[:, None]
    for torch_out, tf_out in zip(outputs[0][:-1], outputs[1][:-1]):
        np.testing.assert_allclose(torch_out[valid], tf_out[valid], atol=1e-5)
    for torch_state, tf_state in zip(outputs[0][-1], outputs[1][-1]):
        np.testing.assert_allclose(torch_state, tf_state, atol=1e-5)


@pytest.mark.tf
@pytest.mark.parametrize("spec, config_class", [(PPO_POLICY, PPOConfig),
                                                (IMPALA_POLICY, IMPALAConfig)],
                         ids=["ppo", "impala"])
def test_torch_and_tf_losses_and_gradients_agree_on_a_sampled_batch(spec, config_class):
    worker = worker_for(spec, config_class, "torch")
    batch = worker.sample()
    tf_policy = worker_for(spec, config_class, "tf").policy
    tf_policy.set_weights(worker.policy.get_weights())
    torch_grads, torch_stats = worker.policy.compute_gradients(batch)
    tf_grads, tf_stats = tf_policy.compute_gradients(batch)
    for name in ("total_loss", "policy_loss", "vf_loss", "entropy"):
        assert torch_stats[name] == pytest.approx(tf_stats[name], rel=1e-5, abs=1e-5), name
    for torch_grad, tf_grad in zip(torch_grads, tf_grads):
        np.testing.assert_allclose(torch_grad, tf_grad, atol=1e-5)


def test_the_training_forward_reproduces_what_the_sampler_computed(framework):
    worker = worker_for(PPO_POLICY, PPOConfig, framework)
    batch = worker.sample()
    policy = worker.policy
    arrays = policy._training_arrays(batch)
    assert arrays["seq_lens"].max() <= 6 and arrays["seq_lens"].sum() == len(batch)
    tensors = {name: policy._to_framework(value) for name, value in arrays.items()}
    dist_inputs, values = policy.model_outputs(tensors)
    np.testing.assert_allclose(numpy_of(dist_inputs), batch["action_dist_inputs"], atol=1e-5)
    np.testing.assert_allclose(numpy_of(values), batch["vf_preds"], atol=1e-5)


def test_padding_never_reaches_the_loss_or_its_gradients(framework):
    """Padded slots filled with large garbage observations give the same loss and gradients
    as padded slots that repeat a real row."""
    worker = worker_for(PPO_POLICY, PPOConfig, framework, fragment=25)  # 25 = 4 x 6 + 1
    policy = worker.policy
    arrays = policy._training_arrays(worker.sample())
    padded = np.arange(len(arrays["seq_rows"])) % policy.max_seq_len >= np.repeat(
        arrays["seq_lens"], policy.max_seq_len)
    assert padded.any(), "the batch has padded slots"
    garbage = dict(arrays)
    count = len(arrays["obs"])
    noise = np.random.default_rng(0).uniform(-1e3, 1e3, (int(padded.sum()),) +
                                             arrays["obs"].shape[1:]).astype(np.float32)
    garbage["obs"] = np.concatenate([arrays["obs"], noise])  # rows only padded slots read
    garbage["seq_rows"] = arrays["seq_rows"].copy()
    garbage["seq_rows"][padded] = count + np.arange(int(padded.sum()))
    for name in ("prev_actions", "prev_rewards"):
        extra = np.full((int(padded.sum()),) + arrays[name].shape[1:], 777.0, np.float32)
        garbage[name] = np.concatenate([arrays[name], extra])
    results = []
    for version in (arrays, garbage):
        loss, grads = _loss_and_gradients(policy, version)
        results.append((loss, grads))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    for clean, dirty in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(clean, dirty, rtol=1e-5, atol=1e-7)


def _loss_and_gradients(policy, arrays):
    """The PPO loss and its gradients on arrays as the policy would hand them to the loss."""
    tensors = {name: policy._to_framework(value) for name, value in arrays.items()}
    params = policy.model_weights.parameters()
    if policy.framework == "torch":
        for param in params:
            param.grad = None
        loss, _ = policy.loss_fn(policy, tensors)
        loss.backward()
        return float(loss.detach()), [numpy_of(param.grad) for param in params]
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss, _ = policy.loss_fn(policy, tensors)
    return float(loss), [numpy_of(grad) for grad in tape.gradient(loss, params)]


def test_bootstraps_step_from_the_stored_state(framework):
    """A recurrent value bootstrap is V(new_obs) after the model stepped through obs from the
    row's stored state: the same on the worker (numpy) and in the loss (V-trace)."""
    worker = worker_for(IMPALA_POLICY, IMPALAConfig, framework)
    batch = worker.sample()
    policy = worker.policy
    rows = batch[np.arange(0, len(batch), 5)]
    state = [rows[name] for name in rows.state_in_columns()]
    assert len(state) == 4  # h, c of the policy's cell, then of the value tower's
    _, after = policy.forward(rows["obs"], state, prev=[rows["prev_actions"],
                                                        rows["prev_rewards"]])
    by_hand = policy.forward(rows["new_obs"], after, prev=[
        policy.encode_prev_actions(rows["actions"]), rows["rewards"]])[0][1]
    np.testing.assert_allclose(policy.compute_values_after(rows), by_hand, atol=1e-6)
    tensors = {name: policy._to_framework(value)
               for name, value in policy._training_arrays(batch).items()}
    index = np.arange(0, len(batch), 5)
    if framework == "tf":
        index = index[:, None]
    in_loss = policy.bootstrap_values(tensors, policy._to_framework(index))
    np.testing.assert_allclose(numpy_of(in_loss), by_hand, atol=1e-5)
    # The initial state would give other values: the state matters.
    assert not np.allclose(policy.compute_values(rows["new_obs"]), by_hand, atol=1e-4)


def test_workers_store_the_previous_action_and_reward(framework):
    worker = worker_for(PPO_POLICY, PPOConfig, framework)
    batch = worker.sample()
    first = batch["t"] == 0
    assert first.any() and not batch["prev_actions"][first].any()
    assert not batch["prev_rewards"][first].any()
    later = np.flatnonzero(~first[1:] & (batch["eps_id"][1:] == batch["eps_id"][:-1])) + 1
    one_hot = np.eye(2, dtype=np.float32)[batch["actions"][later - 1]]
    np.testing.assert_array_equal(batch["prev_actions"][later], one_hot)
    np.testing.assert_array_equal(batch["prev_rewards"][later], batch["rewards"][later - 1])


class TorchEncoder(nn.Module):
    """A stateless custom model; wrapped by use_lstm, its first output becomes the features."""

    def __init__(self, obs_shape, action_space, num_outputs, model_config):
        super().__init__()
        self.body = nn.Linear(int(np.prod(obs_shape)), num_outputs)
        self.value = nn.Linear(int(np.prod(obs_shape)), 1)

    def forward(self, obs):
        x = obs.float().reshape(obs.shape[0], -1)
        return self.body(x), self.value(x).squeeze(-1)


def test_use_lstm_wraps_a_custom_model(local_executor):
    config = {"num_workers": 0, "num_envs_per_worker": 2, "rollout_fragment_length": 16,
              "train_batch_size": 64, "sgd_minibatch_size": 32, "num_sgd_iter": 2,
              "model": {"custom_model": TorchEncoder, "use_gru": True, "lstm_cell_size": 8,
                        "fcnet_hiddens": [12]}}
    trainer = flowrl.Trainer("ppo", env=ENV, config=config)
    try:
        policy = trainer.get_policy()
        names = policy.get_weights()
        assert "encoder/body.weight" in names and "vf_encoder/body.weight" in names
        assert names["encoder/body.weight"].shape == (12, 2)  # num_outputs = fcnet_hiddens[-1]
        before = policy.get_weights()["gru/kernel"].copy()
        trainer.train()
        assert not np.allclose(before, policy.get_weights()["gru/kernel"])
        action, state, extras = trainer.compute_single_action(np.zeros(2, np.float32))
        assert len(state) == 2 and "vf_preds" in extras  # policy and value towers
    finally:
        trainer.stop()


def _train_evaluate_and_restore(algorithm, framework, tmp_path):
    config = {"framework": framework, "num_workers": 1, "num_envs_per_worker": 2,
              "rollout_fragment_length": 20, "train_batch_size": 80,
              "model": recurrent_model("use_lstm"), "evaluation_num_episodes": 1}
    if algorithm == "ppo":
        config.update(sgd_minibatch_size=40, num_sgd_iter=2)
    if algorithm == "impala":
        config.update(num_sgd_iter=2, minibatch_buffer_size=1)  # RLlib's IMPALA crashed here
    trainer = flowrl.Trainer(algorithm, env=ENV, config=config)
    try:
        for _ in range(2):
            result = trainer.train()
        assert np.isfinite(result["info"]["learner"]["default_policy"]["total_loss"])
        assert trainer.evaluate()["evaluation"]["episodes"] == 1
        path = trainer.save(str(tmp_path))
    finally:
        trainer.stop()
    restored = flowrl.Trainer(algorithm, env=ENV, config=config)
    try:
        restored.restore(path)
        updates = restored.get_policy().num_updates
        assert updates > 0
        assert [value.shape for value in restored.get_policy().initial_state()] == [(8,)] * 4
        restored.train()
        assert restored.get_policy().num_updates > updates
    finally:
        restored.stop()


@pytest.mark.parametrize("algorithm", ["ppo", "impala", "appo", "a3c"])
def test_recurrent_runs_train_evaluate_and_restore(local_executor, framework, algorithm,
                                                   tmp_path):
    _train_evaluate_and_restore(algorithm, framework, tmp_path)


def test_recurrent_ppo_on_ray_workers(executor, tmp_path):
    _train_evaluate_and_restore("ppo", "torch", tmp_path)


def test_compute_single_action_carries_state_and_the_previous_step(local_executor):
    trainer = flowrl.Trainer("ppo", env=ENV, config={"num_workers": 0,
                                                      "model": recurrent_model("use_lstm")})
    try:
        obs = np.zeros(2, np.float32)
        action, state, extras = trainer.compute_single_action(obs)
        assert [value.shape for value in state] == [(8,)] * 4
        again, _, second = trainer.compute_single_action(obs, state, prev_action=action,
                                                         prev_reward=1.0)
        assert second["vf_preds"] != extras["vf_preds"]
        policy = trainer.get_policy()
        _, _, by_batch = policy.compute_actions(
            obs[None], [value[None] for value in state], explore=False,
            prev_actions=policy.encode_prev_actions(np.array([action])),
            prev_rewards=np.array([1.0], np.float32))
        assert by_batch["vf_preds"][0] == pytest.approx(second["vf_preds"], abs=1e-6)
    finally:
        trainer.stop()


def test_bad_recurrent_settings_say_what_to_change():
    obs, two = gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Discrete(2)
    with pytest.raises(ValueError, match="use_lstm and use_gru are both True"):
        PPO_POLICY.build(obs, two, {"model": {"use_lstm": True, "use_gru": True}})
    with pytest.raises(ValueError, match="set use_lstm=True"):
        PPO_POLICY.build(obs, two, {"model": {"lstm_use_prev_reward": True}})
    with pytest.raises(ValueError, match="wrap actor-critic and Q models"):
        SAC_POLICY.build(obs, gym.spaces.Box(-1, 1, (1,), np.float32),
                         {"model": {"use_lstm": True}})
    from flowrl.testing.torch_recurrent import TorchTinyGRU

    with pytest.raises(ValueError, match="is recurrent already"):
        PPO_POLICY.build(obs, two, {"model": {"use_lstm": True, "custom_model": TorchTinyGRU}})
    policy = PPO_POLICY.build(obs, two, {"model": {"use_lstm": True, "lstm_cell_size": 4}})
    from flowrl.data import SampleBatch

    steps = SampleBatch({"obs": np.zeros((4, 3), np.float32), "actions": np.zeros(4, np.int64),
                         "advantages": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match="needs each step's stored state"):
        policy.learn_on_batch(steps)


def test_the_hand_written_loop_in_docs_models_md_runs(local_executor, capsys):
    page = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text()
    loop = page.split("A hand-written loop:\n\n```python\n", 1)[1].split("```", 1)[0]
    exec(compile(loop, "docs/models.md", "exec"), {})
    assert capsys.readouterr().out.startswith("return ")


def test_multi_agent_batches_train_each_agents_own_sequences(framework):
    """Agents' steps interleave in a shared policy's batch; the training forward still
    reproduces every row's sampled outputs, and a multi-agent PPO run trains."""
    from flowrl.envs import MultiAgentArena
    from flowrl.workers.multi_agent import MultiAgentRolloutWorker, MultiAgentSetup

    config = from_dict(PPOConfig, {"framework": framework, "seed": 0,
                                   "model": recurrent_model("use_gru")})
    setup = MultiAgentSetup.from_env(MultiAgentArena({}), {"default_policy": (PPO_POLICY,
                                                                               config)}, None)
    worker = MultiAgentRolloutWorker(env_creator=MultiAgentArena, env_config={},
                                     multi_agent=setup, num_envs=2, rollout_fragment_length=10,
                                     seed=5, worker_index=1, num_workers=1)
    batch = worker.sample().policy_batches["default_policy"]
    policy = worker.get_policy("default_policy")
    arrays = policy._training_arrays(batch)
    assert arrays["seq_lens"].max() > 1  # each agent's steps run together
    tensors = {name: policy._to_framework(value) for name, value in arrays.items()}
    dist_inputs, values = policy.model_outputs(tensors)
    np.testing.assert_allclose(numpy_of(dist_inputs), batch["action_dist_inputs"], atol=1e-5)
    np.testing.assert_allclose(numpy_of(values), batch["vf_preds"], atol=1e-5)
    stats = policy.learn_on_minibatches(batch, num_sgd_iter=2, sgd_minibatch_size=16)
    assert np.isfinite(stats["total_loss"])


def test_flowrl_rollout_runs_a_recurrent_checkpoint(tmp_path, capsys, local_executor):
    from flowrl import cli

    result = flowrl.run("ppo", env=ENV, local_mode=True, verbose=0,
                        config={"num_workers": 0, "train_batch_size": 256,
                                "model": recurrent_model("use_lstm")},
                        stop={"training_iteration": 1}, checkpoint_dir=str(tmp_path),
                        log_dir=str(tmp_path / "run"))
    code = cli.main(["rollout", result["checkpoint"], "--episodes", "2"])
    out = capsys.readouterr().out
    assert code == 0 and out.count("episode ") == 2


def test_ppo_with_an_lstm_learns_to_repeat_what_it_saw_two_steps_ago(local_executor):
    """RepeatAfterMe-v0 needs memory (random play scores about 0, the best is 98): with the
    tuned file 3 of 3 seeds score 59-61 greedily after 10k steps and >= 80 after 21k
    (benchmarks/recurrent.py ppo-repeat)."""
    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "tuned" /
                             "ppo-lstm-stateless-cartpole.yaml").read_text())
    trainer = flowrl.Trainer("ppo", env="RepeatAfterMe-v0",
                             config={**config, "seed": 0, "evaluation_num_episodes": 5})
    try:
        while trainer.train()["timesteps_total"] < 12_000:
            pass
        assert trainer.evaluate()["evaluation"]["episode_reward_mean"] >= 40
    finally:
        trainer.stop()
