"""`num_gpus`: the learner's policy on the GPU, rollout workers on the CPU.

The errors for a missing GPU run everywhere (the GPU count is patched where a test needs a
number the machine does not have); the training tests need a GPU and are skipped, with the
reason, on CPU-only machines.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import flowrl
from flowrl.config import AlgorithmConfig, from_dict
from flowrl.plans.impala import IMPALA_POLICY, IMPALAConfig
from flowrl.policy.policy import learner_gpus
from flowrl.testing import CorridorEnv

torch = pytest.importorskip("torch")

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


def _tf_gpus() -> int:
    try:
        import tensorflow as tf
    except ImportError:
        return 0
    return len(tf.config.list_physical_devices("GPU"))


SMALL = {"num_workers": 1, "num_envs_per_worker": 2, "rollout_fragment_length": 10,
         "train_batch_size": 40, "num_cpus_per_worker": 0, "seed": 5,
         "min_steps_per_iteration": 120, "model": {"fcnet_hiddens": [16]}}
OBS = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
ACTIONS = gym.spaces.Discrete(2)


@pytest.fixture(scope="module", autouse=True)
def corridor():
    flowrl.register_env("gpu_corridor", CorridorEnv)


def test_num_gpus_is_a_learner_field_with_a_cpu_default():
    assert AlgorithmConfig().num_gpus == 0.0
    assert from_dict(IMPALAConfig, {"num_gpus": 1}).num_gpus == 1.0
    assert from_dict(IMPALAConfig, {"num_gpus": 0.5}).num_gpus == 0.5
    with pytest.raises(ValueError, match=r"num_gpus must be >= 0; got num_gpus=-1"):
        from_dict(IMPALAConfig, {"num_gpus": -1})
    with pytest.warns(UserWarning, match="the learner trains on one GPU"):
        from_dict(IMPALAConfig, {"num_gpus": 2})


def test_a_gpu_learner_without_a_gpu_is_an_error_naming_both_numbers(
        local_executor, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError) as info:
        flowrl.Trainer("impala", env="gpu_corridor", config={**SMALL, "num_gpus": 1})
    message = str(info.value)
    assert "num_gpus=1 asks for 1 GPU for the learner" in message
    assert "this machine has 0 visible GPUs (torch.cuda.device_count() == 0)" in message
    assert "set num_gpus=0" in message


def test_a_fraction_needs_one_gpu_and_more_than_there_are_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    config = from_dict(IMPALAConfig, {**SMALL, "num_gpus": 0.5})
    with pytest.raises(ValueError, match=r"num_gpus=0.5 asks for 1 GPU \(a 0.5 share of one\)"):
        IMPALA_POLICY.build(OBS, ACTIONS, config, worker_index=0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.warns(UserWarning):
        config = from_dict(IMPALAConfig, {**SMALL, "num_gpus": 2})
    with pytest.raises(ValueError, match=r"num_gpus=2 asks for 2 GPUs for the learner, but this "
                                         r"machine has 1 visible GPU \(torch.cuda.device_count"
                                         r"\(\) == 1\).*at most num_gpus=1"):
        IMPALA_POLICY.build(OBS, ACTIONS, config, worker_index=0)


def test_rollout_workers_never_ask_for_a_gpu(monkeypatch):
    def no_counting():
        raise AssertionError("a rollout worker's policy must not look for GPUs")

    config = from_dict(IMPALAConfig, {**SMALL, "num_gpus": 1})
    assert learner_gpus(config, 1, no_counting, "n") == 0.0
    assert learner_gpus(from_dict(IMPALAConfig, SMALL), 0, no_counting, "n") == 0.0
    monkeypatch.setattr(torch.cuda, "device_count", no_counting)
    worker_policy = IMPALA_POLICY.build(OBS, ACTIONS, config, worker_index=1, num_workers=1)
    assert worker_policy.device.type == "cpu"
    assert all(p.device.type == "cpu" for p in worker_policy.model.parameters())


def test_cpu_learner_keeps_numpy_weights_and_cpu_tensors():
    policy = IMPALA_POLICY.build(OBS, ACTIONS, from_dict(IMPALAConfig, SMALL), worker_index=0)
    assert policy.device.type == "cpu" and not policy._on_gpu
    weights = policy.get_weights()
    assert all(isinstance(w, np.ndarray) and w.dtype == np.float32 for w in weights.values())


@pytest.mark.tf
def test_tf_gpu_learner_without_a_gpu_is_an_error(monkeypatch):
    pytest.importorskip("tensorflow")
    from flowrl.policy import tf_policy

    monkeypatch.setattr(tf_policy, "_visible_gpus", lambda: 0)
    config = from_dict(IMPALAConfig, {**SMALL, "framework": "tf", "num_gpus": 1})
    with pytest.raises(ValueError, match=r"num_gpus=1 asks for 1 GPU for the learner, but this "
                                         r"machine has 0 visible GPUs \(len\(tf.config."
                                         r"list_physical_devices\(\"GPU\"\)\) == 0\)"):
        IMPALA_POLICY.build(OBS, ACTIONS, config, worker_index=0)
    worker_policy = IMPALA_POLICY.build(OBS, ACTIONS, config, worker_index=1, num_workers=1)
    assert worker_policy.device is None  # no GPU visible: TensorFlow's default placement


# ---- on a GPU ---------------------------------------------------------------------------------


def _train(algo: str, framework: str, iterations: int = 2):
    trainer = flowrl.Trainer(algo, env="gpu_corridor",
                             config={**SMALL, "framework": framework, "num_gpus": 1})
    try:
        results = [trainer.train() for _ in range(iterations)]
        learner = trainer.get_policy()
        worker = trainer.workers.remote_workers()[0].policy  # local mode: an object in process
        return results, learner, worker, learner.get_weights(), worker.get_weights()
    finally:
        trainer.stop()


@needs_cuda
@pytest.mark.parametrize("algo", ["impala", "appo"])
def test_torch_learner_trains_on_cuda_and_workers_act_on_the_cpu(local_executor, algo):
    results, learner, worker, learner_weights, worker_weights = _train(algo, "torch")
    assert results[-1]["num_steps_trained"] > 0
    stats = results[-1]["info"]["learner"]["default_policy"]
    assert np.isfinite(stats["total_loss"])
    assert results[-1]["info"]["learner_thread"]["num_updates"] >= 1
    assert learner.device.type == "cuda"
    assert all(p.is_cuda for p in learner.model.parameters())
    if learner.target_model is not None:
        assert all(p.is_cuda for p in learner.target_model.parameters())
    assert all(p.device.type == "cpu" for p in worker.model.parameters())
    for weights in (learner_weights, worker_weights):
        assert all(isinstance(w, np.ndarray) and w.dtype == np.float32 for w in weights.values())
    assert results[-1]["info"]["counters"]["learner/weight_broadcasts"] >= 1
    # a checkpoint round trip keeps the optimizer on the device
    state = learner.get_state()
    learner.set_state(state)
    assert all(isinstance(w, np.ndarray) for w in state["optimizer"]["exp_avg"].values())


@needs_cuda
def test_torch_gpu_learner_trains_with_ray_workers(ray_executor):
    results, learner, *_ = _train_on_ray()
    assert learner.device.type == "cuda"
    assert results[-1]["num_steps_trained"] > 0
    assert results[-1]["info"]["counters"]["learner/weight_broadcasts"] >= 1


def _train_on_ray():
    trainer = flowrl.Trainer("impala", env="gpu_corridor", config={**SMALL, "num_gpus": 1})
    try:
        results = [trainer.train() for _ in range(2)]
        return results, trainer.get_policy()
    finally:
        trainer.stop()


@pytest.mark.tf
@pytest.mark.skipif(_tf_gpus() == 0, reason="needs a GPU that TensorFlow sees")
def test_tf_learner_trains_on_the_gpu_and_workers_act_on_the_cpu(local_executor):
    results, learner, worker, learner_weights, _ = _train("impala", "tf")
    assert results[-1]["num_steps_trained"] > 0
    assert learner.device == "/GPU:0" and worker.device == "/CPU:0"
    assert all("GPU:0" in v.device for v in learner.model.parameters())
    assert all("CPU:0" in v.device for v in worker.model.parameters())
    assert all(isinstance(w, np.ndarray) for w in learner_weights.values())
