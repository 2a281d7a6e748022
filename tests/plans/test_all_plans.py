"""Properties every built-in plan shares: smoke runs, determinism, lazy and picklable plans."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

import flowrl
from flowrl.plans import ALGORITHMS
from flowrl.policy import deterministic_actor_critic_model

SYNC_ALGOS = ["pg", "a2c", "ppo"]


@pytest.mark.parametrize("framework", ["torch", pytest.param("tf", marks=pytest.mark.tf)])
@pytest.mark.parametrize("algo", SYNC_ALGOS)
def test_two_iterations_in_process(algo, framework, tiny_config, local_executor):
    trainer = flowrl.Trainer(algo, env="corridor", config=tiny_config(algo, framework=framework))
    try:
        first, second = trainer.train(), trainer.train()
    finally:
        trainer.stop()
    assert second["training_iteration"] == 2
    assert second["timesteps_total"] >= 2 * 20
    assert second["num_steps_trained"] > 0
    assert np.isfinite(second["info"]["learner"]["default_policy"]["total_loss"])
    assert first["timesteps_total"] < second["timesteps_total"]


@pytest.mark.parametrize("algo", SYNC_ALGOS)
def test_same_seed_gives_identical_weights(algo, tiny_config, local_executor):
    def train_twice():
        trainer = flowrl.Trainer(algo, env="corridor", config=tiny_config(algo))
        try:
            trainer.train()
            trainer.train()
            return trainer.get_policy().get_weights()
        finally:
            trainer.stop()

    first, second = train_twice(), train_twice()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_plan_builds_and_serializes_before_running(algo, tiny_config, corridor_for,
                                                   local_executor):
    # Nothing is generated at run time, so plans pickle with the standard pickle module.
    config = tiny_config(algo)
    trainer = flowrl.Trainer(algo, env=corridor_for(algo), config=config)
    try:
        assert repr(pickle.loads(pickle.dumps(trainer.plan))) == repr(trainer.plan)
        assert pickle.loads(pickle.dumps(ALGORITHMS[algo])).plan is ALGORITHMS[algo].plan
        graph = trainer.plan_graph()
        labels = [data["label"] for _, data in graph.nodes(data=True)]
        # The plan reads as written: its experience source is the operator the plan calls.
        sources = ("ParallelRollouts(", "AsyncGradients(", "RolloutWorkers",
                   "PerturbationRollouts")
        assert any(label.startswith(sources) for label in labels), labels
    finally:
        trainer.stop()


def test_building_a_trainer_in_local_mode_never_imports_ray():
    code = (
        "import sys, flowrl\n"
        "from flowrl.testing import CorridorEnv\n"
        "flowrl.register_env('corridor', CorridorEnv)\n"
        "t = flowrl.Trainer('ppo', env='corridor', local_mode=True,\n"
        "                   config={'num_workers': 2, 'num_cpus_per_worker': 0})\n"
        "repr(t.plan); t.plan_graph()\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


@pytest.mark.parametrize("framework", ["torch", pytest.param("tf", marks=pytest.mark.tf)])
@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_every_built_in_policy_pickles_with_plain_pickle(algo, framework):
    import gymnasium as gym

    spec = ALGORITHMS[algo]
    actions = (gym.spaces.Box(-1, 1, (2,), np.float32)
               if spec.policy.model is deterministic_actor_critic_model else gym.spaces.Discrete(2))
    policy = spec.policy.build(gym.spaces.Box(-1, 1, (3,), np.float32), actions,
                               spec.config_class(framework=framework, seed=0))
    clone = pickle.loads(pickle.dumps(policy))
    assert type(clone) is type(policy) and clone.config == policy.config
    for name, value in policy.get_weights().items():
        np.testing.assert_array_equal(value, clone.get_weights()[name])


def test_get_policy_class_names_its_replacement_for_the_0_1_call():
    assert flowrl.get_policy_class("torch").__name__ == "TorchPolicy"
    assert flowrl.get_policy_class(framework="torch").__name__ == "TorchPolicy"
    with pytest.raises(TypeError) as info:
        flowrl.get_policy_class("pg", framework="torch")
    message = str(info.value)
    assert "0.1" in message and "get_policy_spec('pg').build(" in message
    assert "get_policy_class(framework='torch')" in message
    with pytest.raises(ValueError, match="valid frameworks"):
        flowrl.get_policy_class("jax")
