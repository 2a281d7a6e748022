"""StatelessCartPole and RepeatAfterMe: dynamics by hand, gymnasium's env checker, and one PPO
iteration through flowrl's env preflight for each."""

from __future__ import annotations

import pickle
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import flowrl
from flowrl.env import make_env
from flowrl.envs import RepeatAfterMe, StatelessCartPole

# --- StatelessCartPole ----------------------------------------------------------------------


def test_stateless_cartpole_observes_cartpoles_position_and_angle_for_the_same_seed():
    cartpole = gymnasium.make("CartPole-v1")
    stateless = StatelessCartPole()
    full, _ = cartpole.reset(seed=3)
    partial, _ = stateless.reset(seed=3)
    np.testing.assert_array_equal(partial, full[[0, 2]])
    action_rng = np.random.default_rng(0)
    steps = 0
    while True:
        action = int(action_rng.integers(2))
        full, full_reward, full_terminated, full_truncated, _ = cartpole.step(action)
        partial, reward, terminated, truncated, _ = stateless.step(action)
        steps += 1
        np.testing.assert_array_equal(partial, full[[0, 2]])
        assert (reward, terminated, truncated) == (full_reward, full_terminated, full_truncated)
        assert stateless.observation_space.contains(partial)
        if terminated or truncated:
            break
    assert terminated and steps < 100  # random play drops the pole quickly


def test_stateless_cartpole_space_is_cartpoles_bounds_without_the_velocities():
    env = StatelessCartPole()
    full = gymnasium.make("CartPole-v1").observation_space
    assert env.observation_space.shape == (2,)
    assert env.observation_space.dtype == np.float32
    np.testing.assert_array_equal(env.observation_space.high, full.high[[0, 2]])
    np.testing.assert_array_equal(env.observation_space.low, full.low[[0, 2]])
    assert env.action_space == gymnasium.spaces.Discrete(2)


def balancing_action(env: StatelessCartPole) -> int:
    """A controller on the full hidden state (angle and angular velocity) that keeps the pole
    up for far longer than 500 steps."""
    _, x_dot, theta, theta_dot = env.state
    return int(theta + 0.5 * theta_dot + 0.01 * x_dot > 0)


@pytest.mark.parametrize("limit", [500, 30])
def test_stateless_cartpole_is_truncated_at_its_step_limit(limit):
    env = StatelessCartPole() if limit == 500 else StatelessCartPole({"max_episode_steps": limit})
    env.reset(seed=0)
    total = 0.0
    for step in range(1, limit + 1):
        _, reward, terminated, truncated, _ = env.step(balancing_action(env))
        total += reward
        assert not terminated, f"the pole fell at step {step}"
        assert truncated == (step == limit)
    assert total == limit
    env.reset(seed=1)  # a reset starts the count again
    _, _, _, truncated, _ = env.step(balancing_action(env))
    assert not truncated


def test_stateless_cartpole_passes_gymnasiums_env_checker_and_pickles():
    env = pickle.loads(pickle.dumps(StatelessCartPole()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # No spec (built by class, not gymnasium.make), so the checker cannot remake it per
        # render mode; the render mode is checked below.
        check_env(env, skip_render_check=True)


def test_stateless_cartpole_renders_with_a_render_mode():
    pytest.importorskip("pygame")
    env = make_env("StatelessCartPole-v1", {"render_mode": "rgb_array"})
    env.reset(seed=0)
    assert env.render().shape == (400, 600, 3)


# --- RepeatAfterMe --------------------------------------------------------------------------


def play(env: RepeatAfterMe, policy, seed: int) -> tuple[list[int], list[float], int]:
    """One episode: (observations o_0.., rewards, steps); `policy(observations so far)`."""
    observation, _ = env.reset(seed=seed)
    observations, rewards = [observation], []
    while True:
        observation, reward, terminated, truncated, _ = env.step(policy(observations))
        assert not terminated
        observations.append(observation)
        rewards.append(reward)
        if truncated:
            return observations, rewards, len(rewards)


def test_repeat_after_me_rewards_by_hand_for_a_fixed_action_sequence():
    env = RepeatAfterMe({"episode_len": 8})
    actions = [1, 0, 1, 1, 0, 0, 1, 0]
    observations, rewards, steps = play(env, lambda seen: actions[len(seen) - 1], seed=5)
    assert steps == 8
    assert observations == [1, 1, 0, 1, 0, 1, 1, 0, 1]  # o_0 .. o_8 for seed 5
    # Step t (1-based) scores its action against o_{t-3}; steps 1 and 2 have none and score 0:
    # t=3: 1 vs o_0=1 +1; t=4: 1 vs o_1=1 +1; t=5: 0 vs o_2=0 +1; t=6: 0 vs o_3=1 -1;
    # t=7: 1 vs o_4=0 -1; t=8: 0 vs o_5=1 -1.
    assert rewards == [0.0, 0.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0]


def test_repeat_after_me_copying_two_back_scores_98_in_100_steps():
    env = RepeatAfterMe()
    for seed in range(5):
        _, rewards, steps = play(env, lambda seen: seen[-3] if len(seen) >= 3 else 0, seed)
        assert steps == 100
        assert rewards[:2] == [0.0, 0.0] and sum(rewards) == 98


def test_repeat_after_me_random_and_memoryless_play_score_about_zero():
    env = RepeatAfterMe()
    action_rng = np.random.default_rng(0)
    random_returns = [sum(play(env, lambda seen: int(action_rng.integers(2)), seed)[1])
                      for seed in range(200)]
    # 98 scored +-1 steps: standard deviation about 9.9 per episode, 0.7 for the mean of 200.
    assert abs(np.mean(random_returns)) < 2.5
    assert 7.0 < np.std(random_returns) < 13.0
    repeat_current = [sum(play(env, lambda seen: seen[-1], seed)[1]) for seed in range(200)]
    assert abs(np.mean(repeat_current)) < 2.5


def test_repeat_after_me_same_seed_same_bits_and_unseeded_resets_continue_the_generator():
    env = RepeatAfterMe({"episode_len": 20})
    copy = lambda seen: 0  # noqa: E731
    first = play(env, copy, seed=11)[0]
    assert play(env, copy, seed=11)[0] == first
    assert any(play(env, copy, seed=seed)[0] != first for seed in range(12, 15))
    env.reset(seed=5)
    unseeded = [env.reset()[0] for _ in range(30)]
    env.reset(seed=5)
    assert [env.reset()[0] for _ in range(30)] == unseeded


def test_repeat_after_me_config_sets_length_and_delay_through_the_registry():
    env = make_env("RepeatAfterMe-v0", {"episode_len": 10, "repeat_delay": 0})
    assert isinstance(env, RepeatAfterMe)
    _, rewards, steps = play(env, lambda seen: seen[-1], seed=0)
    assert steps == 10 and rewards == [1.0] * 10  # delay 0: repeat what you see, no memory


@pytest.mark.parametrize(
    ("env_class", "config", "message"),
    [
        (RepeatAfterMe, {"episode_length": 5}, "unknown config key 'episode_length'. Did you "
                                               "mean 'episode_len'"),
        (RepeatAfterMe, {"repeat_delay": -1}, "'repeat_delay' must be a non-negative integer"),
        (RepeatAfterMe, {"episode_len": 0}, "'episode_len' must be a positive integer"),
        (StatelessCartPole, {"max_episode_steps": 2.5}, "'max_episode_steps' must be a positive"),
    ],
)
def test_bad_config_is_refused_with_a_clear_error(env_class, config, message):
    with pytest.raises(ValueError, match=message):
        env_class(config)


def test_repeat_after_me_refuses_bad_actions_and_steps_before_reset():
    env = RepeatAfterMe()
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action 2 is outside"):
        env.step(2)


def test_repeat_after_me_passes_gymnasiums_env_checker_and_pickles():
    env = pickle.loads(pickle.dumps(RepeatAfterMe()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)  # it has no render modes


# --- through the Trainer --------------------------------------------------------------------

TINY_PPO = {"num_workers": 0, "num_envs_per_worker": 1, "rollout_fragment_length": 40,
            "train_batch_size": 40, "sgd_minibatch_size": 20, "num_sgd_iter": 1, "seed": 0,
            "model": {"fcnet_hiddens": [8]}}


@pytest.mark.parametrize("env", ["StatelessCartPole-v1", "RepeatAfterMe-v0"])
def test_ppo_trains_one_iteration_on_the_registered_env(env):
    trainer = flowrl.Trainer("ppo", env=env, local_mode=True, config=TINY_PPO)
    try:
        result = trainer.train()
    finally:
        trainer.stop()
    assert result["timesteps_total"] == result["num_steps_trained"] == 40
