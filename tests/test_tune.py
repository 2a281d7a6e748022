"""flowrl.tune: any algorithm as a Ray Tune Trainable, swept with Tuner on the session's Ray."""

from __future__ import annotations

import pytest

tune = pytest.importorskip("ray.tune", reason="the `tune` extra (ray[tune]) is not installed")

import flowrl.tune  # noqa: E402

TINY_PG = {"env": "CartPole-v1", "num_workers": 0, "train_batch_size": 64,
           "rollout_fragment_length": 32, "num_envs_per_worker": 2, "seed": 0}


def test_trainable_is_a_tune_trainable_named_after_the_algorithm():
    trainable = flowrl.tune.trainable("ppo")
    assert issubclass(trainable, tune.Trainable) and trainable.__name__ == "PPOTrainable"
    with pytest.raises(ValueError, match="Unknown algorithm"):
        flowrl.tune.trainable("ppp")


def test_resource_request_counts_the_rollout_workers():
    request = flowrl.tune.trainable("pg").default_resource_request(
        {"env": "CartPole-v1", "num_workers": 2, "num_cpus_per_worker": 0.5})
    assert request.required_resources == {"CPU": 2.0}


def test_grid_search_sweep_writes_results_and_checkpoints(ray_session, tmp_path):
    tuner = tune.Tuner(
        flowrl.tune.trainable("pg"),
        param_space={**TINY_PG, "lr": tune.grid_search([1e-3, 3e-4])},
        run_config=tune.RunConfig(
            name="sweep", storage_path=str(tmp_path), stop={"training_iteration": 1},
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True), verbose=0,
        ),
    )
    results = tuner.fit()
    assert len(results) == 2 and not results.errors
    learning_rates = sorted(result.config["lr"] for result in results)
    assert learning_rates == [3e-4, 1e-3]
    for result in results:
        assert result.metrics["training_iteration"] == 1
        assert result.metrics["timesteps_total"] >= 64
        assert result.checkpoint is not None
        with result.checkpoint.as_directory() as directory:
            trainer = flowrl.tune.trainable("pg")(config=dict(result.config))
            try:
                trainer.restore(directory)
                assert trainer.trainer.iteration == 1
            finally:
                trainer.stop()
    assert list((tmp_path / "sweep").glob("*/progress.csv"))  # Tune's usual records


def test_a_user_plan_runs_as_a_trial(ray_session, tmp_path):
    from flowrl.ops import ParallelRollouts, TrainOneStep

    def my_plan(workers, config):
        return ParallelRollouts(workers, mode="bulk_sync").for_each(TrainOneStep(workers))

    tuner = tune.Tuner(
        flowrl.tune.trainable("pg", plan=my_plan),
        param_space=TINY_PG,
        run_config=tune.RunConfig(storage_path=str(tmp_path), stop={"training_iteration": 1},
                                  verbose=0),
    )
    [result] = tuner.fit()
    assert result.error is None and result.metrics["num_steps_trained"] > 0


def test_a_trial_without_env_fails_with_a_clear_message(ray_session):
    with pytest.raises(ValueError, match="needs an 'env' key"):
        flowrl.tune.trainable("pg")(config={"num_workers": 0})
