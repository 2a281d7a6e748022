"""An exported policy (TorchScript or SavedModel) acts as the policy does, loaded without
flowrl."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from flowrl.config import from_dict
from flowrl.export import export_policy
from flowrl.plans import get_algorithm

FRAMEWORKS = ["torch", pytest.param("tf", marks=pytest.mark.tf)]
CARTPOLE = gym.make("CartPole-v1")
PENDULUM = gym.make("Pendulum-v1")


def built_policy(algo: str, framework: str, env: gym.Env, **overrides):
    spec = get_algorithm(algo)
    config = from_dict(spec.config_class, {"framework": framework, "seed": 1,
                                           "model": {"fcnet_hiddens": [16]}, **overrides})
    return spec.policy.build(env.observation_space, env.action_space, config)


def observations(env: gym.Env, count: int = 64) -> np.ndarray:
    env.observation_space.seed(0)
    return np.stack([env.observation_space.sample() for _ in range(count)]).astype(np.float32)


def exported_actions(path: str, framework: str, rows: np.ndarray, tmp_path) -> np.ndarray:
    """The exported model's actions, computed in a fresh interpreter that never imports
    flowrl (it is serving without the library)."""
    np.save(tmp_path / "rows.npy", rows)
    load = ("import torch; m = torch.jit.load(path); a = m(torch.as_tensor(rows)).numpy()"
            if framework == "torch" else
            "import tensorflow as tf; m = tf.saved_model.load(path); a = m(tf.constant(rows))"
            ".numpy()")
    code = (f"import sys, numpy as np; path = {path!r}; rows = np.load({str(tmp_path)!r} + "
            f"'/rows.npy'); {load}; np.save({str(tmp_path)!r} + '/actions.npy', a); "
            "assert not any(name.startswith('flowrl') for name in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    return np.load(tmp_path / "actions.npy")


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(("algo", "env"), [("ppo", CARTPOLE), ("dqn", CARTPOLE),
                                           ("ppo", PENDULUM)])
def test_exported_greedy_actions_equal_the_policys(algo, env, framework, tmp_path):
    policy = built_policy(algo, framework, env)
    rows = observations(env)
    expected, _, _ = policy.compute_actions(rows, explore=False)
    path = export_policy(policy, tmp_path / "exported")
    actions = exported_actions(path, framework, policy.preprocess(rows), tmp_path)
    assert actions.shape == expected.shape
    np.testing.assert_allclose(actions.astype(np.float64), expected.astype(np.float64),
                               rtol=1e-5, atol=1e-6)
    if algo == "ppo" and env is CARTPOLE:
        assert len(set(expected.tolist())) > 1  # a check that could tell the actions apart


def test_a_policy_that_cannot_be_exported_says_why(tmp_path):
    policy = built_policy("ppo", "torch", CARTPOLE)
    policy.is_recurrent = True  # as a recurrent policy reports itself
    with pytest.raises(ValueError, match="stateless policies; this one is recurrent"):
        export_policy(policy, tmp_path)


def test_flowrl_export_writes_a_checkpoints_policy(tmp_path, capsys, local_executor):
    import flowrl
    from flowrl import cli

    result = flowrl.run("ppo", env="CartPole-v1", local_mode=True, verbose=0,
                        config={"num_workers": 0, "train_batch_size": 128,
                                "rollout_fragment_length": 64, "sgd_minibatch_size": 64,
                                "seed": 0}, stop={"training_iteration": 1},
                        checkpoint_dir=str(tmp_path / "ckpt"))
    assert cli.main(["export", result["checkpoint"], "--out", str(tmp_path / "out")]) == 0
    assert "Exported the torch policy to" in capsys.readouterr().out
    trainer = flowrl.Trainer.from_checkpoint(result["checkpoint"], local_mode=True)
    try:
        rows = observations(CARTPOLE)
        expected, _, _ = trainer.get_policy().compute_actions(rows, explore=False)
    finally:
        trainer.stop()
    actions = exported_actions(str(tmp_path / "out" / "policy.pt"), "torch", rows, tmp_path)
    np.testing.assert_array_equal(actions, expected)

