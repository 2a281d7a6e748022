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
