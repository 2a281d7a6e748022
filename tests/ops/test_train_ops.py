"""Training and weight-sync operators: each does one job."""

from __future__ import annotations

import numpy as np
import pytest

from flowrl.iter import executor as ex
from flowrl.ops import (
    NUM_WEIGHT_BROADCASTS_COUNTER,
    STEPS_TRAINED_COUNTER,
    ApplyGradients,
    AsyncGradients,
    AverageGradients,
    BroadcastWeights,
    ComputeGradients,
    ConcatBatches,
    Gradients,
    ParallelRollouts,
    TrainOneStep,
    TrainResult,
)


def _weights_of(handle):
    return ex.get(ex.call(handle, "get_weights"))


def _same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def test_train_one_step_trains_but_does_not_broadcast(two_workers):
    before = two_workers.local_worker().get_weights()
    plan = ParallelRollouts(two_workers).for_each(
        TrainOneStep(two_workers, num_sgd_iter=2, sgd_minibatch_size=10))
    result = next(iter(plan))
    assert isinstance(result, TrainResult) and result.num_steps_trained == 20
    assert "total_loss" in result.learner_stats["default_policy"]
    after = two_workers.local_worker().get_weights()
    assert not _same(before, after)
    # Training alone leaves the remote workers on the old weights.
    assert _same(_weights_of(two_workers.remote_workers()[0]), before)
    assert plan.shared_metrics.get().counters[STEPS_TRAINED_COUNTER] == 20


def test_broadcast_weights_updates_every_worker(two_workers):
    plan = (ParallelRollouts(two_workers).for_each(TrainOneStep(two_workers))
            .for_each(BroadcastWeights(two_workers)))
    next(iter(plan))
    local = two_workers.local_worker().get_weights()
    for handle in two_workers.remote_workers():
        assert _same(_weights_of(handle), local)
    assert plan.shared_metrics.get().counters[NUM_WEIGHT_BROADCASTS_COUNTER] == 1


def test_microbatched_gradients_are_averaged_and_applied(two_workers):
    plan = (ParallelRollouts(two_workers).combine(ConcatBatches(min_batch_size=10))
            .for_each(ComputeGradients(two_workers)).batch(2)
            .for_each(AverageGradients()).for_each(ApplyGradients(two_workers, update="all")))
    result = next(iter(plan))
    assert result.num_steps_trained == 40
    local = two_workers.local_worker().get_weights()
    assert _same(_weights_of(two_workers.remote_workers()[1]), local)


def test_async_gradients_update_only_the_source_worker(ray_executor, make_workers):
    workers = make_workers(2)
    try:
        plan = AsyncGradients(workers).for_each(ApplyGradients(workers, update="source"))
        next(iter(plan))
        local = workers.local_worker().get_weights()
        updated = [_same(_weights_of(h), local) for h in workers.remote_workers()]
        assert sorted(updated) == [False, True]
    finally:
        workers.stop()


def test_apply_gradients_source_mode_needs_source_actor(no_remote_workers):
    op = ApplyGradients(no_remote_workers, update="source")
    with pytest.raises(TypeError, match="zip_with_source_actor"):
        op(Gradients(grads=[], stats={}, count=1))


def test_average_gradients_is_a_mean_not_a_sum():
    items = [Gradients([np.array([2.0, 4.0])], {"loss": 1.0}, 5),
             Gradients([np.array([4.0, 8.0])], {"loss": 3.0}, 5)]
    out = AverageGradients()(items)
    assert out.grads[0].tolist() == [3.0, 6.0]
    assert out.stats == {"loss": 2.0} and out.count == 10


def test_averaged_microbatch_gradients_equal_the_full_batch_gradient(no_remote_workers):
    """Unequal microbatches, weighted by size, give exactly the whole batch's gradient."""
    from flowrl.policy import SampleBatch

    policy = no_remote_workers.local_worker().policy
    batch = no_remote_workers.local_worker().sample()
    full, _ = policy.compute_gradients(batch)
    parts = [SampleBatch({k: v[:3] for k, v in batch.items()}),
             SampleBatch({k: v[3:] for k, v in batch.items()})]
    micro = [Gradients(*policy.compute_gradients(p), count=len(p)) for p in parts]
    averaged = AverageGradients()(micro)
    for a, b in zip(averaged.grads, full):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_unknown_update_mode_lists_valid_values(no_remote_workers):
    with pytest.raises(ValueError, match=r"update='some'.*\['all', 'source', 'none'\]"):
        ApplyGradients(no_remote_workers, update="some")


# --- per-policy gradients (multi-agent workers) ----------------------------------------------


def multi_agent_workers(num_workers=0, policies=("p1", "p2"), **overrides):
    """A WorkerSet on MultiAgentArena: one A2C policy per agent (or one shared policy)."""
    from flowrl.config import from_dict
    from flowrl.envs import MultiAgentArena
    from flowrl.plans.a2c import A2CConfig
    from flowrl.plans.pg import PG_POLICY
    from flowrl.workers import WorkerSet

    extra = {} if policies is None else {
        "policies": {pid: {} for pid in policies},
        "policy_mapping": dict(zip(["agent1", "agent2"], policies))}
    config = from_dict(A2CConfig, {
        "num_workers": num_workers, "num_envs_per_worker": 2, "rollout_fragment_length": 5,
        "num_cpus_per_worker": 0, "seed": 1, "model": {"fcnet_hiddens": [8]},
        "env_config": {"timestep_limit": 10}, **extra, **overrides})
    resolved = None
    if policies is not None:
        from flowrl.plans import get_algorithm
        from flowrl.plans.multiagent import resolve_policies

        resolved = resolve_policies(config, get_algorithm("a2c"))
    return WorkerSet(env_creator=MultiAgentArena, policy_spec=PG_POLICY, config=config,
                     policies=resolved)


def test_gradients_are_computed_per_trained_policy_on_its_own_rows(local_executor):
    from flowrl.ops import MultiAgentGradients
    from flowrl.ops.train_ops import compute_gradients

    workers = multi_agent_workers(policies_to_train=["p1"])
    try:
        worker = workers.local_worker()
        batch = worker.sample()
        out = compute_gradients(worker, batch)
        assert isinstance(out, MultiAgentGradients)
        assert set(out.policy_gradients) == {"p1"} and out.env_steps == batch.env_steps == 10
        p1 = out.policy_gradients["p1"]
        assert p1.count == len(batch.policy_batches["p1"])
        expected, _ = worker.get_policy("p1").compute_gradients(batch.policy_batches["p1"])
        for a, b in zip(p1.grads, expected):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        both = compute_gradients(worker, batch, policy_ids=["p1", "p2"])
        assert set(both.policy_gradients) == {"p1", "p2"} and both.count == 20
    finally:
        workers.stop()


def test_shared_policy_gradients_belong_to_default_policy_and_count_env_steps(local_executor):
    from flowrl.ops.rollout_ops import _env_steps
    from flowrl.ops.train_ops import compute_gradients

    workers = multi_agent_workers(policies=None)
    try:
        batch = workers.local_worker().sample()
        out = compute_gradients(workers.local_worker(), batch)
        assert set(out.policy_gradients) == {"default_policy"}
        assert out.count == 20 and _env_steps(out) == 10  # 2 agents x 10 env steps
    finally:
        workers.stop()


def test_apply_gradients_per_policy_sends_only_changed_policies_in_one_put(local_executor,
                                                                         monkeypatch):
    from flowrl.ops import MultiAgentGradients
    from flowrl.ops.train_ops import compute_gradients

    workers = multi_agent_workers(num_workers=1)
    try:
        local = workers.local_worker()
        frozen = {k: v.copy() for k, v in local.get_policy("p2").get_weights().items()}
        before = {k: v.copy() for k, v in local.get_policy("p1").get_weights().items()}
        grads = compute_gradients(local, local.sample(), policy_ids=["p1"])
        sent, puts = [], []
        real_put = ex.put
        monkeypatch.setattr(ex, "put", lambda value: puts.append(value) or real_put(value))
        monkeypatch.setattr(workers, "set_weights_of",
                            lambda handle, ref, global_vars=None: sent.append((handle, ref)))
        source = workers.remote_workers()[0]
        from flowrl.iter import LocalIterator

        plan = LocalIterator(lambda: iter([(source, grads)]), name="grads").for_each(
            ApplyGradients(workers, update="source"))
        result = next(iter(plan))
        assert isinstance(grads, MultiAgentGradients)
        assert set(result.learner_stats) == {"p1"} and result.num_steps_trained == grads.count
        after = local.get_weights()
        assert not _same(after["p1"], before) and _same(after["p2"], frozen)
        assert len(puts) == 1 and set(puts[0]) == {"p1"}  # only p1 changed, serialized once
        assert [handle for handle, _ in sent] == [source]
    finally:
        workers.stop()


def test_average_gradients_averages_each_policy_and_sums_env_steps():
    from flowrl.ops import MultiAgentGradients

    items = [MultiAgentGradients({"p1": Gradients([np.array([2.0])], {"loss": 1.0}, 1),
                                  "p2": Gradients([np.array([5.0])], {"loss": 5.0}, 2)}, 10),
             MultiAgentGradients({"p1": Gradients([np.array([4.0])], {"loss": 3.0}, 3)}, 10)]
    out = AverageGradients()(items)
    assert out.env_steps == 20 and set(out.policy_gradients) == {"p1", "p2"}
    assert out.policy_gradients["p1"].grads[0].tolist() == [3.5]
    assert out.policy_gradients["p2"].count == 2
