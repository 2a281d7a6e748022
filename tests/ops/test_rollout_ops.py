"""Rollout and batching operators."""

from __future__ import annotations

import numpy as np
import pytest

from flowrl.ops import (
    STEPS_SAMPLED_COUNTER,
    ConcatBatches,
    ParallelRollouts,
    SelectExperiences,
    StandardizeFields,
)
from flowrl.policy import MultiAgentBatch, SampleBatch


def test_bulk_sync_concatenates_one_batch_per_worker(two_workers):
    rollouts = ParallelRollouts(two_workers, mode="bulk_sync")
    batches = rollouts.take(2)
    assert [len(b) for b in batches] == [20, 20]  # 2 workers x 2 envs x 5 steps
    assert rollouts.shared_metrics.get().counters[STEPS_SAMPLED_COUNTER] == 40


def test_async_yields_single_worker_batches(two_workers):
    batches = ParallelRollouts(two_workers, mode="async", num_async=2).take(3)
    assert [len(b) for b in batches] == [10, 10, 10]


def test_local_worker_samples_when_there_are_no_remote_workers(no_remote_workers):
    rollouts = ParallelRollouts(no_remote_workers)
    assert len(next(iter(rollouts))) == 10
    # The plan reads as the call; the driver-side sampler is one of its engine steps.
    assert repr(rollouts) == "ParallelRollouts(mode='bulk_sync')"
    labels = [a["label"] for _, a in rollouts.graph(internals=True).nodes(data=True)]
    assert labels == ["ParallelRollouts(local)", "for_each(RecordSampledSteps())"]


def test_raw_mode_needs_remote_workers(no_remote_workers):
    with pytest.raises(ValueError, match="needs remote workers"):
        ParallelRollouts(no_remote_workers, mode="raw")


def test_unknown_mode_lists_valid_modes(no_remote_workers):
    with pytest.raises(ValueError, match=r"mode='sync'.*bulk_sync"):
        ParallelRollouts(no_remote_workers, mode="sync")


def test_concat_batches_waits_for_min_size():
    op = ConcatBatches(min_batch_size=5)
    assert op(SampleBatch({"x": np.arange(3)})) == []
    (out,) = op(SampleBatch({"x": np.arange(3, 6)}))
    assert out["x"].tolist() == [0, 1, 2, 3, 4, 5]
    assert op(SampleBatch({"x": np.arange(2)})) == []
    assert repr(op) == "ConcatBatches(min_batch_size=5)"


def test_concat_batches_rejects_bad_size():
    with pytest.raises(ValueError, match="min_batch_size=0"):
        ConcatBatches(min_batch_size=0)


def test_standardize_fields_does_not_modify_input():
    batch = SampleBatch({"advantages": np.array([1.0, 2.0, 3.0], dtype=np.float32)})
    out = StandardizeFields(["advantages"])(batch)
    assert out["advantages"].mean() == pytest.approx(0.0, abs=1e-6)
    assert out["advantages"].std() == pytest.approx(1.0, abs=1e-5)
    assert batch["advantages"].tolist() == [1.0, 2.0, 3.0]


def test_standardize_missing_field_names_the_columns():
    with pytest.raises(KeyError, match="'advantages' is not in the batch"):
        StandardizeFields(["advantages"])(SampleBatch({"rewards": np.zeros(2)}))


def test_select_experiences_keeps_chosen_policies():
    batch = MultiAgentBatch({"a": SampleBatch({"x": np.arange(2)}),
                             "b": SampleBatch({"x": np.arange(3)})}, env_steps=3)
    out = SelectExperiences(["b"])(batch)
    assert list(out.policy_batches) == ["b"] and out.env_steps == 3
    single = SampleBatch({"x": np.arange(2)})
    assert SelectExperiences(["default_policy"])(single) is single
