"""Resources are checked before anything starts, and the Ray cluster flowrl starts is private."""

from __future__ import annotations

import ipaddress
import time

import pytest

import flowrl
from flowrl.iter import executor
from flowrl.workers.worker_set import check_worker_resources


def test_more_workers_than_the_cluster_has_cpus_fails_at_once(ray_executor):
    start = time.perf_counter()
    with pytest.raises(ValueError) as info:
        flowrl.Trainer("ppo", env="CartPole-v1", config={"num_workers": 8,
                                                                 "num_envs_per_worker": 1})
    message = str(info.value)
    assert "need 8 CPU" in message and "has 2 CPU in total" in message
    assert "fewer workers" in message and "flowrl.init(num_cpus=N)" in message
    # At once: no worker started, nothing waited for (only the framework import takes time).
    assert time.perf_counter() - start < 60


def test_fractional_cpus_within_the_cluster_pass(ray_executor):
    from flowrl.config import from_dict
    from flowrl.plans import get_algorithm

    ppo_config = from_dict(get_algorithm("ppo").config_class,
                           {"num_workers": 4, "num_cpus_per_worker": 0.5,
                            "num_envs_per_worker": 1})
    check_worker_resources(ppo_config)
    too_many = ppo_config.replace(num_cpus_per_worker=0.75)
    with pytest.raises(ValueError, match="need 3 CPU"):
        check_worker_resources(too_many)


def test_local_mode_needs_no_check(local_executor):
    executor.check_resources({"CPU": 1000, "GPU": 8}, "a plan", "")


def test_more_gpus_than_the_machine_has_is_an_error(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert executor.visible_gpu_count() == 0
    with pytest.raises(ValueError, match=r"num_gpus=1\) asks for 1 GPU.*has 0 visible"):
        flowrl.init(num_gpus=1)
    with pytest.raises(ValueError, match="num_gpus must be >= 0"):
        flowrl.init(num_gpus=-1)


def test_cuda_visible_devices_limits_the_gpus_seen(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert executor.visible_gpu_count() == 0
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    found = executor.visible_gpu_count()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert executor.visible_gpu_count() == min(found, 1)


def test_the_cluster_flowrl_starts_listens_on_loopback_only(ray_executor):
    import importlib

    importlib.import_module("ray")  # puts Ray's bundled psutil on the path
    psutil = importlib.import_module("psutil")

    driver = psutil.Process()
    processes = [driver, *driver.children(recursive=True)]
    listening = []
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
        except psutil.Error:
            continue  # exited meanwhile
        listening += [(process.name(), c.laddr.ip, c.laddr.port) for c in connections
                      if c.status == psutil.CONN_LISTEN]
    assert len(listening) >= 3, f"expected Ray's servers among {listening}"
    exposed = [entry for entry in listening if not _is_loopback(entry[1])]
    assert not exposed, f"sockets listening beyond this machine: {exposed}"


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
