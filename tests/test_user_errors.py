"""Common mistakes end in a message that says what was wrong and what would be right."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

import flowrl
from flowrl.trainer import RestoreError

TINY_PG = {"num_workers": 0, "train_batch_size": 64, "rollout_fragment_length": 32,
           "num_envs_per_worker": 2, "seed": 0}


class OldGymStepEnv(gymnasium.Env):
    """step returns the old 4-tuple (obs, reward, done, info)."""

    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
    action_space = gymnasium.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 1.0, False, {}


class OldGymResetEnv(OldGymStepEnv):
    """reset returns the observation alone."""

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32)


def test_stop_given_as_a_number_says_what_stop_looks_like():
    expected = r'stop must be a dict .* stop=\{"episode_reward_mean": 450\}'
    with pytest.raises(TypeError, match=expected):
        flowrl.run("pg", "CartPole-v1", stop=450)


def test_env_creator_without_env_config_parameter():
    with pytest.raises(TypeError, match="must take one argument, env_config"):
        flowrl.register_env("NoArgsCreator-v0", lambda: OldGymStepEnv())


@pytest.mark.parametrize(
    ("env_class", "expected"),
    [(OldGymStepEnv, r"step\(\) returned 4 value\(s\) \(obs, reward, done, info\)"),
     (OldGymResetEnv, r"reset\(\) returned ndarray instead of the pair \(obs, info\)")],
)
def test_old_gym_api_env_names_gymnasiums_api(env_class, expected):
    flowrl.register_env(f"Old-{env_class.__name__}", lambda env_config: env_class())
    env = flowrl.make_env(f"Old-{env_class.__name__}")
    with pytest.raises(TypeError, match=expected) as raised:
        env.reset(seed=0)
        env.step(0)
    assert "gymnasium's API" in str(raised.value) and "terminated, truncated" in str(raised.value)


def test_api_check_removes_itself_after_the_first_good_calls():
    class GoodEnv(OldGymStepEnv):
        def step(self, action):
            return np.zeros(2, np.float32), 1.0, False, False, {}

    flowrl.register_env("GoodEnv-v0", lambda env_config: GoodEnv())
    env = flowrl.make_env("GoodEnv-v0")
    env.reset(seed=0)
    env.step(0)
    assert "step" not in vars(env) and "reset" not in vars(env)  # the class's own methods


def test_plan_returning_none_says_what_a_plan_must_return(local_executor):
    def forgot_return(workers, config):
        workers.local_worker()

    with pytest.raises(TypeError, match=r"returned None of type NoneType \(did it forget a"):
        flowrl.Trainer("pg", env="CartPole-v1", config=TINY_PG, plan=forgot_return)


def test_restoring_another_algorithms_checkpoint_is_a_restore_error(tmp_path, local_executor):
    saved = flowrl.run("pg", "CartPole-v1", config=TINY_PG, local_mode=True, verbose=0,
                       stop={"training_iteration": 1}, checkpoint_dir=str(tmp_path / "ckpt"),
                       log_dir=str(tmp_path / "run"))
    with pytest.raises(RestoreError, match="is for 'PG'"):
        flowrl.run("a2c", "CartPole-v1", config=TINY_PG, local_mode=True, verbose=0,
                   stop={"training_iteration": 1}, restore=saved["checkpoint"],
                   log_dir=str(tmp_path / "run2"))


def test_ctrl_c_carries_the_saved_checkpoint(tmp_path, local_executor, monkeypatch):
    from flowrl.trainer import Trainer, TrainingInterrupted

    calls = {"n": 0}
    original_train = Trainer.train

    def train_then_interrupt(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original_train(self)

    monkeypatch.setattr(Trainer, "train", train_then_interrupt)
    with pytest.raises(TrainingInterrupted) as interrupted:
        flowrl.run("pg", "CartPole-v1", config=TINY_PG, local_mode=True, verbose=0,
                   log_dir=str(tmp_path / "run"))
    assert interrupted.value.checkpoint == str(tmp_path / "run" / "checkpoint_000001")
    assert (tmp_path / "run" / "checkpoint_000001").is_dir()
