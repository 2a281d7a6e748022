"""Checkpoints: no pickle, crafted files never run, atomic under kill -9, portable across plans."""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import flowrl
from flowrl import checkpoint
from flowrl.ops import STEPS_SAMPLED_COUNTER
from flowrl.testing import CorridorEnv

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_v1"

SMALL = {"num_workers": 0, "num_envs_per_worker": 2, "rollout_fragment_length": 10,
         "train_batch_size": 40, "sgd_minibatch_size": 20, "num_sgd_iter": 1, "seed": 3,
         "num_cpus_per_worker": 0, "model": {"fcnet_hiddens": [8]}}


@pytest.fixture(scope="module", autouse=True)
def corridor_registered():
    flowrl.register_env("checkpoint_corridor", CorridorEnv)


class WritesAFile:
    """Unpickling this object creates `path`: proof that a loader ran the checkpoint's code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def trained_ppo(config=SMALL, iterations: int = 1) -> flowrl.Trainer:
    trainer = flowrl.Trainer("ppo", env="checkpoint_corridor", config=config)
    for _ in range(iterations):
        trainer.train()
    return trainer


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        np.testing.assert_array_equal(value, b[name])


# --- the format ---------------------------------------------------------------------------


def test_nested_state_round_trips_through_json_and_npz(tmp_path):
    state = {"policy": {"weights": {"pi/fc_0/kernel": np.ones((2, 3), np.float32),
                                    "pi/fc_0/bias": np.zeros(3, np.float32)},
                        "optimizer": {"step": np.int64(4), "lr": 1e-3}},
             "episodes": [(1.0, 5), (2.5, 7)], "name": "ppo", "none": None, "flag": True}
    checkpoint.write_checkpoint(tmp_path / "ckpt", state)
    loaded = checkpoint.read_checkpoint(tmp_path / "ckpt")
    kernel = loaded["policy"]["weights"]["pi/fc_0/kernel"]
    np.testing.assert_array_equal(kernel, np.ones((2, 3)))
    assert kernel.dtype == np.float32
    assert loaded["policy"]["optimizer"] == {"step": 4, "lr": 1e-3}
    assert loaded["episodes"] == [[1.0, 5], [2.5, 7]]
    assert (loaded["name"], loaded["none"], loaded["flag"]) == ("ppo", None, True)
    with np.load(tmp_path / "ckpt" / checkpoint.ARRAYS_FILE, allow_pickle=False) as arrays:
        assert sorted(arrays.files) == ["policy/weights/pi/fc_0/bias",
                                        "policy/weights/pi/fc_0/kernel"]
    document = json.loads((tmp_path / "ckpt" / checkpoint.STATE_FILE).read_text())
    assert document["format_version"] == checkpoint.FORMAT_VERSION


def test_a_value_a_checkpoint_cannot_hold_is_named(tmp_path):
    with pytest.raises(TypeError, match=r"'config/callbacks' is a set"):
        checkpoint.write_checkpoint(tmp_path / "ckpt", {"config": {"callbacks": {1, 2}}})
    assert not (tmp_path / "ckpt").exists()


def test_trainer_checkpoint_holds_no_pickle(local_executor, tmp_path):
    trainer = trained_ppo()
    try:
        path = Path(trainer.save(str(tmp_path)))
    finally:
        trainer.stop()
    assert sorted(os.listdir(path)) == [checkpoint.ARRAYS_FILE, checkpoint.STATE_FILE]
    with np.load(path / checkpoint.ARRAYS_FILE, allow_pickle=False) as arrays:
        assert any(name.startswith("policy_state/weights/") for name in arrays.files)
        assert any(name.startswith("policy_state/optimizer/exp_avg/") for name in arrays.files)
    state = json.loads((path / checkpoint.STATE_FILE).read_text())["state"]
    assert (state["algo"], state["env"], state["iteration"]) == ("PPO", "checkpoint_corridor", 1)


# --- crafted files never run --------------------------------------------------------------


def test_an_old_pickle_checkpoint_is_refused_without_being_opened(local_executor, tmp_path):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "checkpoint_000001"
    crafted.mkdir()
    (crafted / "trainer_state.pkl").write_bytes(pickle.dumps(WritesAFile(marker)))
    trainer = trained_ppo(iterations=0)
    try:
        with pytest.raises(checkpoint.CheckpointError, match="unpickling a file can run"):
            trainer.restore(str(crafted))
        with pytest.raises(checkpoint.CheckpointError, match="old pickle format"):
            flowrl.Trainer.from_checkpoint(str(crafted))
    finally:
        trainer.stop()
    assert not marker.exists()


def test_an_object_array_in_the_npz_is_refused_without_being_unpickled(local_executor, tmp_path):
    marker = tmp_path / "pwned"
    trainer = trained_ppo()
    try:
        path = Path(trainer.save(str(tmp_path / "checkpoints")))
        # Swap in an npz whose array holds an object that writes a file when unpickled.
        payload = np.empty(1, dtype=object)
        payload[0] = WritesAFile(marker)
        with open(path / checkpoint.ARRAYS_FILE, "wb") as f:
            np.savez(f, **{"policy_state/weights/pi/fc_0/kernel": payload})
        # A pickle under the old name beside a valid state file is never looked at either.
        (path / "trainer_state.pkl").write_bytes(pickle.dumps(WritesAFile(marker)))
        with pytest.raises(checkpoint.CheckpointError, match="never unpickles"):
            trainer.restore(str(path))
    finally:
        trainer.stop()
    assert not marker.exists()


def test_a_checkpoint_from_a_newer_format_says_to_upgrade(tmp_path):
    checkpoint.write_checkpoint(tmp_path / "ckpt", {"x": 1})
    state_file = tmp_path / "ckpt" / checkpoint.STATE_FILE
    document = json.loads(state_file.read_text())
    document["format_version"] = checkpoint.FORMAT_VERSION + 1
    state_file.write_text(json.dumps(document))
    with pytest.raises(checkpoint.CheckpointError, match="Upgrade flowrl"):
        checkpoint.read_checkpoint(tmp_path / "ckpt")


def test_the_committed_v1_checkpoint_still_restores(local_executor):
    trainer = flowrl.Trainer.from_checkpoint(str(FIXTURE))
    try:
        with np.load(FIXTURE / checkpoint.ARRAYS_FILE, allow_pickle=False) as arrays:
            saved = {name.removeprefix("policy_state/weights/"): arrays[name]
                     for name in arrays.files if name.startswith("policy_state/weights/")}
        assert_same_weights(trainer.get_policy().get_weights(), saved)
        assert trainer.iteration == 1
        assert trainer.metrics.counters[STEPS_SAMPLED_COUNTER] == 64
        assert trainer.compute_single_action(np.zeros(4, np.float32)) in (0, 1)
        assert trainer.train()["training_iteration"] == 2
    finally:
        trainer.stop()


# --- never torn -----------------------------------------------------------------------------

_SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    from flowrl.checkpoint import write_checkpoint
    path, version = sys.argv[1], 0
    while True:
        version += 1
        state = {"version": version, "weights": {f"w{i}": np.full(20_000, version, np.float32)
                                                 for i in range(8)}}
        write_checkpoint(path, state)
        print(version, flush=True)
""")


def _check_intact(path: Path) -> int:
    state = checkpoint.read_checkpoint(path)
    version = state["version"]
    for value in state["weights"].values():
        assert np.all(value == version), "a checkpoint mixes two saves"
    return version


def test_kill_9_at_any_moment_leaves_a_complete_checkpoint(tmp_path):
    rng = random.Random(0)
    script = tmp_path / "saver.py"
    script.write_text(_SAVER)
    path = tmp_path / "checkpoints" / "checkpoint_000001"
    outcomes = {"absent": 0, "intact": 0}
    last_version = 0
    deadline = time.monotonic() + 25
    for trial in range(24):
        if time.monotonic() > deadline:
            break
        saver = subprocess.Popen([sys.executable, str(script), str(path)],
                                 stdout=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.15, 0.9) if trial else 0.05)
        saver.kill()
        printed = saver.communicate()[0].split()
        if path.exists():
            version = _check_intact(path)
            # Either the last save this process reported, or one it finished after printing.
            assert version >= (int(printed[-1]) if printed else 0)
            outcomes["intact"] += 1
            last_version = version
        else:
            assert not printed and last_version == 0, "a completed save was lost"
            outcomes["absent"] += 1
    assert outcomes["intact"] >= 10, outcomes
    # Staging directories a kill left behind are removed by the next save.
    checkpoint.write_checkpoint(path, {"version": 0, "weights": {}})
    assert sorted(os.listdir(path.parent)) == [path.name]


def test_a_save_over_an_existing_checkpoint_replaces_it_whole(local_executor, tmp_path):
    trainer = trained_ppo()
    try:
        first = trainer.save(str(tmp_path))
        trainer.iteration -= 1  # save the next state under the same name
        trainer.train()
        second = trainer.save(str(tmp_path))
        weights = trainer.get_policy().get_weights()
    finally:
        trainer.stop()
    assert first == second
    restored = flowrl.Trainer.from_checkpoint(second)
    try:
        assert_same_weights(restored.get_policy().get_weights(), weights)
    finally:
        restored.stop()
    assert os.listdir(tmp_path) == [os.path.basename(first)]


# --- portable -------------------------------------------------------------------------------


def test_a_ray_checkpoint_with_workers_restores_in_local_mode_without_workers(
        ray_executor, tmp_path, caplog):
    config = {**SMALL, "num_workers": 2, "num_cpus_per_worker": 0.5}
    trainer = trained_ppo(config, iterations=2)
    try:
        path = trainer.save(str(tmp_path))
        weights = trainer.get_policy().get_state()["weights"]
        counters = dict(trainer.metrics.counters)
    finally:
        trainer.stop()

    with caplog.at_level(logging.INFO, logger="flowrl.trainer"):
        restored = flowrl.Trainer.from_checkpoint(path, config={"num_workers": 0})
    try:
        assert flowrl.is_local_mode()
        assert_same_weights(restored.get_policy().get_weights(), weights)
        assert dict(restored.metrics.counters) == counters
        assert restored.iteration == 2
        skipped = [r for r in caplog.records if "were not restored" in r.getMessage()]
        assert len(skipped) == 1
        assert restored.train()["training_iteration"] == 3
    finally:
        restored.stop()
    # `flowrl rollout` rebuilds the same checkpoint without workers, too.
    from flowrl import cli

    assert cli.main(["rollout", path, "--episodes", "1"]) == 0


def test_a_local_checkpoint_restores_into_more_workers_with_operator_statistics(
        local_executor, tmp_path):
    trainer = trained_ppo({**SMALL, "num_workers": 1}, iterations=2)
    try:
        path = trainer.save(str(tmp_path))
        optimizer = trainer.get_policy().get_state()["optimizer"]
        op_stats = trainer.plan.stats_state()
    finally:
        trainer.stop()
    same_shape = flowrl.Trainer.from_checkpoint(path)
    try:
        assert same_shape.plan.stats_state() == op_stats
        restored_optimizer = same_shape.get_policy().get_state()["optimizer"]
        assert restored_optimizer["step"] == optimizer["step"]
        assert_same_weights(restored_optimizer["exp_avg"], optimizer["exp_avg"])
    finally:
        same_shape.stop()
    more_workers = flowrl.Trainer.from_checkpoint(path, config={"num_workers": 2})
    try:
        assert more_workers.train()["training_iteration"] == 3
    finally:
        more_workers.stop()


_ENV_MODULE = textwrap.dedent("""
    import flowrl
    from flowrl.testing import CorridorEnv


    def make_my_corridor(env_config):
        return CorridorEnv(env_config)


    flowrl.register_env("my_corridor", make_my_corridor)
""")


def test_a_custom_env_checkpoint_says_which_module_registers_it(local_executor, tmp_path,
                                                                monkeypatch):
    module_file = tmp_path / "my_corridor_envs.py"
    module_file.write_text(_ENV_MODULE)
    checkpoint.import_env_module(str(module_file))
    trainer = flowrl.Trainer("pg", env="my_corridor", config={
        key: value for key, value in SMALL.items() if key not in ("sgd_minibatch_size",
                                                                  "num_sgd_iter")})
    try:
        trainer.train()
        path = trainer.save(str(tmp_path / "checkpoints"))
    finally:
        trainer.stop()

    from flowrl import env as env_module
    monkeypatch.delitem(env_module._REGISTRY, "my_corridor")  # a fresh process
    with pytest.raises(ValueError, match=r"--env-module my_corridor_envs") as info:
        flowrl.Trainer.from_checkpoint(path)
    assert "my_corridor_envs.make_my_corridor" in str(info.value)
    restored = flowrl.Trainer.from_checkpoint(path, env_module=str(module_file))
    try:
        assert restored.iteration == 1
    finally:
        restored.stop()
