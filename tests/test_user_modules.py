"""User code reaches the workers: envs, plans and operator functions from a module that only the
driver can import (loaded by path from a temporary directory) work on Ray without any setup, and
where the workers truly cannot import a module the run stops at once with a FlowError naming
the object, the module and the fix, without replacing workers."""

from __future__ import annotations

import importlib.util
import os
import sys
import textwrap
import time
import uuid
from pathlib import Path
from types import ModuleType

import pytest

import flowrl
from flowrl.iter import shipping

CONFIG = {"num_workers": 1, "num_envs_per_worker": 1, "rollout_fragment_length": 10,
          "train_batch_size": 20, "seed": 3, "num_cpus_per_worker": 0.5,
          "min_steps_per_iteration": 20, "model": {"fcnet_hiddens": [8]}}

USER_MODULE_SOURCE = textwrap.dedent('''
    """A user's module: an env, an operator function and a plan, importable by the driver only."""
    import os

    import numpy as np

    from flowrl.ops import ParallelRollouts
    from flowrl.testing import CorridorEnv


    class UserCorridor(CorridorEnv):
        """A corridor defined outside any package the workers can import."""


    def mark_with_pid(batch):
        """Records which process ran this operator."""
        batch["ran_in_pid"] = np.full(len(batch), os.getpid())
        return batch


    def user_plan(workers, config):
        return ParallelRollouts(workers, mode="raw").for_each(mark_with_pid).gather_sync()
''')


def load_module_by_path(directory: Path) -> ModuleType:
    """Writes the user module to ``directory`` under a fresh name and loads it by its path, as a
    script loads a sibling file with importlib: the module is in sys.modules, but on no path
    that a Ray worker searches."""
    name = f"user_module_{uuid.uuid4().hex[:10]}"
    path = directory / f"{name}.py"
    path.write_text(USER_MODULE_SOURCE)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def user_module(tmp_path):
    module = load_module_by_path(tmp_path)
    yield module
    sys.modules.pop(module.__name__, None)


def test_env_plan_and_operator_from_a_module_loaded_by_path_run_on_ray(executor, user_module):
    env_name = f"UserCorridor-{executor}"
    flowrl.register_env(env_name, user_module.UserCorridor)
    trainer = flowrl.Trainer("pg", env=env_name, config=CONFIG, plan=user_module.user_plan)
    try:
        batch = next(iter(trainer.plan))
        assert len(batch) >= 10
        ran_in = set(batch["ran_in_pid"].tolist())
        if executor == "ray":
            assert os.getpid() not in ran_in, "the operator ran on the driver, not a worker"
            assert user_module.__name__ in shipping.shipped_by_value()
        else:
            assert ran_in == {os.getpid()}
        assert trainer.workers.num_worker_restarts == 0
    finally:
        trainer.stop()


def test_the_builtin_plan_trains_on_an_env_from_a_module_loaded_by_path(ray_executor,
                                                                       user_module):
    flowrl.register_env("UserCorridorPG", user_module.UserCorridor)
    trainer = flowrl.Trainer("pg", env="UserCorridorPG", config=CONFIG)
    try:
        result = trainer.train()
        assert result["timesteps_total"] >= 20
        assert result["num_worker_restarts"] == 0
    finally:
        trainer.stop()


def test_importable_modules_still_travel_by_reference(ray_executor, tmp_path, monkeypatch):
    """Only modules the workers cannot import are copied: flowrl, gymnasium and a module on a
    directory in PYTHONPATH (which the workers inherit) keep going by reference."""
    name = f"on_pythonpath_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text("VALUE = 1\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module(name)
    elsewhere = tmp_path / "not_on_any_path"
    elsewhere.mkdir()
    by_path = load_module_by_path(elsewhere)
    try:
        shipping.ship_unimportable_modules()
        shipped = shipping.shipped_by_value()
        assert by_path.__name__ in shipped
        assert not {"flowrl", "flowrl.env", "gymnasium", "numpy", "colorama", name} & set(shipped)
    finally:
        sys.modules.pop(name, None)
        sys.modules.pop(by_path.__name__, None)


def pretend_the_workers_can_import(monkeypatch, module: ModuleType) -> None:
    """Makes the driver believe the workers can import ``module`` (as on a cluster where it is
    installed on the head node only), so it is not shipped by value and the workers fail."""
    monkeypatch.setitem(shipping._top_level_by_value, module.__name__, False)


def test_an_env_the_workers_cannot_import_fails_at_once_naming_module_and_fix(
        ray_executor, user_module, monkeypatch):
    pretend_the_workers_can_import(monkeypatch, user_module)
    flowrl.register_env("UnshippableCorridor", user_module.UserCorridor)
    trainer = flowrl.Trainer("pg", env="UnshippableCorridor", config=CONFIG)
    try:
        start = time.monotonic()
        with pytest.raises(flowrl.FlowError) as info:
            trainer.train()
        elapsed = time.monotonic() - start
        message = str(info.value)
        assert f"cannot import module {user_module.__name__!r}" in message
        assert "UserCorridor" in message  # the object
        assert "PYTHONPATH" in message and "py_modules" in message  # the fix
        assert trainer.workers.num_worker_restarts == 0, "no pointless replacement"
        assert elapsed < 30, f"took {elapsed:.0f} s: it must fail at once"
    finally:
        trainer.stop()


def test_an_operator_the_workers_cannot_import_fails_as_a_flow_error_naming_it(
        ray_executor, user_module, monkeypatch):
    pretend_the_workers_can_import(monkeypatch, user_module)
    trainer = flowrl.Trainer("pg", env="CartPole-v1", config=CONFIG, plan=user_module.user_plan)
    try:
        with pytest.raises(flowrl.FlowError) as info:
            trainer.train()
        error = info.value
        assert error.operator == "for_each(mark_with_pid)"
        assert error.original_type == "ModuleNotFoundError"
        assert f"cannot import module {user_module.__name__!r}" in str(error)
        assert "py_modules" in str(error)
        assert trainer.workers.num_worker_restarts == 0
    finally:
        trainer.stop()
