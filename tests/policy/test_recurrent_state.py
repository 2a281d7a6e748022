"""Recurrent state in the policy and worker contract, with a tiny GRU in each framework.

`TorchTinyGRU` / `KerasTinyGRU` (flowrl.testing) are custom models with one state tensor. The
tests check the policy's state in and out of `compute_actions`, that stepping one observation at
a time gives what one [B, T] forward with `seq_lens` gives, that rollout workers (single- and
multi-agent) carry each env's state across steps and fragments, store it as `state_in_0` and
reset it at episode ends, and `Trainer.compute_single_action(obs, state)`. Training with
recurrent models is tested in test_recurrent_models.py.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import flowrl
from flowrl.config import from_dict
from flowrl.data import SampleBatch
from flowrl.envs import MultiAgentArena
from flowrl.plans.ppo import PPO_POLICY, PPOConfig
from flowrl.workers.multi_agent import MultiAgentRolloutWorker, MultiAgentSetup
from flowrl.workers.rollout_worker import RolloutWorker

OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
TWO = gym.spaces.Discrete(2)
HIDDEN = 5


def gru_class(framework):
    if framework == "torch":
        from flowrl.testing.torch_recurrent import TorchTinyGRU

        return TorchTinyGRU
    pytest.importorskip("tensorflow")
    from flowrl.testing.tf_recurrent import KerasTinyGRU

    return KerasTinyGRU


def gru_config(framework, **overrides):
    return {"framework": framework, "seed": 0, "num_workers": 0, "num_envs_per_worker": 2,
            "rollout_fragment_length": 12, "train_batch_size": 48, "sgd_minibatch_size": 24,
            "num_sgd_iter": 1, "num_cpus_per_worker": 0,
            "model": {"custom_model": gru_class(framework),
                      "custom_model_config": {"hidden": HIDDEN}}, **overrides}


FRAMEWORKS = ["torch", pytest.param("tf", marks=pytest.mark.tf)]


@pytest.fixture(params=FRAMEWORKS)
def framework(request):
    return request.param


def test_state_goes_in_and_out_of_compute_actions(framework):
    policy = PPO_POLICY.build(OBS, TWO, gru_config(framework))
    assert policy.is_recurrent
    (initial,) = policy.initial_state()
    assert initial.shape == (HIDDEN,) and not initial.any()
    obs = np.random.default_rng(0).uniform(-1, 1, (4, 3)).astype(np.float32)
    actions, state, extras = policy.compute_actions(obs, explore=False)
    assert actions.shape == (4,) and len(state) == 1 and state[0].shape == (4, HIDDEN)
    assert extras["vf_preds"].shape == (4,) and state[0].any()
    _, later, _ = policy.compute_actions(obs, state, explore=False)
    assert not np.allclose(later[0], state[0])  # the state moved on
    action, single_state, _ = policy.compute_single_action(obs[0], [s[0] for s in state],
                                                           explore=False)
    np.testing.assert_allclose(single_state[0], later[0][0], atol=1e-6)
    with pytest.raises(ValueError, match=r"state\[0\] has shape \(4, 2\), expected \(4, 5\)"):
        policy.compute_actions(obs, [np.zeros((4, 2), np.float32)])
    with pytest.raises(TypeError, match="pass explore=False by keyword"):
        policy.compute_actions(obs, False)


def test_stepping_matches_one_forward_over_sequences_with_seq_lens(framework):
    policy = PPO_POLICY.build(OBS, TWO, gru_config(framework))
    steps = 4
    obs = np.random.default_rng(1).uniform(-1, 1, (3, steps, 3)).astype(np.float32)
    seq_lens = np.array([4, 2, 3])
    state = None
    stepped_values, stepped_states = [], []
    for t in range(steps):
        (dist_inputs, values), state = policy.forward(obs[:, t], state)
        stepped_values.append(values)
        stepped_states.append(state[0])
    to = policy._to_framework
    batch_state = [to(np.zeros((3, HIDDEN), np.float32))]
    dist_inputs, values, state_out = policy.model(to(obs), batch_state, to(seq_lens))
    values = np.asarray(values.detach() if hasattr(values, "detach") else values)
    valid = np.arange(steps)[None] < seq_lens[:, None]  # padding is the loss's to mask
    np.testing.assert_allclose(values[valid], np.stack(stepped_values, axis=1)[valid],
                               atol=1e-5)
    final = np.asarray(state_out[0].detach() if hasattr(state_out[0], "detach")
                       else state_out[0])
    for row, length in enumerate(seq_lens):  # the state after each sequence's last valid step
        np.testing.assert_allclose(final[row], stepped_states[length - 1][row], atol=1e-5)


def _check_state_chain(policy, batch):
    """Every episode's first row starts from the initial state; every later row's state_in is
    the state_out of the row before it (also across fragment boundaries)."""
    assert batch.state_in_columns() == ["state_in_0"]
    state_in = batch["state_in_0"]
    assert state_in.shape == (len(batch), HIDDEN)
    starts = 0
    for eps_id in np.unique(batch["eps_id"]):
        rows = np.flatnonzero(batch["eps_id"] == eps_id)
        rows = rows[np.argsort(batch["t"][rows])]
        assert np.array_equal(batch["t"][rows], np.arange(batch["t"][rows[0]],
                                                          batch["t"][rows[0]] + len(rows)))
        if batch["t"][rows[0]] == 0:
            assert not state_in[rows[0]].any()
            starts += 1
        for previous, row in zip(rows[:-1], rows[1:]):
            _, state_out = policy.forward(batch["obs"][previous:previous + 1],
                                          [state_in[previous:previous + 1]])
            np.testing.assert_allclose(state_in[row], state_out[0][0], atol=1e-5)
    return starts


def test_rollout_worker_carries_state_across_steps_fragments_and_episode_ends(framework):
    config = from_dict(PPOConfig, gru_config(framework))
    env = gym.make("CartPole-v1")
    worker = RolloutWorker(
        env_creator=lambda env_config: gym.make("CartPole-v1"), env_config={},
        policy_spec=PPO_POLICY, config=config, observation_space=env.observation_space,
        action_space=env.action_space, num_envs=2, rollout_fragment_length=12, seed=3)
    first, second = worker.sample(), worker.sample()
    batch = SampleBatch({name: np.concatenate([first[name], second[name]]) for name in first})
    starts = _check_state_chain(worker.policy, batch)
    assert starts >= 3  # the two first episodes and at least one reset (CartPole, random)
    continued = set(first["eps_id"]) & set(second["eps_id"])
    assert continued, "an episode ran on across the fragment boundary"
    assert worker.evaluate(2)[0][1] > 0


def test_multi_agent_worker_carries_each_agents_state(framework):
    config = from_dict(PPOConfig, gru_config(framework))
    table = {"default_policy": (PPO_POLICY, config)}
    setup = MultiAgentSetup.from_env(MultiAgentArena({}), table, None)
    worker = MultiAgentRolloutWorker(env_creator=MultiAgentArena, env_config={},
                                     multi_agent=setup, num_envs=2, rollout_fragment_length=8,
                                     seed=5, worker_index=1, num_workers=1)
    first = worker.sample().policy_batches["default_policy"]
    second = worker.sample().policy_batches["default_policy"]
    policy = worker.get_policy("default_policy")
    for batch in (first, second):
        assert batch["state_in_0"].shape == (len(batch), HIDDEN)
        assert not batch["state_in_0"][batch["t"] == 0].any()
    # Within one agent's trajectory, each state_in is the state_out of the step before.
    batch = SampleBatch({name: np.concatenate([first[name], second[name]]) for name in first})
    for agent in np.unique(batch["agent_index"]):
        rows = np.flatnonzero(batch["agent_index"] == agent)
        sub = SampleBatch({name: value[rows] for name, value in batch.items()})
        _check_state_chain(policy, sub)
    assert len(worker.evaluate(1)) == 1


def test_trainer_compute_single_action_returns_the_state_of_a_recurrent_policy(local_executor):
    trainer = flowrl.Trainer("ppo", env="CartPole-v1", config=gru_config("torch"))
    try:
        trainer.train()  # PPO's loss runs the custom GRU over the batch's sequences
        action, state, extras = trainer.compute_single_action(np.zeros(4, np.float32))
        assert action in (0, 1) and state[0].shape == (HIDDEN,) and "vf_preds" in extras
        action, state, _ = trainer.compute_single_action(np.zeros(4, np.float32), state)
        assert state[0].any()
    finally:
        trainer.stop()
