"""Tests for flowrl.env: name resolution, picklable creators, error messages."""

from __future__ import annotations

import pickle
import subprocess
import sys

import cloudpickle
import gymnasium
import pytest

from flowrl import env as env_module
from flowrl.env import get_env_creator, list_envs, make_env, register_env


@pytest.fixture(autouse=True)
def empty_registry(monkeypatch):
    """Each test starts with an empty flowrl registry (the real one is a process-global dict)."""
    monkeypatch.setattr(env_module, "_REGISTRY", {})


def short_cartpole(env_config: dict) -> gymnasium.Env:
    return gymnasium.make("CartPole-v1", max_episode_steps=env_config.get("steps", 10))


def test_gymnasium_id_resolves_to_a_picklable_creator_that_forwards_env_config():
    creator = get_env_creator("CartPole-v1")
    restored = pickle.loads(pickle.dumps(creator))
    env = restored({"max_episode_steps": 5})
    assert isinstance(env, gymnasium.Env) and env.spec.max_episode_steps == 5


def test_registered_creator_is_used_and_receives_env_config():
    register_env("ShortCartPole", short_cartpole)
    assert list_envs() == ["ShortCartPole"]
    assert make_env("ShortCartPole", {"steps": 7}).spec.max_episode_steps == 7
    assert make_env("ShortCartPole").spec.max_episode_steps == 10


def test_registered_name_takes_precedence_over_gymnasium_id():
    register_env("CartPole-v1", short_cartpole)
    assert make_env("CartPole-v1").spec.max_episode_steps == 10


def test_lambda_creator_survives_cloudpickle_without_the_registry():
    register_env("Lambda", lambda env_config: gymnasium.make("CartPole-v1", **env_config))
    payload = cloudpickle.dumps(get_env_creator("Lambda"))
    env_module._REGISTRY.clear()  # like a Ray actor: the driver's registry is not there
    env = cloudpickle.loads(payload)({"max_episode_steps": 3})
    assert env.spec.max_episode_steps == 3


def test_creator_works_in_another_process():
    register_env("Lambda", lambda env_config: gymnasium.make("CartPole-v1", **env_config))
    payload = cloudpickle.dumps(get_env_creator("Lambda"))
    script = (
        "import sys, cloudpickle; creator = cloudpickle.loads(sys.stdin.buffer.read()); "
        "print(creator({'max_episode_steps': 4}).spec.max_episode_steps)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], input=payload, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == "4"


def test_reregistering_replaces_with_a_warning():
    register_env("Mine", short_cartpole)
    with pytest.warns(UserWarning, match="name='Mine' was already registered"):
        register_env("Mine", lambda env_config: gymnasium.make("CartPole-v1"))
    assert make_env("Mine").spec.max_episode_steps == 500


def test_unknown_env_suggests_close_gymnasium_ids_and_how_to_register():
    with pytest.raises(ValueError) as info:
        get_env_creator("CartPol-v1")
    message = str(info.value)
    assert message.startswith("Unknown environment 'CartPol-v1'. Did you mean 'CartPole-v1'?")
    assert "flowrl.register_env('CartPol-v1', lambda env_config: MyEnv(env_config))" in message


def test_unknown_env_suggests_close_registered_names():
    register_env("MyGridWorld-v0", short_cartpole)
    with pytest.raises(ValueError, match="Did you mean 'MyGridWorld-v0'"):
        get_env_creator("MyGridWorld-v1")


def test_unknown_env_with_no_close_name():
    with pytest.raises(ValueError, match="No registered or gymnasium environment has a similar"):
        get_env_creator("zzzz-qqqq")


def test_module_prefixed_id_with_missing_module():
    with pytest.raises(ValueError, match="names module 'no_such_module', which cannot be imported"):
        get_env_creator("no_such_module:Thing-v0")


def test_creator_returning_none_is_a_type_error():
    register_env("Broken", lambda env_config: None)
    with pytest.raises(TypeError) as info:
        make_env("Broken")
    assert "The creator registered as 'Broken' must return a gymnasium.Env" in str(info.value)
    assert "returned env=None of type builtins.NoneType" in str(info.value)


def test_creator_returning_an_old_gym_env_explains_the_port():
    old_gym_env = type("CartPoleEnv", (), {"__module__": "gym.envs.classic_control"})()
    register_env("OldGym", lambda env_config: old_gym_env)
    with pytest.raises(TypeError, match="old `gym` package; port it to gymnasium"):
        make_env("OldGym")


def test_register_env_checks_its_arguments():
    with pytest.raises(TypeError, match="needs a callable creator"):
        register_env("Instance", gymnasium.make("CartPole-v1"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="non-empty string name; got name=''"):
        register_env("", short_cartpole)
