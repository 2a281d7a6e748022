"""Runs the ``Examples:`` blocks of the engine's public docstrings (local mode)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "flowrl.iter",
    "flowrl.iter.build",
    "flowrl.iter.duplicate",
    "flowrl.iter.executor",
    "flowrl.iter.errors",
    "flowrl.iter.fused",
    "flowrl.iter.graph",
    "flowrl.iter.local_iterator",
    "flowrl.iter.metrics",
    "flowrl.iter.not_ready",
    "flowrl.iter.parallel_iterator",
    "flowrl.iter.scheduling",
    "flowrl.iter.shards",
    "flowrl.iter.shipping",
    "flowrl.iter.sources",
    "flowrl.iter.transforms",
    "flowrl.iter.union",
    "flowrl.iter.worker",
    "flowrl.ops.concurrency",
    "flowrl.ops.learner_thread",
    "flowrl.ops.learner_flows",
    "flowrl.ops.coefficient_ops",
    "flowrl.ops.distributed_replay",
    "flowrl.ops.rollout_ops",
    "flowrl.ops.gradient_free",
    "flowrl.policy.gradient_free",
    "flowrl.workers.noise_table",
    "flowrl.viz.dot",
]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(local_executor, module_name):
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
