"""Atari: ALE ids resolve, the DeepMind preprocessing (on by default), the CNN, smoke runs."""

from __future__ import annotations

import sys

import gymnasium
import numpy as np
import pytest

import flowrl
from flowrl.config import AlgorithmConfig, from_dict
from flowrl.env import get_env_creator
from flowrl.envs import atari

pytest.importorskip("ale_py", reason="ale-py is an extra: pip install 'flowrl[atari]'")
pytest.importorskip("cv2", reason="the Atari preprocessing needs opencv (flowrl[atari])")

PONG = "ALE/Pong-v5"
TINY = {"num_workers": 0, "num_envs_per_worker": 1, "rollout_fragment_length": 8,
        "train_batch_size": 16, "seed": 0}
TINY_BY_ALGO = {
    "PPO": {**TINY, "sgd_minibatch_size": 8, "num_sgd_iter": 1},
    "IMPALA": TINY,
}


def wrapper(env, kind):
    """The wrapper of type `kind` in env's chain (None when there is none)."""
    while isinstance(env, gymnasium.Wrapper):
        if isinstance(env, kind):
            return env
        env = env.env
    return None


def test_the_deepmind_wrappers_clip_rewards_end_lives_and_fire_on_reset():
    env = get_env_creator("ALE/Breakout-v5")({})
    try:
        for kind in (atari.EpisodicLife, atari.FireOnReset, gymnasium.wrappers.ClipReward):
            assert wrapper(env, kind) is not None, kind
        assert wrapper(env, atari.FireOnReset).fires  # Breakout's action 1 is FIRE
        env.reset(seed=0)
        lives = env.unwrapped.ale.lives()
        rng = np.random.default_rng(0)
        for _ in range(5000):
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(4)))
            assert reward in (-1.0, 0.0, 1.0)
            if terminated or truncated:
                break
        assert terminated and env.unwrapped.ale.lives() == lives - 1  # one life, not the game
        frames_before = env.unwrapped.ale.getEpisodeFrameNumber()
        env.reset()
        assert env.unwrapped.ale.getEpisodeFrameNumber() > frames_before  # the game went on
        assert env.unwrapped.ale.lives() == lives - 1
    finally:
        env.close()
    plain = get_env_creator("ALE/Breakout-v5")({"clip_rewards": False, "episodic_life": False})
    try:
        assert wrapper(plain, gymnasium.wrappers.ClipReward) is None
        assert wrapper(plain, atari.EpisodicLife) is None
    finally:
        plain.close()
    no_fire = get_env_creator("ALE/Freeway-v5")({})  # NOOP, UP, DOWN: nothing to fire
    try:
        assert not wrapper(no_fire, atari.FireOnReset).fires
    finally:
        no_fire.close()


def test_pong_gets_the_deepmind_preprocessing_by_default():
    creator = get_env_creator(PONG)
    assert creator == atari.AtariEnvCreator(PONG, deepmind_preprocessing=True)
    env = creator({})
    try:
        obs, _ = env.reset(seed=0)
        assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8
        assert env.observation_space.shape == (84, 84, 4)
        assert env.observation_space.contains(obs)
        obs, *_ = env.step(0)
        assert obs.flags["C_CONTIGUOUS"]
        # the wrapper skips 4 frames; the ALE env under it skips none (no 16-frame skips)
        preprocessing = wrapper(env, gymnasium.wrappers.AtariPreprocessing)
        assert preprocessing.frame_skip == 4 and env.unwrapped._frameskip == 1
    finally:
        env.close()


def test_env_config_frameskip_sets_the_wrappers_skip():
    env = get_env_creator(PONG)({"frameskip": 2})
    try:
        frame_skip = wrapper(env, gymnasium.wrappers.AtariPreprocessing).frame_skip
        assert frame_skip == 2 and env.unwrapped._frameskip == 1
    finally:
        env.close()


def test_the_switch_turns_the_preprocessing_off_and_is_checked_for_other_envs():
    env = get_env_creator(PONG, atari_preprocessing=False)({})
    try:
        assert env.observation_space.shape == (210, 160, 3)
    finally:
        env.close()
    with pytest.raises(ValueError, match="'CartPole-v1' is not an Atari game"):
        get_env_creator("CartPole-v1", atari_preprocessing=True)
    assert from_dict(AlgorithmConfig, {}).atari_preprocessing is None


def test_an_ale_id_without_ale_py_says_what_to_install(monkeypatch):
    without_ale = {k: v for k, v in gymnasium.registry.items() if not atari.is_atari_id(k)}
    monkeypatch.setattr(gymnasium, "registry", without_ale)
    monkeypatch.setitem(sys.modules, "ale_py", None)  # import ale_py raises ImportError
    with pytest.raises(ValueError, match=r"needs ale-py.*pip install \"flowrl\[atari\]\""):
        get_env_creator("ALE/Breakout-v5")


def test_a_misspelled_ale_id_suggests_the_right_one():
    with pytest.raises(ValueError, match="Did you mean 'ALE/Pong-v5'"):
        get_env_creator("ALE/Pongg-v5")


@pytest.mark.parametrize("algo", ["PPO", "IMPALA"])
def test_two_iterations_on_pong_with_the_cnn(local_executor, algo):
    if algo.lower() not in [name.lower() for name in flowrl.list_algorithms()]:
        pytest.skip(f"{algo} is not a built-in algorithm in this checkout")
    trainer = flowrl.Trainer(algo, env=PONG, config=TINY_BY_ALGO[algo])
    try:
        assert trainer.workers.env_creator.deepmind_preprocessing
        weights = trainer.get_policy().get_weights()
        assert any(name.startswith("conv_0") for name in weights), sorted(weights)
        for _ in range(2):
            result = trainer.train()
    finally:
        trainer.stop()
    assert result["training_iteration"] == 2
    assert result["timesteps_total"] >= 2 * TINY["rollout_fragment_length"]
    assert result["num_steps_trained"] > 0
