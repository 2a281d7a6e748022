"""The process-global executor: Ray actors, or plain objects in the driver (``local_mode``).

Everything above ``flowrl/iter`` talks to actors only through the functions here, so every
operator runs unchanged in local mode. Ray is imported only on Ray code paths.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from flowrl.iter.errors import ActorDiedError
from flowrl.iter.shipping import as_worker_import_error, ship_unimportable_modules

_LOCAL = "local"
_RAY = "ray"

# Which executor `flowrl.init` selected (None: not initialised yet), and whether flowrl started
# the Ray instance itself (then `shutdown` stops it).
_state: dict[str, Any] = {"mode": None, "started_ray": False}


def init(
    address: str | None = None,
    local_mode: bool = False,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    **ray_init_kwargs: Any,
) -> None:
    """Selects the executor plans run on. Idempotent.

    A Ray cluster that flowrl starts listens on 127.0.0.1 only and runs no dashboard unless
    ``include_dashboard=True`` is passed (then it serves on 127.0.0.1 too).

    Args:
        address: Address of a running Ray cluster to join; None starts (or reuses) a local one.
        local_mode: True selects the in-process executor: shards are plain objects in the
            driver and the whole plan runs in one thread, so ``pdb`` works in any operator.
            Switching to it does not stop a running Ray.
        num_cpus: CPUs for a Ray cluster that flowrl starts. More than the machine has
            oversubscribes its cores on purpose.
        num_gpus: GPUs for a Ray cluster that flowrl starts; at most the GPUs this machine has.
        **ray_init_kwargs: Passed on to ``ray.init`` when flowrl starts Ray.

    Raises:
        ValueError: if ``num_gpus`` exceeds the GPUs this machine has, or is negative.

    Examples:
        >>> import flowrl
        >>> flowrl.init(local_mode=True)
        >>> flowrl.is_local_mode()
        True
    """
    if local_mode:
        _state["mode"] = _LOCAL
        return
    if num_gpus is not None and address is None:
        _check_gpus_exist(num_gpus)
    import ray

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, **ray_init_kwargs}
        if address is None:
            # Ray runs workers at niceness 15 so its own daemons stay responsive; rollout
            # workers are the hot path of RL, so on a small machine they must not yield.
            kwargs["_system_config"] = {"worker_niceness": 0,
                                        **kwargs.pop("_system_config", {})}
            _bind_to_loopback(ray, kwargs)
            if num_gpus is not None:
                kwargs["num_gpus"] = num_gpus
        else:
            kwargs.pop("_system_config", None)
            kwargs["address"] = address
            if num_gpus is not None:
                kwargs["num_gpus"] = num_gpus  # Ray says why a joined cluster refuses it
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        ray.init(**kwargs)
        _state["started_ray"] = True
    _state["mode"] = _RAY


_LOOPBACK = "127.0.0.1"


def _bind_to_loopback(ray: Any, kwargs: dict[str, Any]) -> None:
    """Makes the Ray cluster about to start listen on 127.0.0.1 only (and its dashboard too).

    Ray binds its servers to the node's address, but on Linux it replaces a loopback node
    address by the machine's external one unless its single-machine switch is set; that switch
    is read from the environment once, at import, so it is set on the loaded module as well.
    """
    kwargs.setdefault("_node_ip_address", _LOOPBACK)
    if kwargs.get("include_dashboard"):
        kwargs.setdefault("dashboard_host", _LOOPBACK)
    if kwargs["_node_ip_address"] != _LOOPBACK:
        return
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if constants is not None and hasattr(constants, "ENABLE_RAY_CLUSTER"):
        constants.ENABLE_RAY_CLUSTER = False


def visible_gpu_count() -> int:
    """GPUs this process can use: NVIDIA devices found by the driver, limited by
    ``CUDA_VISIBLE_DEVICES`` when it is set. Imports no framework.

    Examples:
        >>> visible_gpu_count() >= 0
        True
    """
    devices_dir = "/proc/driver/nvidia/gpus"
    found = len(os.listdir(devices_dir)) if os.path.isdir(devices_dir) else _nvidia_smi_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return found
    entries = [entry for entry in visible.split(",") if entry.strip()]
    if any(entry.strip().startswith("-") for entry in entries[:1]):
        return 0  # "-1" hides every device
    return min(found, len(entries))


def _nvidia_smi_count() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                 timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


def _check_gpus_exist(num_gpus: int) -> None:
    if num_gpus < 0:
        raise ValueError(f"num_gpus must be >= 0; got num_gpus={num_gpus}.")
    available = visible_gpu_count()
    if num_gpus > available:
        raise ValueError(
            f"flowrl.init(num_gpus={num_gpus}) asks for {num_gpus} GPU(s), but this machine "
            f"has {available} visible to this process (NVIDIA driver devices, limited by "
            f"CUDA_VISIBLE_DEVICES). Pass num_gpus={available} or fewer, or omit it to let Ray "
            f"detect them.")


def check_resources(request: Mapping[str, float], purpose: str, fix: str) -> None:
    """Fails at once when the Ray cluster can never grant ``request``, instead of hanging.

    Compares each resource (e.g. ``{"CPU": 8}``) with the cluster's total, not with what is
    free now: a request within the total waits for running work; one beyond it would wait
    forever. Local mode needs no check.

    Args:
        request: resource name -> amount the caller's actors reserve together.
        purpose: what needs them, e.g. "8 rollout workers x num_cpus_per_worker=1.0".
        fix: what the user can change, appended to the message.

    Raises:
        ValueError: naming the requested and the available amount and the fix.

    Examples:
        >>> init(local_mode=True); check_resources({"CPU": 1000}, "a test", "")
    """
    if not any(amount > 0 for amount in request.values()) or _mode() == _LOCAL:
        return
    import ray

    total = ray.cluster_resources()
    for name, amount in request.items():
        available = float(total.get(name, 0.0))
        if amount > available + 1e-9:
            raise ValueError(
                f"{purpose} need {amount:g} {name}, but the Ray cluster has {available:g} {name} "
                f"in total, so they could never all start and the run would hang. {fix}")


def shutdown() -> None:
    """Forgets the selected executor; stops Ray only if ``init`` started it. Idempotent.

    Examples:
        >>> import flowrl
        >>> flowrl.shutdown(); flowrl.shutdown()  # doctest: +SKIP
    """
    if _state["started_ray"]:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    _state["mode"] = None
    _state["started_ray"] = False
    _shard_pool["job"], _shard_pool["idle"] = None, []


def is_local_mode() -> bool:
    """True when the in-process executor is selected.

    Examples:
        >>> init(local_mode=True); is_local_mode()
        True
    """
    return _state["mode"] == _LOCAL


def _mode() -> str:
    """The executor to run on now; selects Ray (starting it if needed) when none was chosen."""
    if _state["mode"] is None:
        init(local_mode=False)
    return _state["mode"]


class LocalFuture:
    """The result of a call in local mode: the method already ran; holds its value or error.

    Examples:
        >>> get(LocalFuture(value=3))
        3
    """

    __slots__ = ("value", "error")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


# Plain objects "killed" in local mode: id -> object (kept alive so the id is not reused).
_dead_local: dict[int, Any] = {}


def create_actor(cls: type, *args: Any, num_cpus: float = 1, **kwargs: Any) -> Any:
    """Creates ``cls(*args, **kwargs)`` as a Ray actor, or as a plain object in local mode.

    Examples:
        >>> init(local_mode=True)
        >>> create_actor(list, [1, 2])
        [1, 2]
    """
    if _mode() == _LOCAL:
        return cls(*args, **kwargs)
    import ray

    ship_unimportable_modules()
    return ray.remote(cls).options(num_cpus=num_cpus).remote(*args, **kwargs)


def call(handle: Any, method_name: str, *args: Any, **kwargs: Any) -> Any:
    """Calls ``handle.method_name(*args, **kwargs)``; returns a future for ``get``/``wait``.

    On Ray the future is an ObjectRef; in local mode the method runs now and the returned
    ``LocalFuture`` holds its value or exception.

    Examples:
        >>> init(local_mode=True)
        >>> get(call([3, 1], "index", 1))
        1
    """
    if not _is_ray_actor(handle):
        if id(handle) in _dead_local:
            return LocalFuture(error=ActorDiedError(f"the actor {handle!r} was killed"))
        try:
            return LocalFuture(value=getattr(handle, method_name)(*args, **kwargs))
        except Exception as exc:  # delivered by get(), as Ray would
            return LocalFuture(error=exc)
    ship_unimportable_modules()
    return getattr(handle, method_name).remote(*args, **kwargs)


def get(future_or_list: Any, timeout: float | None = None) -> Any:
    """Waits for one future (or a list) and returns its value(s).

    Raises:
        ActorDiedError: The actor behind a call is dead (the Ray error is the cause).

    Examples:
        >>> get([LocalFuture(value=1), LocalFuture(value=2)])
        [1, 2]
    """
    if isinstance(future_or_list, list):
        if not any(_is_ray_ref(f) for f in future_or_list):
            return [_get_local(f) for f in future_or_list]
    elif not _is_ray_ref(future_or_list):
        return _get_local(future_or_list)
    import ray

    try:
        if isinstance(future_or_list, list) and not all(_is_ray_ref(f) for f in future_or_list):
            return [get(f, timeout=timeout) for f in future_or_list]
        return ray.get(future_or_list, timeout=timeout)
    except ray.exceptions.RayActorError as exc:
        raise ActorDiedError(f"an actor died during the call: {exc}") from exc
    except ray.exceptions.RaySystemError as exc:  # e.g. arguments the worker cannot unpickle
        import_error = as_worker_import_error(exc, "an object sent to an actor")
        if import_error is not None:
            raise import_error from exc
        raise


def _get_local(future: Any) -> Any:
    return future.result() if isinstance(future, LocalFuture) else future


def wait(
    futures: Sequence[Any], num_returns: int = 1, timeout: float | None = None
) -> tuple[list[Any], list[Any]]:
    """Returns ``(ready, pending)``: at least ``num_returns`` ready futures unless timed out.

    Examples:
        >>> ready, pending = wait([LocalFuture(value=1), LocalFuture(value=2)])
        >>> len(ready), len(pending)
        (1, 1)
    """
    futures = list(futures)
    ray_refs = [f for f in futures if _is_ray_ref(f)]
    if not ray_refs:
        return futures[:num_returns], futures[num_returns:]
    local = [f for f in futures if not _is_ray_ref(f)]
    if len(local) >= num_returns:
        return local[:num_returns], local[num_returns:] + ray_refs
    import ray

    ready, pending = ray.wait(ray_refs, num_returns=num_returns - len(local), timeout=timeout)
    return local + ready, pending


def put(value: Any) -> Any:
    """Stores ``value`` once for many calls (``ray.put``); the value itself in local mode.

    Examples:
        >>> init(local_mode=True); put(5)
        5
    """
    if _mode() == _LOCAL:
        return value
    import ray

    ship_unimportable_modules()
    return ray.put(value)


def kill(handle: Any) -> None:
    """Kills an actor; in local mode later calls on the object raise ActorDiedError.

    Examples:
        >>> init(local_mode=True)
        >>> worker = create_actor(list); kill(worker)
        >>> get(call(worker, "copy"))
        Traceback (most recent call last):
        ...
        flowrl.iter.errors.ActorDiedError: the actor [] was killed
    """
    if _is_ray_actor(handle):
        import ray

        ray.kill(handle, no_restart=True)
    else:
        _dead_local[id(handle)] = handle


# Idle generic shard actors kept for reuse (starting a Ray actor costs about a second), tagged
# with the Ray job they belong to.
_shard_pool: dict[str, Any] = {"job": None, "idle": []}
_SHARD_POOL_SIZE = 8


def acquire_shard_worker(worker_class: type, item_generator: Any, repeat: bool) -> Any:
    """A ``worker_class(item_generator, repeat)`` shard, reusing an idle pooled Ray actor."""
    if _mode() == _LOCAL:
        return worker_class(item_generator, repeat)
    import ray

    job = ray.get_runtime_context().get_job_id()
    if _shard_pool["job"] != job:
        _shard_pool["job"], _shard_pool["idle"] = job, []
    while _shard_pool["idle"]:
        handle = _shard_pool["idle"].pop()
        ship_unimportable_modules()
        # Waiting for the reset costs one round trip and proves the pooled actor is still
        # alive; a dead one (killed, or collected by Ray) is dropped and the next one tried.
        try:
            ray.get(handle.par_iter_reset.remote(item_generator, repeat), timeout=30)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            continue
        return handle
    return create_actor(worker_class, item_generator, repeat, num_cpus=0)


def release_shard_worker(handle: Any) -> None:
    """Returns a shard actor from ``acquire_shard_worker`` to the pool (Ray only)."""
    if _is_ray_actor(handle) and len(_shard_pool["idle"]) < _SHARD_POOL_SIZE:
        _shard_pool["idle"].append(handle)


def remote_apply(fn: Any) -> Any:
    """Returns ``submit(item) -> future`` that runs ``fn(item)`` as a Ray task (or inline)."""
    if _mode() == _LOCAL:

        def submit_local(item: Any) -> LocalFuture:
            try:
                return LocalFuture(value=fn(item))
            except Exception as exc:
                return LocalFuture(error=exc)

        return submit_local
    import ray

    ship_unimportable_modules()
    fn_ref = ray.put(fn)
    task = ray.remote(_apply).options(num_cpus=0)

    def submit_ray(item: Any) -> Any:
        return task.remote(fn_ref, item)

    return submit_ray


def _apply(fn: Any, item: Any) -> Any:
    return fn(item)


def get_task_result(future: Any) -> Any:
    """Like ``get``, but re-raises a failed Ray task's original exception (not its wrapper)."""
    if not _is_ray_ref(future):
        return _get_local(future)
    import ray

    try:
        return ray.get(future)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ray.exceptions.RaySystemError):  # its arguments did not unpickle
            import_error = as_worker_import_error(exc, "the function sent to a Ray task")
            if import_error is not None:
                raise import_error from exc
        if isinstance(cause, BaseException):
            cause.remote_traceback = str(exc)  # type: ignore[attr-defined]
            raise cause from None
        raise


def is_plain_object(handle: Any) -> bool:
    """True for a local-mode "actor" (a plain object), False for a Ray actor handle."""
    return not _is_ray_actor(handle)


def _is_ray_ref(obj: Any) -> bool:
    return type(obj).__name__ == "ObjectRef" and type(obj).__module__.startswith("ray")


def _is_ray_actor(obj: Any) -> bool:
    return type(obj).__name__ == "ActorHandle" and type(obj).__module__.startswith("ray")
