"""Normalization. Observations: a running mean/std counted on every worker, merged into the
learner's each iteration and sent back, used for acting and training, saved in checkpoints.
Rewards: scaled and clipped for training, reported as they were."""

from __future__ import annotations

import numpy as np
import pytest

import flowrl
from flowrl.policy.filters import MeanStdFilter, RunningStat

BASE = {"num_workers": 1, "num_envs_per_worker": 2, "rollout_fragment_length": 50,
        "train_batch_size": 200, "num_cpus_per_worker": 0, "seed": 4,
        "model": {"fcnet_hiddens": [8]}, "observation_filter": "MeanStdFilter"}


def test_filters_merge_exactly_and_normalize_with_the_merged_statistics():
    rng = np.random.default_rng(0)
    rows = rng.normal(3.0, 2.0, size=(300, 2))
    learner, worker = MeanStdFilter((2,)), MeanStdFilter((2,))
    learner.push(rows[:100])
    worker.push(rows[100:])
    learner.merge_delta(worker.pop_delta())
    whole = RunningStat((2,))
    whole.push_rows(rows)
    np.testing.assert_allclose(learner.running.mean, whole.mean)
    np.testing.assert_allclose(learner.running.var, whole.var)
    worker.push(rows[:10])  # seen after the delta was taken: kept on top of the merged state
    worker.set_running(learner.get_state())
    assert worker.running.count == 310 and worker.delta.count == 10
    normalized = learner.normalize(rows)
    np.testing.assert_allclose(normalized.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(normalized.std(axis=0, ddof=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("framework", ["torch", pytest.param("tf", marks=pytest.mark.tf)])
def test_every_worker_counts_the_learner_merges_and_checkpoints_restore(framework, executor,
                                                                        tmp_path):
    trainer = flowrl.Trainer("ppo", env="CartPole-v1",
                             config={**BASE, "framework": framework})
    try:
        trainer.train()
        trainer.train()
        learner = trainer.get_policy().observation_filter
        # The remote worker sampled everything; the learner counted it all through the sync.
        assert learner.running.count == trainer.metrics.counters["sampler/env_steps"]
        from flowrl.iter import executor as flow_executor

        remote = flow_executor.get(flow_executor.call(
            trainer.workers.remote_workers()[0], "apply",
            lambda worker: worker.policy.observation_filter.running.count))
        assert remote >= learner.running.count  # the merged state plus what it saw since
        obs = np.array([0.01, 0.5, -0.02, 0.3], np.float32)
        rows = trainer.get_policy().preprocess(obs[None])
        np.testing.assert_allclose(rows[0], np.clip(
            (obs - learner.running.mean) / learner.running.std, -10, 10), rtol=1e-5)
        path = trainer.save(str(tmp_path))
        saved = learner.get_state()
    finally:
        trainer.stop()
    restored = flowrl.Trainer.from_checkpoint(path, local_mode=True, config={"num_workers": 0})
    try:
        again = restored.get_policy().observation_filter.get_state()
    finally:
        restored.stop()
    assert again["count"] == saved["count"]
    np.testing.assert_allclose(again["mean"], saved["mean"])


def test_a_filter_over_image_observations_is_refused_with_the_reason():
    from flowrl.policy.filters import make_observation_filter

    with pytest.raises(ValueError, match="uint8 images"):
        make_observation_filter("MeanStdFilter", (84, 84, 4), np.uint8)
    assert make_observation_filter("NoFilter", (4,), np.float32) is None


def test_rewards_are_scaled_and_clipped_for_training_but_reported_as_they_were(local_executor):
    from flowrl.ops import ParallelRollouts

    trainer = flowrl.Trainer("pg", env="CartPole-v1", config={
        "num_workers": 0, "num_envs_per_worker": 2, "rollout_fragment_length": 50,
        "train_batch_size": 100, "seed": 1, "batch_mode": "truncate_episodes",
        "reward_scale": 0.5, "clip_rewards": 0.3})
    try:
        batch = next(iter(ParallelRollouts(trainer.workers)))
        result = trainer.train()
    finally:
        trainer.stop()
    np.testing.assert_allclose(batch["rewards"], 0.3)  # CartPole's +1 a step, scaled, clipped
    assert result["episode_reward_mean"] >= 8  # the env's own returns
    with pytest.raises(ValueError, match="clip_rewards > 0 or None"):
        flowrl.Trainer("pg", env="CartPole-v1", config={"clip_rewards": 0.0}, local_mode=True)

