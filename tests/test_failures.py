"""Failures stay visible: a failed plan stays failed, health counts live workers, and a worker
that cannot be restarted ends the run with a FlowError after bounded, backed-off retries."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import flowrl
from flowrl.iter import executor as flow_executor
from flowrl.ops import ParallelRollouts
from flowrl.testing import CorridorEnv

BASE = {"num_workers": 0, "num_envs_per_worker": 1, "rollout_fragment_length": 10,
        "train_batch_size": 20, "seed": 3, "num_cpus_per_worker": 0.5,
        "model": {"fcnet_hiddens": [8]}}


class BrittleCorridor(CorridorEnv):
    """A corridor whose constructor fails while the file `env_config["failures"]` holds a
    positive count (decremented per failure; "always" fails every time)."""

    def __init__(self, env_config: dict | None = None) -> None:
        config = dict(env_config or {})
        counter = Path(config.pop("failures"))
        if counter.exists():
            remaining = counter.read_text()
            if remaining == "always":
                raise RuntimeError("BrittleCorridor cannot start: the track is gone")
            if int(remaining) > 0:
                counter.write_text(str(int(remaining) - 1))
                raise RuntimeError("BrittleCorridor cannot start this time")
        super().__init__(config)


@pytest.fixture(scope="module", autouse=True)
def envs_registered():
    flowrl.register_env("failures_corridor", CorridorEnv)
    flowrl.register_env("brittle_corridor", BrittleCorridor)


def explodes(batch):
    raise ValueError("the third batch was malformed")


def plan_that_fails(workers, config):
    """Fails on the first batch it sees."""
    return ParallelRollouts(workers, mode="bulk_sync").for_each(explodes)


def test_a_failed_plan_stays_failed_and_names_the_first_error(executor):
    trainer = flowrl.Trainer("pg", env="failures_corridor", config=BASE, plan=plan_that_fails)
    try:
        with pytest.raises(flowrl.FlowError, match="the third batch was malformed"):
            trainer.train()
        for _ in range(2):
            with pytest.raises(flowrl.FlowError) as info:
                trainer.train()
            message = str(info.value)
            assert "earlier train() call" in message
            assert "the third batch was malformed" in message
    finally:
        trainer.stop()


def test_a_plan_that_runs_out_says_so_instead_of_stop_iteration(local_executor):
    trainer = flowrl.Trainer("pg", env="failures_corridor", config=BASE)
    try:
        trainer.train()
        trainer._plan_iter = iter([])  # the plan's iterator is exhausted
        with pytest.raises(RuntimeError, match="The plan ended after 1 iterations"):
            trainer.train()
        with pytest.raises(flowrl.FlowError, match="The plan ended"):
            trainer.train()
    finally:
        trainer.stop()


def test_num_healthy_workers_counts_live_workers(ray_executor):
    trainer = flowrl.Trainer("pg", env="failures_corridor", config={**BASE, "num_workers": 2})
    try:
        assert trainer.workers.num_healthy_workers == 2
        for handle in trainer.workers.remote_workers():
            flow_executor.kill(handle)
        deadline = time.monotonic() + 20
        while trainer.workers.num_healthy_workers and time.monotonic() < deadline:
            time.sleep(0.2)
        assert trainer.workers.num_healthy_workers == 0
    finally:
        trainer.stop()


def brittle_trainer(tmp_path: Path, **overrides) -> tuple[flowrl.Trainer, Path]:
    counter = tmp_path / "failures"
    config = {**BASE, "num_workers": 1, "env_config": {"failures": str(counter)},
              "max_worker_restarts": 2, **overrides}
    return flowrl.Trainer("pg", env="brittle_corridor", config=config), counter


def test_a_replacement_that_dies_while_starting_is_retried(executor, tmp_path):
    trainer, counter = brittle_trainer(tmp_path)
    try:
        trainer.train()
        counter.write_text("1")  # the first replacement fails in its env constructor
        flow_executor.kill(trainer.workers.remote_workers()[0])
        result = trainer.train()
    finally:
        trainer.stop()
    assert trainer.workers.num_worker_restarts == 2
    assert result["num_healthy_workers"] == 1
    assert counter.read_text() == "0"


def test_a_worker_that_fails_the_same_way_every_time_ends_the_run(executor, tmp_path):
    trainer, counter = brittle_trainer(tmp_path, max_worker_restarts=1)
    try:
        trainer.train()
        counter.write_text("always")
        flow_executor.kill(trainer.workers.remote_workers()[0])
        start = time.monotonic()
        with pytest.raises(flowrl.FlowError) as info:
            trainer.train()
        elapsed = time.monotonic() - start
    finally:
        trainer.stop()
    message = str(info.value)
    assert "rollout worker 1 could not be kept alive" in message
    assert "the track is gone" in message and "max_worker_restarts" in message
    assert trainer.workers.num_worker_restarts <= 2
    assert elapsed < 60


class HangingCorridor(CorridorEnv):
    """A corridor whose `step()` hangs (for an hour) when the file `env_config["hang"]`
    exists; the first env to hang removes it, so a replacement runs normally."""

    def __init__(self, env_config: dict | None = None) -> None:
        config = dict(env_config or {})
        self.marker = Path(config.pop("hang"))
        super().__init__(config)

    def step(self, action):
        if self.marker.exists():
            self.marker.unlink(missing_ok=True)
            time.sleep(3600)
        return super().step(action)


def hanging_trainer(tmp_path, **overrides):
    flowrl.register_env("hanging_corridor", HangingCorridor)
    marker = tmp_path / "hang"
    config = {**BASE, "num_workers": 1, "sample_timeout_s": 3.0,
              "env_config": {"hang": str(marker)}, **overrides}
    return flowrl.Trainer("pg", env="hanging_corridor", config=config), marker


def test_a_worker_whose_env_hangs_is_reported_and_replaced(ray_executor, tmp_path, caplog):
    """0.2 waited silently forever: a synchronous plan now gives up on the worker after
    sample_timeout_s, says so naming the worker and its env, and goes on with a new one."""
    trainer, marker = hanging_trainer(tmp_path)
    try:
        trainer.train()
        marker.touch()
        start = time.monotonic()
        with caplog.at_level("WARNING", logger="flowrl"):
            result = trainer.train()
        elapsed = time.monotonic() - start
    finally:
        trainer.stop()
    assert elapsed < 60 and result["num_healthy_workers"] == 1
    assert trainer.workers.num_worker_restarts == 1
    warning = next(r.getMessage() for r in caplog.records if "no sample" in r.getMessage())
    assert "Rollout worker 1 returned no sample for 3.0 s" in warning
    assert "HangingCorridor" in warning and "step() or reset()" in warning


def test_without_recreation_a_hanging_env_fails_the_run_with_that_message(ray_executor,
                                                                          tmp_path):
    trainer, marker = hanging_trainer(tmp_path, recreate_failed_workers=False)
    try:
        trainer.train()
        marker.touch()
        with pytest.raises(flowrl.FlowError) as info:
            trainer.train()
    finally:
        trainer.stop()
    message = str(info.value)
    assert "Rollout worker 1 returned no sample for 3.0 s (sample_timeout_s)" in message
    assert "HangingCorridor" in message and "recreate_failed_workers=True" in message


def test_sample_timeout_must_be_positive():
    with pytest.raises(ValueError, match="sample_timeout_s must be > 0 seconds, or None"):
        flowrl.Trainer("pg", env="failures_corridor", config={**BASE, "sample_timeout_s": 0})
