"""Fixtures for operator tests: small worker sets on the corridor env."""

from __future__ import annotations

import pytest

from flowrl.config import from_dict
from flowrl.plans.a2c import A2CConfig
from flowrl.plans.pg import PG_POLICY
from flowrl.testing import CorridorEnv
from flowrl.workers import WorkerSet


def make_workers(num_workers: int, **overrides) -> WorkerSet:
    """A WorkerSet of `num_workers` remote workers (actors or in-process) on the corridor."""
    config = from_dict(A2CConfig, {
        "num_workers": num_workers, "num_envs_per_worker": 2, "rollout_fragment_length": 5,
        "num_cpus_per_worker": 0, "seed": 1, "model": {"fcnet_hiddens": [8]}, **overrides})
    return WorkerSet(env_creator=CorridorEnv, policy_spec=PG_POLICY,
                     config=config)


@pytest.fixture(name="make_workers")
def make_workers_fixture():
    """The `make_workers` factory, for tests that pick their own executor."""
    return make_workers


@pytest.fixture
def two_workers(executor):
    workers = make_workers(2)
    yield workers
    workers.stop()


@pytest.fixture
def no_remote_workers(local_executor):
    workers = make_workers(0)
    yield workers
    workers.stop()
