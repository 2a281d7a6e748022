"""Shared test fixtures: one Ray instance per session, and the executor parametrization."""

from __future__ import annotations

import os

import pytest

# Keep every test process (and the Ray workers it starts) on one intra-op thread: the CI
# machine has two cores and oversubscription makes timings erratic.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_session():
    """Starts the session's single Ray instance on first use and stops it at the end."""
    import ray

    import flowrl

    if not ray.is_initialized():
        # Through flowrl, so the session runs on a cluster as flowrl starts it (loopback only).
        flowrl.init(num_cpus=2, log_to_driver=True)
    yield ray

    flowrl.shutdown()
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(params=["ray", "local"])
def executor(request):
    """Runs a test once on the Ray executor and once on the in-process executor.

    Yields the executor's name. The Ray instance is shared across the whole session; switching
    to local mode does not stop it.
    """
    import flowrl

    if request.param == "ray":
        request.getfixturevalue("ray_session")
        flowrl.init(local_mode=False)
    else:
        flowrl.init(local_mode=True)
    yield request.param


@pytest.fixture
def local_executor():
    """Selects the in-process executor for a test that does not need Ray."""
    import flowrl

    flowrl.init(local_mode=True)
    yield "local"


@pytest.fixture
def ray_executor(ray_session):
    """Selects the Ray executor (on the session's shared Ray instance)."""
    import flowrl

    flowrl.init(local_mode=False)
    yield "ray"
