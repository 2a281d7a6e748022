"""Trainer and run(): iterations, results, evaluation, checkpoints, errors, faults."""

from __future__ import annotations

import os

import numpy as np
import pytest

import flowrl
from flowrl.ops import BroadcastWeights, ConcatBatches, ParallelRollouts, TrainOneStep
from flowrl.testing import CorridorEnv, NaNRewardEnv

BASE = {"num_workers": 0, "num_envs_per_worker": 2, "rollout_fragment_length": 10,
        "train_batch_size": 20, "seed": 3, "num_cpus_per_worker": 0,
        "batch_mode": "truncate_episodes",
        "model": {"fcnet_hiddens": [16]}}


@pytest.fixture(scope="module", autouse=True)
def envs_registered():
    flowrl.register_env("trainer_corridor", CorridorEnv)
    flowrl.register_env("nan_corridor", NaNRewardEnv)


@pytest.fixture
def pg_trainer(local_executor):
    trainer = flowrl.Trainer("pg", env="trainer_corridor", config=BASE)
    yield trainer
    trainer.stop()


def test_result_has_the_documented_keys(pg_trainer):
    result = pg_trainer.train()
    for key in ("episode_reward_mean", "episode_reward_min", "episode_reward_max",
                "episode_len_mean", "episodes_this_iter", "timesteps_total",
                "timesteps_this_iter", "num_steps_trained", "training_iteration",
                "time_this_iter_s", "time_total_s", "num_healthy_workers", "info", "ops"):
        assert key in result, key
    assert "default_policy" in result["info"]["learner"]
    assert result["ops"], "per-operator stats are missing"


@pytest.mark.parametrize(("min_steps", "expected"), [(0, 20), (40, 40), (41, 60)])
def test_iteration_stops_exactly_when_min_steps_are_reached(min_steps, expected, local_executor):
    trainer = flowrl.Trainer("pg", env="trainer_corridor",
                             config={**BASE, "min_steps_per_iteration": min_steps})
    try:
        first, second = trainer.train(), trainer.train()
    finally:
        trainer.stop()
    assert first["timesteps_this_iter"] == expected
    assert second["timesteps_this_iter"] == expected
    assert second["timesteps_total"] == 2 * expected


def test_save_restore_resumes_with_identical_weights_and_counters(pg_trainer, tmp_path):
    pg_trainer.train()
    pg_trainer.train()
    path = pg_trainer.save(str(tmp_path))
    weights = pg_trainer.get_policy().get_weights()
    counters = dict(pg_trainer.metrics.counters)

    other = flowrl.Trainer("pg", env="trainer_corridor", config=BASE)
    try:
        other.restore(path)
        for name, value in other.get_policy().get_weights().items():
            np.testing.assert_array_equal(value, weights[name])
        assert dict(other.metrics.counters) == counters
        assert other.plan.stats_state() == pg_trainer.plan.stats_state()
        assert other.iteration == 2
        assert other.train()["training_iteration"] == 3
    finally:
        other.stop()


def test_a_failed_save_leaves_no_checkpoint(pg_trainer, tmp_path, monkeypatch):
    pg_trainer.train()

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("flowrl.checkpoint.json.dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        pg_trainer.save(str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_restore_from_a_wrong_path_says_what_is_expected(pg_trainer, tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint.json"):
        pg_trainer.restore(str(tmp_path))


def test_evaluate_and_compute_single_action(pg_trainer):
    evaluation = pg_trainer.evaluate()["evaluation"]
    assert evaluation["episodes"] == 10
    assert 0.0 <= evaluation["episode_reward_mean"] <= 1.0
    action = pg_trainer.compute_single_action(np.zeros(2, dtype=np.float32))
    assert int(action) in (0, 1)


def test_unknown_algorithm_suggests_the_closest(local_executor):
    with pytest.raises(ValueError, match="Did you mean 'PPO'"):
        flowrl.Trainer("ppp", env="trainer_corridor")


def test_unknown_env_suggests_the_closest(local_executor):
    with pytest.raises(ValueError, match="CartPole-v1"):
        flowrl.Trainer("ppo", env="CartPol-v1")


def test_misspelled_config_key_names_the_valid_one(local_executor):
    with pytest.raises(ValueError, match="num_workers"):
        flowrl.Trainer("ppo", env="trainer_corridor", config={"num_worker": 2})


def test_unknown_stop_criterion_is_rejected(local_executor):
    with pytest.raises(ValueError, match="Did you mean 'episode_reward_mean'"):
        flowrl.run("pg", env="trainer_corridor", config=BASE, stop={"episode_reward_man": 1})


def test_nan_rewards_fail_with_a_clear_error(local_executor):
    trainer = flowrl.Trainer("pg", env="nan_corridor", config=BASE)
    try:
        with pytest.raises(flowrl.FlowError, match="non-finite rewards") as info:
            trainer.train()
    finally:
        trainer.stop()
    # Caught where the rewards enter, naming the source operator and the fix.
    assert "ParallelRollouts(local)" in str(info.value)
    assert "rewards must be finite" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)


def test_run_stops_and_checkpoints(local_executor, tmp_path):
    result = flowrl.run("pg", env="trainer_corridor", config=BASE, stop={"training_iteration": 2},
                        checkpoint_dir=str(tmp_path), verbose=0)
    assert result["training_iteration"] == 2
    assert os.path.isdir(result["checkpoint"])


def my_plan(workers, config):
    """A user-written plan: PPO-style training without KL adaptation."""
    rollouts = ParallelRollouts(workers, mode="bulk_sync")
    batches = rollouts.combine(ConcatBatches(min_batch_size=config.train_batch_size))
    trained = batches.for_each(TrainOneStep(workers, num_sgd_iter=4, sgd_minibatch_size=64))
    return trained.for_each(BroadcastWeights(workers))


def test_a_user_written_plan_learns(local_executor):
    config = {**BASE, "train_batch_size": 256, "rollout_fragment_length": 64,
              "env_config": {"length": 4, "max_steps": 8}}
    trainer = flowrl.Trainer("ppo", env="trainer_corridor", config=config, plan=my_plan)
    try:
        assert "UpdateKL" not in repr(trainer.plan)
        results = [trainer.train() for _ in range(12)]
    finally:
        trainer.stop()
    # The optimal policy walks straight to the end: return 1 in 4 steps.
    assert results[-1]["episode_reward_mean"] > 0.95
    assert results[-1]["episode_len_mean"] < results[0]["episode_len_mean"]


def test_a_killed_worker_is_replaced_and_training_goes_on(ray_executor):
    import ray

    config = {**BASE, "num_workers": 2, "num_cpus_per_worker": 0.5}
    trainer = flowrl.Trainer("ppo", env="trainer_corridor",
                             config={**config, "sgd_minibatch_size": 20, "num_sgd_iter": 1,
                                     "train_batch_size": 40})
    try:
        trainer.train()
        ray.kill(trainer.workers.remote_workers()[0], no_restart=True)
        results = [trainer.train() for _ in range(3)]
    finally:
        trainer.stop()
    assert results[-1]["num_healthy_workers"] == 2
    assert trainer.workers.num_worker_restarts == 1
    assert results[-1]["timesteps_total"] > results[0]["timesteps_total"]
