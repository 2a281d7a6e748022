"""DQN: n-step returns, losses, config checks, plan shape, and learning on the corridor."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import flowrl
from flowrl.config import from_dict
from flowrl.plans.dqn import (
    BOOTSTRAP_DISCOUNT,
    DQN_POLICY,
    DQNConfig,
    compute_td_errors,
    round_robin_weights,
)
from flowrl.policy import SampleBatch
from flowrl.policy.postprocessing import n_step_returns

FRAMEWORKS = ["torch", pytest.param("tf", marks=pytest.mark.tf)]


def _piece(rewards, terminated_at_end=False, truncated_at_end=False):
    length = len(rewards)
    terminateds = np.zeros(length, bool)
    truncateds = np.zeros(length, bool)
    terminateds[-1] = terminated_at_end
    truncateds[-1] = truncated_at_end
    return SampleBatch(obs=np.arange(length, dtype=np.float32)[:, None],
                       new_obs=np.arange(1, length + 1, dtype=np.float32)[:, None],
                       rewards=np.asarray(rewards, np.float32), terminateds=terminateds,
                       truncateds=truncateds, actions=np.zeros(length, np.int64))


def test_n_step_returns_equal_a_hand_computed_terminated_trajectory():
    out = n_step_returns(_piece([1.0, 2.0, 4.0, 8.0, 16.0], terminated_at_end=True),
                         n_step=3, gamma=0.5)
    # Row t sums up to 3 rewards: r_t + 0.5 r_{t+1} + 0.25 r_{t+2}, cut at the episode's end.
    assert out["rewards"].tolist() == [1 + 1 + 1, 2 + 2 + 2, 4 + 4 + 4, 8 + 8, 16]
    assert out[BOOTSTRAP_DISCOUNT].tolist() == [0.125, 0.125, 0.125, 0.25, 0.5]
    assert out["new_obs"][:, 0].tolist() == [3.0, 4.0, 5.0, 5.0, 5.0]
    # The last three rows reach the terminal step: they do not bootstrap.
    assert out["terminateds"].tolist() == [False, False, True, True, True]
    assert out["obs"][:, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]  # unchanged


def test_n_step_returns_bootstrap_after_truncation_and_fragment_cuts():
    truncated = n_step_returns(_piece([1.0, 1.0, 1.0], truncated_at_end=True), n_step=2,
                               gamma=0.9)
    assert truncated["rewards"].tolist() == pytest.approx([1.9, 1.9, 1.0])
    assert truncated["terminateds"].tolist() == [False, False, False]
    assert truncated["truncateds"].tolist() == [False, True, True]
    assert truncated[BOOTSTRAP_DISCOUNT].tolist() == pytest.approx([0.81, 0.81, 0.9])
    cut = n_step_returns(_piece([1.0, 1.0]), n_step=5, gamma=0.9)  # the fragment ended
    assert cut["rewards"].tolist() == pytest.approx([1.9, 1.0])
    assert cut[BOOTSTRAP_DISCOUNT].tolist() == pytest.approx([0.81, 0.9])
    assert not cut["terminateds"].any()


def test_n_step_returns_reject_a_piece_with_an_inner_episode_end():
    piece = _piece([1.0, 1.0, 1.0])
    piece["terminateds"][0] = True
    with pytest.raises(ValueError, match="one trajectory piece"):
        n_step_returns(piece, n_step=2, gamma=0.9)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("double_q", [True, False])
def test_td_errors_follow_the_double_q_n_step_target(framework, double_q):
    obs_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    policy = DQN_POLICY.build(obs_space, gym.spaces.Discrete(2), {
        "framework": framework, "seed": 0, "double_q": double_q, "dueling": False,
        "model": {"fcnet_hiddens": [8]}})
    policy.learn_on_batch(_random_batch(policy, seed=1))  # online and target now differ
    batch = _random_batch(policy, seed=2)
    online = policy.compute_q_values(batch["new_obs"])
    target_net = _target_q_values(policy, batch["new_obs"])
    if double_q:
        next_value = target_net[np.arange(len(batch)), online.argmax(axis=1)]
    else:
        next_value = target_net.max(axis=1)
    chosen = policy.compute_q_values(batch["obs"])[np.arange(len(batch)), batch["actions"]]
    expected = chosen - (batch["rewards"] + batch[BOOTSTRAP_DISCOUNT]
                         * (1.0 - batch["terminateds"]) * next_value)
    np.testing.assert_allclose(compute_td_errors(policy, batch), expected, atol=1e-5)


def _random_batch(policy, seed):
    rng = np.random.default_rng(seed)
    rows = 16
    return SampleBatch(
        obs=rng.uniform(-1, 1, (rows, 3)).astype(np.float32),
        new_obs=rng.uniform(-1, 1, (rows, 3)).astype(np.float32),
        actions=rng.integers(0, 2, rows), rewards=rng.normal(size=rows).astype(np.float32),
        terminateds=rng.random(rows) < 0.3, truncateds=np.zeros(rows, bool),
        **{BOOTSTRAP_DISCOUNT: np.full(rows, 0.9**2, np.float32)})


def _target_q_values(policy, obs_rows):
    clone = DQN_POLICY.build(policy.observation_space, policy.action_space, policy.config)
    clone.set_weights(policy.get_target_weights())
    return clone.compute_q_values(obs_rows)


def test_config_checks_name_the_field_and_the_fix():
    with pytest.raises(ValueError, match=r"exploration_final_eps is a probability in \[0, 1\]"):
        from_dict(DQNConfig, {"exploration_final_eps": 1.5})
    with pytest.raises(ValueError, match="training_intensity must be > 0"):
        from_dict(DQNConfig, {"training_intensity": 0})
    with pytest.raises(ValueError, match="n_step must be at least 1"):
        from_dict(DQNConfig, {"n_step": 0})
    with pytest.raises(ValueError, match="target_network_update_freq"):
        from_dict(DQNConfig, {"target_network_update_fre": 10})


def test_training_intensity_sets_the_round_robin_weights():
    # 4 env steps per round, 64-row batches: intensity 16 is one batch per round.
    assert round_robin_weights(DQNConfig()) == [1, 1]
    assert round_robin_weights(DQNConfig(training_intensity=64)) == [1, 4]
    assert round_robin_weights(DQNConfig(training_intensity=4)) == [4, 1]
    assert round_robin_weights(DQNConfig(training_intensity=None)) == [1, 1]
    assert round_robin_weights(DQNConfig(training_intensity=16, num_workers=2,
                                         num_envs_per_worker=2)) == [1, 4]


def test_plan_reads_as_a_store_flow_and_a_train_flow(tiny_config, local_executor):
    trainer = flowrl.Trainer("dqn", env="corridor", config=tiny_config("dqn"))
    try:
        text = repr(trainer.plan)
    finally:
        trainer.stop()
    for stage in ("ParallelRollouts(mode='bulk_sync')", "StoreToReplay(PrioritizedReplayBuffer)",
                  "BroadcastWeights()", "Replay(PrioritizedReplayBuffer, num_items=16, "
                  "learning_starts=40)", "UpdatePriorities(PrioritizedReplayBuffer)",
                  "TrainOneStep(", "UpdateTargetNetwork(target_network_update_freq=500, "
                  "by='sampled')", "Concurrently("):
        assert stage in text, (stage, text)
    assert text.index("Replay(") < text.index("UpdatePriorities") < text.index("TrainOneStep")


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("num_workers", [0, 1])
def test_two_iterations_train_and_update_the_target(framework, num_workers, tiny_config,
                                                    executor):
    config = tiny_config("dqn", framework=framework, num_workers=num_workers,
                         min_steps_per_iteration=100, target_network_update_freq=50,
                         prioritized_replay=num_workers == 0)
    trainer = flowrl.Trainer("dqn", env="corridor", config=config)
    try:
        trainer.train()
        result = trainer.train()
    finally:
        trainer.stop()
    counters = result["info"]["counters"]
    assert result["timesteps_total"] >= 200
    assert counters["learner/steps_trained"] > 0
    assert counters["learner/target_updates"] >= 2
    assert np.isfinite(result["info"]["learner"]["default_policy"]["total_loss"])
    if num_workers:
        assert counters["learner/weight_broadcasts"] > 0


CORRIDOR = {"env_config": {"length": 8, "max_steps": 40}, "model": {"fcnet_hiddens": [32]},
            "learning_starts": 200, "exploration_timesteps": 1000,
            "target_network_update_freq": 100, "min_steps_per_iteration": 256,
            "training_intensity": 8, "metrics_num_episodes_for_smoothing": 10, "seed": 0}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_dqn_learns_the_shortest_way_down_the_corridor(framework, executor):
    # A random walk needs ~16 steps to the end of an 8-cell corridor; the greedy policy 8.
    trainer = flowrl.Trainer("dqn", env="corridor", config={**CORRIDOR, "framework": framework})
    try:
        result = trainer.train()
        while result["episode_len_mean"] > 10.0 and result["timesteps_total"] < 2500:
            result = trainer.train()
    finally:
        trainer.stop()
    assert result["episode_len_mean"] <= 10.0, result["episode_len_mean"]
