"""Callbacks run on every rollout worker (Ray and in-process) and in the Trainer; custom
metrics reach the result and the records; a bad callbacks setting fails before anything
starts."""

from __future__ import annotations

import csv

import pytest

import flowrl
from flowrl.data import MultiAgentBatch

PG_TINY = {"num_workers": 1, "num_envs_per_worker": 2, "rollout_fragment_length": 50,
           "train_batch_size": 200, "num_cpus_per_worker": 0, "seed": 2,
           "model": {"fcnet_hiddens": [8]}, "batch_mode": "truncate_episodes"}


class CountingCallbacks(flowrl.Callbacks):
    """Counts steps itself and reports each episode's length and return as custom metrics."""

    def on_episode_start(self, *, worker, episode):
        episode.user_data["steps"] = 0
        episode.user_data["reward"] = 0.0

    def on_episode_step(self, *, worker, episode):
        episode.user_data["steps"] += 1
        episode.user_data["reward"] += episode.last_reward

    def on_episode_end(self, *, worker, episode):
        assert episode.user_data["steps"] == episode.length
        episode.custom_metrics["counted_length"] = episode.user_data["steps"]
        episode.custom_metrics["counted_return"] = episode.user_data["reward"]
        episode.custom_metrics["worker_index"] = worker.worker_index

    def on_sample_end(self, *, worker, batch):
        parts = batch.policy_batches.values() if isinstance(batch, MultiAgentBatch) else [batch]
        for part in parts:
            part["seen_by_callbacks"] = part["rewards"] * 0 + 1

    def on_train_result(self, *, trainer, result):
        result["callbacks_iteration"] = result["training_iteration"]


def test_callbacks_run_on_the_workers_and_their_metrics_reach_every_record(executor, tmp_path):
    trainer = flowrl.Trainer("pg", env="CartPole-v1", log_dir=str(tmp_path),
                             config={**PG_TINY, "callbacks": CountingCallbacks})
    try:
        results = [trainer.train() for _ in range(2)]
    finally:
        trainer.stop()
    result = results[-1]
    custom = result["custom_metrics"]
    # On CartPole every reward is 1: the counted return is the counted length.
    assert custom["counted_length_mean"] == pytest.approx(custom["counted_return_mean"])
    assert custom["counted_length_min"] >= 8 and custom["counted_length_max"] <= 500
    assert custom["worker_index_min"] == 1  # the remote worker sampled them
    assert result["callbacks_iteration"] == 2
    with open(tmp_path / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["custom_metrics/counted_length_mean"]) == pytest.approx(
        custom["counted_length_mean"])


def test_on_sample_end_sees_and_can_change_each_batch(local_executor):
    from flowrl.ops import ParallelRollouts

    trainer = flowrl.Trainer("pg", env="CartPole-v1",
                             config={**PG_TINY, "num_workers": 0, "callbacks": CountingCallbacks})
    try:
        batch = next(iter(ParallelRollouts(trainer.workers)))
    finally:
        trainer.stop()
    assert (batch["seen_by_callbacks"] == 1).all()


def test_callbacks_run_in_multi_agent_workers(local_executor):
    config = {"num_workers": 0, "num_envs_per_worker": 2, "rollout_fragment_length": 20,
              "train_batch_size": 40, "sgd_minibatch_size": 20, "num_sgd_iter": 1,
              "num_cpus_per_worker": 0, "seed": 7, "model": {"fcnet_hiddens": [8]},
              "env_config": {"width": 4, "height": 4, "timestep_limit": 10},
              "callbacks": CountingCallbacks}
    trainer = flowrl.Trainer("ppo", env="MultiAgentArena-v0", config=config)
    try:
        result = trainer.train()
    finally:
        trainer.stop()
    assert result["custom_metrics"]["counted_length_mean"] == 10  # the arena's step limit


def test_a_bad_callbacks_setting_fails_before_anything_starts():
    with pytest.raises(TypeError, match="subclass of flowrl.Callbacks"):
        flowrl.Trainer("pg", env="CartPole-v1", config={"callbacks": dict}, local_mode=True)
    with pytest.raises(ValueError, match="does not import"):
        flowrl.Trainer("pg", env="CartPole-v1", config={"callbacks": "no_such_module:Hooks"},
                       local_mode=True)


def test_a_checkpoint_naming_callbacks_is_restored_only_when_trusted(tmp_path, local_executor):
    import sys
    import types

    module = types.ModuleType("flowrl_test_hooks")
    module.Hooks = type("Hooks", (flowrl.Callbacks,), {"__module__": "flowrl_test_hooks"})
    sys.modules["flowrl_test_hooks"] = module
    try:
        trainer = flowrl.Trainer("pg", env="CartPole-v1", config={
            **PG_TINY, "num_workers": 0, "callbacks": "flowrl_test_hooks:Hooks"})
        trainer.train()
        path = trainer.save(str(tmp_path))
        trainer.stop()
    finally:
        del sys.modules["flowrl_test_hooks"]
    with pytest.raises(ValueError, match="callbacks='flowrl_test_hooks:Hooks'"):
        flowrl.Trainer.from_checkpoint(path, local_mode=True)
    restored = flowrl.Trainer.from_checkpoint(path, local_mode=True,
                                              config={"callbacks": None})
    restored.stop()
