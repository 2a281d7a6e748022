"""New-user mistakes and the messages flowrl answers them with (issue 22's measure).

Each mistake is something a user of this kind of library gets wrong in their first hours:
a misspelt key, a value of the wrong type, an env that breaks its contract, a checkpoint used
the wrong way. The answer is *clear* when it is one message (no traceback on the CLI), of the
kind the mistake calls for, that names what was wrong (every fragment listed for the mistake
appears in it). The script prints each verdict and the count.

    python benchmarks/mistakes.py            # about a minute: Python calls, then CLI runs
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np

import flowrl
from flowrl.testing import CorridorEnv

ROOT = Path(__file__).resolve().parents[1]
TMP = Path(tempfile.mkdtemp(prefix="flowrl-mistakes-"))


@dataclass
class Mistake:
    name: str
    run: Callable[[], object] | list[str]
    """A Python call that must raise, or the arguments of a `flowrl` command that must fail."""
    fragments: tuple[str, ...]
    """What a clear answer names (case-insensitive)."""
    errors: tuple[type, ...] = (ValueError, TypeError, KeyError, RuntimeError, FileNotFoundError)
    answer: str = field(default="", init=False)


class WrongShape(CorridorEnv):
    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        return np.zeros(5, np.float32), info


class NanReward(CorridorEnv):
    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, float("nan"), terminated, truncated, info


class InfObs(CorridorEnv):
    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return np.full_like(obs, np.inf), reward, terminated, truncated, info


class OldApi(CorridorEnv):
    def step(self, action):
        obs, reward, terminated, _, info = super().step(action)
        return obs, reward, terminated, info  # gym's 4-tuple


class NoSpaces(gym.Env):
    def __init__(self, env_config=None):
        del env_config

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}


for name, env in [
    ("m_wrong_shape", WrongShape),
    ("m_nan_reward", NanReward),
    ("m_inf_obs", InfObs),
    ("m_old_api", OldApi),
    ("m_no_spaces", NoSpaces),
    ("m_corridor", CorridorEnv),
]:
    flowrl.register_env(name, env)

LOCAL = {"num_workers": 0, "train_batch_size": 64, "rollout_fragment_length": 32}
PPO_LOCAL = {**LOCAL, "sgd_minibatch_size": 32}


def trainer(algo: str = "ppo", env: str = "m_corridor", **config: object) -> Callable[[], object]:
    base = {**LOCAL, "sgd_minibatch_size": 32} if algo == "ppo" else dict(LOCAL)

    def build_and_train() -> object:
        built = flowrl.Trainer(algo, env=env, config={**base, **config}, local_mode=True)
        try:
            return built.train()
        finally:
            built.stop()

    return build_and_train


def saved_checkpoint() -> str:
    built = flowrl.Trainer("ppo", env="CartPole-v1", config=PPO_LOCAL, local_mode=True)
    built.train()
    path = built.save(str(TMP / "ckpt"))
    built.stop()
    return path


def call_after_stop() -> object:
    built = flowrl.Trainer("ppo", env="CartPole-v1", config=PPO_LOCAL, local_mode=True)
    built.stop()
    return built.train()


def restore_into_other_algo() -> object:
    built = flowrl.Trainer("a2c", env="CartPole-v1", config={"num_workers": 0}, local_mode=True)
    try:
        return built.restore(saved_checkpoint())
    finally:
        built.stop()


ARENA = {"env_config": {"width": 4, "height": 4, "timestep_limit": 10}}
TWO = {"p1": {}, "p2": {}}

PYTHON = [
    Mistake(
        "unknown algorithm",
        lambda: flowrl.Trainer("ppo2", env="CartPole-v1"),
        ("ppo2", "did you mean", "ppo"),
    ),
    Mistake("misspelt config key", trainer(learning_rate=0.01), ("learning_rate", "lr")),
    Mistake(
        "misspelt nested model key",
        trainer(model={"fcnet_hidden": [8]}),
        ("fcnet_hidden", "fcnet_hiddens"),
    ),
    Mistake(
        "string for an int", trainer(train_batch_size="big"), ("train_batch_size", "big", "int")
    ),
    Mistake("negative lr", trainer(lr=-1.0), ("lr", "-1")),
    Mistake("gamma above 1", trainer(gamma=1.5), ("gamma", "1.5")),
    Mistake("zero workers for A3C", trainer("a3c"), ("num_workers", "a3c")),
    Mistake(
        "minibatch larger than batch",
        trainer(sgd_minibatch_size=10_000),
        ("sgd_minibatch_size", "10000", "train_batch_size"),
    ),
    Mistake("unknown framework", trainer(framework="jax"), ("framework", "jax")),
    Mistake("bad batch_mode", trainer(batch_mode="episodes"), ("batch_mode", "episodes")),
    Mistake("unknown env", trainer(env="CartPol-v1"), ("CartPol-v1", "CartPole-v1")),
    Mistake(
        "DQN on Box actions", trainer("dqn", env="Pendulum-v1"), ("dqn", "pendulum", "discrete")
    ),
    Mistake(
        "buffer smaller than learning_starts",
        trainer("dqn", buffer_size=100, learning_starts=1000),
        ("buffer_size", "learning_starts", "100", "1000"),
    ),
    Mistake("Ape-X without workers", trainer("apex"), ("num_workers", "ape-x")),
    Mistake(
        "observations of the wrong shape",
        trainer(env="m_wrong_shape"),
        ("m_wrong_shape", "shape (5,)", "observation_space"),
    ),
    Mistake("NaN reward", trainer(env="m_nan_reward"), ("nan", "reward")),
    Mistake("infinite observation", trainer(env="m_inf_obs"), ("inf", "observation")),
    Mistake("gym's old 4-tuple step", trainer(env="m_old_api"),
            ("step", "4 value", "terminated, truncated")),
    Mistake("env without spaces", trainer(env="m_no_spaces"), ("observation_space",)),
    Mistake("zero envs per worker", trainer(num_envs_per_worker=0), ("num_envs_per_worker",)),
    Mistake("num_gpus without a GPU", trainer(num_gpus=1), ("num_gpus", "gpu")),
    Mistake("bad lr_schedule", trainer(lr_schedule=[[0, 0.1], [10]]), ("lr_schedule",)),
    Mistake(
        "bad stop key",
        lambda: flowrl.run("ppo", env="CartPole-v1", local_mode=True, stop={"reward": 100}),
        ("reward", "stop"),
    ),
    Mistake(
        "zero evaluation episodes with an interval",
        trainer(evaluation_interval=1, evaluation_num_episodes=0),
        ("evaluation_num_episodes", "evaluation_interval"),
    ),
    Mistake(
        "callbacks not a Callbacks class",
        trainer(callbacks=dict),
        ("callbacks", "flowrl.callbacks"),
    ),
    Mistake(
        "callbacks path that does not import",
        trainer(callbacks="nope_mod:Hooks"),
        ("nope_mod:hooks", "does not import"),
    ),
    Mistake(
        "bad observation_filter",
        trainer(observation_filter="Standardize"),
        ("observation_filter", "standardize"),
    ),
    Mistake("clip_rewards of zero", trainer(clip_rewards=0.0), ("clip_rewards",)),
    Mistake("sample_timeout_s of zero", trainer(sample_timeout_s=0), ("sample_timeout_s", "0")),
    Mistake(
        "multi-agent keys on a single-agent env",
        trainer(policies=TWO),
        ("single-agent", "policies"),
    ),
    Mistake(
        "several policies, no mapping",
        trainer(env="MultiAgentArena-v0", policies=TWO, **ARENA),
        ("policy_mapping",),
    ),
    Mistake(
        "mapping to an unknown policy",
        trainer(
            env="MultiAgentArena-v0",
            policies=TWO,
            policy_mapping={"agent1": "p1", "agent2": "p3"},
            **ARENA,
        ),
        ("p3", "agent2", "p1"),
    ),
    Mistake(
        "RLlib-style mapping function",
        trainer(
            env="MultiAgentArena-v0",
            policies=TWO,
            policy_mapping=lambda agent_id, episode, worker: "p1",
            **ARENA,
        ),
        ("agent_id", "policy_mapping(agent_id)"),
    ),
    Mistake(
        "policy of an unknown algorithm",
        trainer(
            env="MultiAgentArena-v0",
            policies={"p1": {}, "p2": {"algo": "dqnn"}},
            policy_mapping={"agent1": "p1", "agent2": "p2"},
            **ARENA,
        ),
        ("dqnn", "dqn"),
    ),
    Mistake(
        "mixing in a non-composable algorithm",
        trainer(
            env="MultiAgentArena-v0",
            policies={"p1": {}, "p2": {"algo": "a3c"}},
            policy_mapping={"agent1": "p1", "agent2": "p2"},
            **ARENA,
        ),
        ("a3c", "p2", "ppo"),
    ),
    Mistake(
        "policies_to_train names an unknown policy",
        trainer(
            env="MultiAgentArena-v0",
            policies=TWO,
            policies_to_train=["p9"],
            policy_mapping={"agent1": "p1", "agent2": "p2"},
            **ARENA,
        ),
        ("p9", "policies_to_train"),
    ),
    Mistake("train() after stop()", call_after_stop, ("stopped",)),
    Mistake(
        "restoring a missing checkpoint",
        lambda: flowrl.Trainer.from_checkpoint(str(TMP / "nothing-here")),
        ("nothing-here", "checkpoint"),
    ),
    Mistake("restoring another algorithm's checkpoint", restore_into_other_algo, ("ppo", "a2c")),
    Mistake(
        "0.1's get_policy_class(algo)",
        lambda: flowrl.get_policy_class("pg", framework="torch"),
        ("0.1", "get_policy_spec"),
    ),
    Mistake(
        "custom model that is not a model",
        trainer(model={"custom_model": "nope_mod:Net"}),
        ("nope_mod:net",),
    ),
    Mistake(
        "a plan that returns the wrong thing",
        lambda: flowrl.Trainer(
            "ppo",
            env="CartPole-v1",
            config=PPO_LOCAL,
            local_mode=True,
            plan=lambda workers, config: [1, 2, 3],
        ),
        ("plan", "iterator"),
    ),
]

CLI = [
    Mistake("train without --run", ["train", "--env", "CartPole-v1"], ("--run",)),
    Mistake(
        "misspelt algorithm", ["train", "--run", "PP0", "--env", "CartPole-v1"], ("pp0", "ppo")
    ),
    Mistake(
        "stop that is not JSON",
        ["train", "--run", "PPO", "--env", "CartPole-v1", "--stop", "reward=100"],
        ("--stop", "json"),
    ),
    Mistake(
        "config that is not JSON",
        ["train", "--run", "PPO", "--env", "CartPole-v1", "--config", "{lr: 1}"],
        ("--config", "json"),
    ),
    Mistake(
        "unknown config flag",
        ["train", "--run", "PPO", "--env", "CartPole-v1", "--learning-rate", "0.1"],
        ("learning-rate",),
    ),
    Mistake(
        "config flag of the wrong type",
        ["train", "--run", "PPO", "--env", "CartPole-v1", "--lr", "fast"],
        ("lr", "fast"),
    ),
    Mistake(
        "missing config file",
        ["train", "--run", "PPO", "--env", "CartPole-v1", "--config-file", "nope.yaml"],
        ("nope.yaml",),
    ),
    Mistake(
        "unknown env",
        ["train", "--run", "PPO", "--env", "CartPol-v1", "--local-mode"],
        ("cartpol-v1", "cartpole-v1"),
    ),
    Mistake(
        "DQN on Pendulum",
        ["train", "--run", "DQN", "--env", "Pendulum-v1", "--local-mode"],
        ("dqn", "pendulum", "discrete"),
    ),
    Mistake(
        "buffer smaller than learning_starts (CLI)",
        [
            "train",
            "--run",
            "DQN",
            "--env",
            "CartPole-v1",
            "--local-mode",
            "--config",
            '{"buffer_size": 500}',
            "--stop",
            '{"training_iteration": 3}',
        ],
        ("buffer_size", "learning_starts"),
    ),
    Mistake(
        "unknown stop key",
        [
            "train",
            "--run",
            "PPO",
            "--env",
            "CartPole-v1",
            "--local-mode",
            "--stop",
            '{"score": 10}',
        ],
        ("score",),
    ),
    Mistake(
        "checkpoint dir that is a file",
        [
            "train",
            "--run",
            "PPO",
            "--env",
            "CartPole-v1",
            "--local-mode",
            "--checkpoint-dir",
            str(ROOT / "README.md"),
            "--stop",
            '{"training_iteration": 1}',
        ],
        ("readme.md",),
    ),
    Mistake(
        "too many workers (CLI)",
        [
            "train",
            "--run",
            "PPO",
            "--env",
            "CartPole-v1",
            "--config",
            '{"num_workers": 64}',
            "--stop",
            '{"training_iteration": 1}',
        ],
        ("num_workers", "64"),
    ),
    Mistake(
        "restore a missing checkpoint (CLI)",
        [
            "train",
            "--run",
            "PPO",
            "--env",
            "CartPole-v1",
            "--local-mode",
            "--restore",
            "no/such/ckpt",
        ],
        ("no/such/ckpt",),
    ),
    Mistake("rollout of a missing checkpoint", ["rollout", "no/such/ckpt"], ("no/such/ckpt",)),
    Mistake("rollout with zero episodes", ["rollout", "x", "--episodes", "0"], ("--episodes",)),
    Mistake(
        "rollout --out into a missing directory",
        ["rollout", "x", "--out", "no/such/dir/e.json"],
        ("does not exist",),
    ),
    Mistake(
        "export of a missing checkpoint",
        ["export", "no/such/ckpt", "--out", str(TMP)],
        ("no/such/ckpt",),
    ),
    Mistake("plan of an unknown algorithm", ["plan", "--run", "IMPAL"], ("impal", "impala")),
    Mistake(
        "plan with negative iterations",
        ["plan", "--run", "PPO", "--iterations", "-1"],
        ("--iterations",),
    ),
    Mistake("view of a directory without records", ["view", str(TMP)], (str(TMP).lower(),)),
    Mistake("unknown command", ["fly", "--run", "PPO"], ("fly",)),
]


def judge_python(mistake: Mistake) -> bool:
    try:
        mistake.run()
    except mistake.errors as error:
        mistake.answer = f"{type(error).__name__}: {error}"
        text = str(error).lower()
        return all(fragment.lower() in text for fragment in mistake.fragments)
    except Exception as error:  # noqa: BLE001 - an answer of the wrong kind is the finding
        mistake.answer = f"{type(error).__name__}: {error}"
        return False
    mistake.answer = "no error"
    return False


def judge_cli(mistake: Mistake) -> bool:
    env = {**os.environ, "RAY_ADDRESS": "local"}
    done = subprocess.run(
        [sys.executable, "-m", "flowrl.cli", *mistake.run],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=TMP,
        env=env,
    )
    text = (done.stderr + done.stdout).lower()
    mistake.answer = (done.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1][:300]
    return (
        done.returncode != 0
        and "traceback (most recent call last)" not in text
        and all(fragment.lower() in text for fragment in mistake.fragments)
    )


def main() -> None:
    results = [(m, judge_python(m)) for m in PYTHON] + [(m, judge_cli(m)) for m in CLI]
    for mistake, clear in results:
        print(f"{'clear  ' if clear else 'UNCLEAR'}  {mistake.name}: {mistake.answer[:240]}")
    clear = sum(ok for _, ok in results)
    print(
        f"\n{clear} of {len(results)} mistakes get a clear answer "
        f"({len(PYTHON)} Python calls, {len(CLI)} CLI runs)."
    )


if __name__ == "__main__":
    main()
