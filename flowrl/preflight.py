"""Checks made before a run starts anything: what the config, the env and the machine tell.

A mistake these checks can see (an algorithm that cannot act in the env's action space, more
rollout workers than CPUs, a GPU learner on a machine without one, a directory that cannot be
written, a viewer port that is taken) is a one-paragraph error in about a second, before Ray's
start (tens of seconds), before any worker, and before any run directory is made. The checks
later in the stack (policy construction, the cluster's resources) stay as the last line.

```python
check_env_spaces(spec, config, env_creator, "CartPole-v1")   # builds one env, then closes it
check_machine(config, local_mode=False, address=None)         # CPUs and GPUs
check_writable_dir("checkpoints", "checkpoint_dir")          # creates nothing
check_port_free(8265)
```
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from flowrl.envs import is_multi_agent_env
from flowrl.iter.executor import is_local_mode, visible_gpu_count
from flowrl.policy.policy import learner_gpus
from flowrl.policy.spaces import check_action_space, get_preprocessor

__all__ = ["check_env_spaces", "check_machine", "check_port_free", "check_writable_dir"]


def check_env_spaces(spec: Any, config: Any, env_creator: Any, env_name: str) -> None:
    """Builds one env and checks that the algorithm's policy can be built for its spaces.

    Runs the policy's model function (a description of the network; no framework is
    imported), so every rule the policy applies to spaces applies here, e.g. DQN's Q-network
    needs a Discrete action space. A multi-agent env is checked later, per agent.

    Raises:
        ValueError: naming the algorithm, the env and its space, with the policy's reason.
    """
    env = env_creator(dict(config.env_config))
    try:
        if is_multi_agent_env(env):
            return
        _check_has_spaces(env, env_name)
        observation_space, action_space = env.observation_space, env.action_space
        check_observations_fit(env, env_name)
    finally:
        close = getattr(env, "close", None)
        if callable(close):
            close()
    try:
        preprocessor = get_preprocessor(observation_space)
        check_action_space(action_space)
        spec.policy.model(config, preprocessor.shape, action_space)
    except ValueError as error:
        raise ValueError(
            f"{spec.name} cannot run on env {env_name!r} (observation_space="
            f"{observation_space}, action_space={action_space}): {error}") from None


def _check_has_spaces(env: Any, env_name: str) -> None:
    """Raises unless `env` declares gymnasium spaces for its observations and actions."""
    import gymnasium as gym

    missing = [name for name in ("observation_space", "action_space")
               if not isinstance(getattr(env, name, None), gym.spaces.Space)]
    if missing:
        raise ValueError(
            f"The env {env_name!r} ({type(env).__name__}) has no gymnasium {' or '.join(missing)}"
            f"; set self.observation_space and self.action_space in its __init__ (e.g. "
            f"gymnasium.spaces.Box(-1.0, 1.0, (4,), np.float32) and "
            f"gymnasium.spaces.Discrete(2)).")


def check_observations_fit(env: Any, env_name: str) -> None:
    """Resets `env` and takes one random step; raises if an observation is not in its
    `observation_space` (gymnasium's vector env would otherwise fail deep inside with "Output
    array is the wrong shape").

    Raises:
        ValueError: naming the env, the call, its space and the observation's shape and dtype.
    """
    space = env.observation_space
    observation, _ = env.reset(seed=0)
    _check_fits(space, observation, env_name, "reset()")
    observation, *_ = env.step(env.action_space.sample())
    _check_fits(space, observation, env_name, "step()")


def _fits(space: Any, observation: Any) -> bool:
    """Whether `observation` has the structure and shape `space` declares; Box bounds are not
    checked (envs often exceed them a little, and nothing downstream needs them)."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Box):
        array = np.asarray(observation)
        return array.shape == space.shape and array.dtype.kind in "biuf"
    if isinstance(space, gym.spaces.Dict):
        return (isinstance(observation, dict) and set(observation) == set(space.spaces)
                and all(_fits(space[key], observation[key]) for key in space.spaces))
    if isinstance(space, gym.spaces.Tuple):
        return (isinstance(observation, tuple) and len(observation) == len(space.spaces)
                and all(_fits(sub, part) for sub, part in zip(space.spaces, observation)))
    return bool(space.contains(observation))


def _check_fits(space: Any, observation: Any, env_name: str, call: str) -> None:
    if _fits(space, observation):
        return
    array = np.asarray(observation) if not isinstance(observation, dict | tuple) else None
    shape = (f"shape {array.shape}, dtype {array.dtype}" if array is not None
             else f"type {type(observation).__name__}")
    raise ValueError(
        f"The env {env_name!r} returned an observation from {call} that is not in its "
        f"observation_space {space}: {shape}. Make the env's observations match the space it "
        f"declares (structure and shape), or declare the space its observations have.")


def check_machine(config: Any, *, local_mode: bool | None, address: str | None) -> None:
    """Checks the config's CPUs and GPUs against this machine (or the running Ray cluster).

    Raises:
        ValueError: naming what the config asks for, what there is, and the fix.
    """
    _check_gpus(config)
    uses_ray = not local_mode if local_mode is not None else not is_local_mode()
    if not uses_ray or config.num_workers == 0:
        return
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        from flowrl.workers.worker_set import check_worker_resources

        check_worker_resources(config)  # the cluster's own total: no start needed
        return
    if address is not None:
        return  # a cluster's size is known once joined; WorkerSet checks it then
    cpus = os.cpu_count() or 1
    needed = config.num_workers * float(config.num_cpus_per_worker)
    if needed > cpus + 1e-9:
        raise ValueError(
            f"num_workers={config.num_workers} rollout workers with num_cpus_per_worker="
            f"{float(config.num_cpus_per_worker):g} need {needed:g} CPU, but this machine has "
            f"{cpus} CPU (the Ray cluster flowrl starts gets {cpus}), so they could never all "
            f"start and the run would hang. Use fewer workers (num_workers) or a smaller "
            f"num_cpus_per_worker, or start Ray with more CPUs on purpose to oversubscribe the "
            f"cores: flowrl.init(num_cpus=N) before building the Trainer.")


def _check_gpus(config: Any) -> None:
    """The learner's `num_gpus` against the GPUs here: the framework's count where it is
    already imported (free), else the NVIDIA devices visible to this process."""
    if float(getattr(config, "num_gpus", 0) or 0) <= 0:
        return
    torch = sys.modules.get("torch") if config.framework == "torch" else None
    tf = sys.modules.get("tensorflow") if config.framework == "tf" else None
    if torch is not None:
        learner_gpus(config, 0, torch.cuda.device_count, "torch.cuda.device_count()")
    elif tf is not None:
        learner_gpus(config, 0, lambda: len(tf.config.list_physical_devices("GPU")),
                     'len(tf.config.list_physical_devices("GPU"))')
    else:
        learner_gpus(config, 0, visible_gpu_count,
                     "NVIDIA devices visible to this process, CUDA_VISIBLE_DEVICES applied")


def check_writable_dir(path: str | os.PathLike[str] | None, option: str) -> None:
    """Checks that `path` is (or can be made as) a directory this process can write into.

    Probes the directory itself, or its nearest existing parent, with a temporary file that is
    removed at once; creates nothing that stays.

    Raises:
        ValueError: naming the option, the path and why it cannot be written.
    """
    if path is None:
        return
    target = Path(path).expanduser().absolute()
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(
            f"{option}={str(path)!r} cannot be a directory: {str(existing)!r} is a file. Pass "
            f"a directory path.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        made = "write into" if existing == target else f"create {str(target)!r} in"
        raise ValueError(
            f"{option}={str(path)!r} is not writable: cannot {made} {str(existing)!r} "
            f"({error.strerror}). Pass a directory you can write to, or fix its permissions; "
            f"found before training, so nothing is lost.") from None


def check_port_free(port: int | None) -> None:
    """Checks that the live viewer can listen on 127.0.0.1:`port` (None/0: any free port).

    Raises:
        ViewerPortError: when the port is taken or not allowed, as the viewer would.
    """
    if not port:
        return
    from flowrl.viz.live import ViewerPortError

    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does
        probe.bind(("127.0.0.1", port))
    except OSError as error:
        raise ViewerPortError(
            error.errno, f"Cannot serve the plan viewer on 127.0.0.1:{port}: {error.strerror}. "
            f"Pass another port, or none to pick a free one.") from None
    finally:
        probe.close()
