"""IMPALA: async rollouts into a learner thread, V-trace loss, weights back to the source worker."""

from __future__ import annotations

import threading
import types

import gymnasium as gym
import numpy as np
import pytest

import flowrl
from flowrl.config import from_dict
from flowrl.iter import executor as flow_executor
from flowrl.iter.metrics import MetricsContext
from flowrl.ops import LearnerOutput, LockedLearnStep
from flowrl.ops.learner_flows import (
    BroadcastToSourceWorkers,
    ConcatFragments,
    FragmentSource,
    MixInReplay,
    TrainBatchSource,
    WorkerWeightVersions,
)
from flowrl.plans.impala import IMPALA_POLICY, IMPALAConfig
from flowrl.policy import SampleBatch
from flowrl.policy.vtrace import (
    vtrace_inputs_from_fragment,
    vtrace_numpy,
    vtrace_targets_tf,
    vtrace_targets_torch,
)

FRAMEWORKS = ["torch", pytest.param("tf", marks=pytest.mark.tf)]


def smoke_config(tiny_config, algo, **overrides):
    return tiny_config(algo, num_workers=1, min_steps_per_iteration=120, **overrides)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_impala_trains_on_both_executors(executor, framework, tiny_config):
    trainer = flowrl.Trainer("impala", env="corridor",
                             config=smoke_config(tiny_config, "impala", framework=framework))
    try:
        result = trainer.train()
        result = trainer.train()
    finally:
        trainer.stop()
    assert result["timesteps_total"] >= 240
    assert result["num_steps_trained"] >= 40
    stats = result["info"]["learner"]["default_policy"]
    assert np.isfinite(stats["total_loss"]) and np.isfinite(stats["vf_loss"])
    assert 0.0 < stats["mean_rho"] <= 1.5
    thread = result["info"]["learner_thread"]
    assert thread["num_updates"] >= 1 and 0.0 <= thread["queue_fill"] <= 1.0
    assert thread["policy_lag_mean"] >= 0 and thread["updates_per_s"] >= 0
    assert result["info"]["counters"]["learner/weight_broadcasts"] >= 1


def test_trainer_stop_stops_the_learner_thread(tiny_config, local_executor):
    trainer = flowrl.Trainer("impala", env="corridor", config=smoke_config(tiny_config, "impala"))
    trainer.train()
    learners = [thread for thread in threading.enumerate()
                if thread.name.startswith("flowrl-learner") and getattr(
                    thread, "_constructor_arguments", (None,))[0] is trainer.workers]
    assert learners and all(learner.is_alive() for learner in learners)
    trainer.stop()
    assert not any(learner.is_alive() for learner in learners)


def test_impala_samples_in_the_driver_without_remote_workers(tiny_config, local_executor):
    trainer = flowrl.Trainer("impala", env="corridor",
                             config=tiny_config("impala", min_steps_per_iteration=80))
    try:
        result = trainer.train()
    finally:
        trainer.stop()
    assert result["info"]["learner_thread"]["num_updates"] >= 1
    assert result["info"]["counters"].get("learner/weight_broadcasts", 0) == 0


def test_dead_learner_surfaces_as_flow_error_naming_the_thread(tiny_config, local_executor):
    trainer = flowrl.Trainer("impala", env="corridor", config=smoke_config(tiny_config, "impala"))
    policy = trainer.get_policy()

    def broken_learn(batch):
        raise ArithmeticError("the learner's loss blew up")

    policy.learn_on_batch = broken_learn
    try:
        with pytest.raises(flowrl.FlowError) as info:
            for _ in range(20):
                trainer.train()
    finally:
        trainer.stop()
    message = str(info.value)
    assert "LearnerThread 'flowrl-learner-default_policy'" in message
    assert "the learner's loss blew up" in message and "ArithmeticError" in message


def test_a_stuck_learner_is_reported_as_the_slow_side(tiny_config, local_executor):
    config = smoke_config(tiny_config, "impala", learner_queue_size=1, learner_queue_timeout=0.5)
    trainer = flowrl.Trainer("impala", env="corridor", config=config)
    release = threading.Event()
    trainer.get_policy().learn_on_batch = lambda batch: release.wait(30) and {}
    try:
        with pytest.raises(flowrl.FlowError) as info:
            for _ in range(50):
                trainer.train()
    finally:
        release.set()
        trainer.stop()
    assert "The learner is not" in str(info.value) and "slow or stuck" in str(info.value)


# ---- weights go back to the worker that sent the batch ------------------------------------------


class RecordingWorkers:
    """A WorkerSet stand-in that records per-worker weight sends."""

    def __init__(self, policy):
        self.sent = []
        self._local = types.SimpleNamespace(policy=policy)

    def local_worker(self):
        return self._local

    def set_weights_of(self, handle, weights_ref, global_vars=None):
        self.sent.append((handle, weights_ref))


class CountingPolicy:
    def __init__(self):
        self.reads = 0

    def get_weights(self):
        self.reads += 1
        return {"w": np.full(2, float(self.reads))}


def output_from(workers_and_versions, learner_version):
    source = TrainBatchSource(tuple(FragmentSource(w, v) for w, v in workers_and_versions))
    return LearnerOutput(source, 10, {"total_loss": 0.0}, learner_version)


def test_broadcast_goes_to_the_source_worker_once_per_learner_version(local_executor):
    policy = CountingPolicy()
    workers = RecordingWorkers(policy)
    learn_step = LockedLearnStep(workers)
    versions = WorkerWeightVersions()
    broadcast = BroadcastToSourceWorkers(workers, learn_step, versions, broadcast_interval=1)
    worker_a, worker_b = object(), object()
    with MetricsContext().activate():
        learn_step.version = 1
        broadcast(output_from([(worker_a, 0)], learner_version=1))
        assert [handle for handle, _ in workers.sent] == [worker_a]
        # Same learner version: worker B gets the same put weights, nothing is read again.
        broadcast(output_from([(worker_b, 0)], learner_version=1))
        assert [handle for handle, _ in workers.sent] == [worker_a, worker_b]
        assert workers.sent[0][1] is workers.sent[1][1] and policy.reads == 1
        # A worker that already has this version is not sent it again.
        broadcast(output_from([(worker_a, 0)], learner_version=1))
        assert len(workers.sent) == 2
        learn_step.version = 2
        broadcast(output_from([(worker_b, 1), (worker_b, 1)], learner_version=2))
        assert [handle for handle, _ in workers.sent] == [worker_a, worker_b, worker_b]
        assert policy.reads == 2 and versions.get(worker_b) == 2 and versions.get(worker_a) == 1
    assert flow_executor.get(workers.sent[-1][1])["w"].tolist() == [2.0, 2.0]


def test_broadcast_interval_limits_weight_refreshes(local_executor):
    policy = CountingPolicy()
    workers = RecordingWorkers(policy)
    learn_step = LockedLearnStep(workers)
    broadcast = BroadcastToSourceWorkers(workers, learn_step, WorkerWeightVersions(),
                                         broadcast_interval=3)
    worker = object()
    with MetricsContext().activate():
        for version in range(1, 8):
            learn_step.version = version
            broadcast(output_from([(worker, 0)], learner_version=version))
    # Read at the first update, then once every 3 updates (versions 1, 4, 7).
    assert policy.reads == 3 and broadcast.num_weight_puts == 3


def test_plan_draws_the_learner_thread_and_the_broadcast(tiny_config, local_executor):
    trainer = flowrl.Trainer("impala", env="corridor", config=smoke_config(tiny_config, "impala"))
    try:
        labels = [data["label"] for _, data in trainer.plan_graph().nodes(data=True)]
        inside = [data["label"] for _, data in
                  trainer.plan_graph(internals=True).nodes(data=True)]
    finally:
        trainer.stop()
    assert "gather_async(num_async=2)" in inside  # inside ParallelRollouts(mode='async')
    joined = " ".join(labels)
    for expected in ("ParallelRollouts(mode='async', num_async=2)", "zip_with_source_actor",
                     "Enqueue(learner.inqueue)", "Dequeue(learner.outqueue)",
                     "BroadcastToSourceWorkers", "Concurrently"):
        assert expected in joined, (expected, labels)


# ---- batching ----------------------------------------------------------------------------------


def test_mix_in_replay_adds_the_requested_proportion():
    mix = MixInReplay(num_slots=4, replay_proportion=0.5, seed=3)
    outputs = [mix(index) for index in range(400)]
    assert all(out[0] == index for index, out in enumerate(outputs))
    replayed = sum(len(out) - 1 for out in outputs)
    assert 150 <= replayed <= 250
    assert all(item > index - 4 for index, out in enumerate(outputs) for item in out[1:])


def test_concat_fragments_keeps_each_fragment_source():
    concat = ConcatFragments(min_batch_size=5)
    first = (FragmentSource("w1", 3), SampleBatch({"x": np.arange(3)}))
    assert concat(first) == []
    [(source, batch)] = concat((FragmentSource("w2", 4), SampleBatch({"x": np.arange(3)})))
    assert len(batch) == 6 and source.workers() == ["w1", "w2"]
    assert [f.weights_version for f in source.fragments] == [3, 4]


def test_config_rejects_complete_episodes_and_bad_queue_settings():
    with pytest.raises(ValueError, match="batch_mode must be 'truncate_episodes'"):
        from_dict(IMPALAConfig, {"batch_mode": "complete_episodes"})
    with pytest.raises(ValueError, match="learner_queue_size"):
        from_dict(IMPALAConfig, {"learner_queue_size": 0})
    with pytest.raises(ValueError, match="vtrace_clip_rho_threshold"):
        from_dict(IMPALAConfig, {"vtrace_clip_rho_threshold": 0.0})


# ---- V-trace targets from env-major fragments ---------------------------------------------------


def random_fragments(policy, num_streams, length, seed):
    """Env-major rows of `num_streams` fragments with episode ends inside them."""
    rng = np.random.default_rng(seed)
    rows = num_streams * length
    terminateds = rng.random(rows) < 0.1
    truncateds = rng.random(rows) < 0.1
    obs = rng.normal(size=(rows, 3)).astype(np.float32)
    actions = rng.integers(0, 2, size=rows)
    return SampleBatch({
        "obs": obs, "new_obs": rng.normal(size=(rows, 3)).astype(np.float32),
        "actions": actions, "rewards": rng.normal(size=rows).astype(np.float32),
        "terminateds": terminateds, "truncateds": truncateds,
        "action_logp": (np.log(0.5) + 0.3 * rng.normal(size=rows)).astype(np.float32),
    })


def reference_targets(policy, batch, length):
    """V-trace from the numpy reference, per stream, with the policy's own values."""
    streams = len(batch) // length

    def time_major(column):
        return np.asarray(column).reshape(streams, length).T

    values = policy.compute_values(batch["obs"])
    next_values = policy.compute_values(batch["new_obs"])
    dist_logp = policy.run_on_batch(target_logp_fn(policy.framework), batch)["logp"]
    inputs = vtrace_inputs_from_fragment(
        time_major(batch["rewards"]), time_major(batch["terminateds"]),
        time_major(batch["truncateds"]), time_major(next_values), gamma=policy.config.gamma)
    return vtrace_numpy(time_major(batch["action_logp"]), time_major(dist_logp),
                        inputs.rewards, time_major(values), inputs.bootstrap_value,
                        inputs.discounts, clip_rho_threshold=1.0, clip_pg_rho_threshold=1.0)


def target_logp_fn(framework):
    def logp(policy, batch):
        dist_inputs, _ = policy.model(batch["obs"])
        return {"logp": policy.dist_class(dist_inputs).logp(batch["actions"])}
    return logp


def targets_fn(framework):
    compute = vtrace_targets_torch if framework == "torch" else vtrace_targets_tf

    def targets(policy, batch):
        dist_inputs, values = policy.model(batch["obs"])
        logp = policy.dist_class(dist_inputs).logp(batch["actions"])
        out = compute(policy, batch, batch["action_logp"], logp, values)
        return {"vs": out["vs"], "pg_advantages": out["pg_advantages"]}
    return targets


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_loss_targets_equal_the_numpy_reference_with_episode_ends(framework):
    length = 6
    config = IMPALAConfig(framework=framework, seed=1, rollout_fragment_length=length,
                          num_envs_per_worker=4, train_batch_size=24, gamma=0.9)
    policy = IMPALA_POLICY.build(gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Discrete(2),
                                 config)
    batch = random_fragments(policy, num_streams=4, length=length, seed=5)
    assert batch["truncateds"].any() and batch["terminateds"].any()
    got = policy.run_on_batch(targets_fn(framework), batch)
    expected_vs, expected_advantages = reference_targets(policy, batch, length)
    np.testing.assert_allclose(got["vs"], expected_vs, atol=1e-5)
    np.testing.assert_allclose(got["pg_advantages"], expected_advantages, atol=1e-5)


def test_loss_says_when_rows_are_not_whole_fragments():
    config = IMPALAConfig(framework="torch", seed=1, rollout_fragment_length=5,
                          num_envs_per_worker=2, train_batch_size=10)
    policy = IMPALA_POLICY.build(gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Discrete(2),
                                 config)
    batch = random_fragments(policy, num_streams=2, length=4, seed=0)  # 8 rows, T=5
    with pytest.raises(ValueError, match="not a multiple of it"):
        policy.learn_on_batch(batch)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_learning_on_a_batch_reduces_the_value_error(framework):
    config = IMPALAConfig(framework=framework, seed=2, rollout_fragment_length=8,
                          num_envs_per_worker=4, train_batch_size=32, lr=1e-2)
    policy = IMPALA_POLICY.build(gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Discrete(2),
                                 config)
    batch = random_fragments(policy, num_streams=4, length=8, seed=9)
    first = policy.learn_on_batch(batch)["vf_loss"]
    for _ in range(30):
        last = policy.learn_on_batch(batch)["vf_loss"]
    assert last < first
