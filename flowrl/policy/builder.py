"""Turning a loss function into Torch and TF policy classes, and the algorithm registry.

An algorithm writes `loss(policy, model, dist_class, train_batch) -> (loss, stats)` once per
framework and registers both; `get_policy_class(algo, framework)` then builds (and caches) the
class. The framework module is imported only when a class for it is first built.

Examples:
    >>> from flowrl.policy.losses import pg_loss_torch, pg_loss_tf
    >>> register_policy("my_pg", pg_loss_torch, pg_loss_tf, default_config={"use_critic": False,
    ...                 "use_gae": False})
    >>> "my_pg" in registered_algorithms()
    True
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flowrl.policy.losses import PG_DEFAULT_CONFIG, pg_loss_tf, pg_loss_torch
from flowrl.policy.postprocessing import compute_gae_for_trajectory

FRAMEWORKS = ("torch", "tf")
_BASES = {
    "torch": ("flowrl.policy.torch_policy", "TorchPolicy"),
    "tf": ("flowrl.policy.tf_policy", "TFPolicy"),
}
_CLASS_SUFFIX = {"torch": "TorchPolicy", "tf": "TFPolicy"}


def build_policy_class(
    name: str,
    *,
    framework: str,
    loss_fn: Callable[..., tuple[Any, dict[str, Any]]],
    postprocess_fn: Callable[..., Any] | None = None,
    default_config: Mapping[str, Any] | None = None,
    stats_fn: Callable[..., dict[str, Any]] | None = None,
) -> type:
    """Returns a thin subclass of `TorchPolicy` or `TFPolicy` with the given loss attached.

    Args:
        name: the class name (e.g. "PPOTorchPolicy").
        framework: "torch" or "tf".
        loss_fn: `(policy, model, dist_class, train_batch) -> (loss, stats)` in that framework.
        postprocess_fn: `(policy, batch) -> batch` for one trajectory piece; default GAE.
        default_config: algorithm defaults layered over `DEFAULT_POLICY_CONFIG`.
        stats_fn: `(policy, train_batch) -> stats`, extra scalars reported with the loss stats.

    Raises:
        ValueError: for an unknown framework.
    """
    base = _base_class(framework)
    attributes = {
        "__doc__": f"{base.__name__} with loss {getattr(loss_fn, '__qualname__', loss_fn)}.",
        "__module__": __name__,
        "loss_fn": staticmethod(loss_fn),
        "postprocess_fn": staticmethod(postprocess_fn or compute_gae_for_trajectory),
        "default_config": dict(default_config or {}),
        "stats_fn": staticmethod(stats_fn) if stats_fn is not None else None,
    }
    return type(name, (base,), attributes)


@dataclass
class _Registration:
    torch_loss: Callable[..., Any] | None
    tf_loss: Callable[..., Any] | None
    postprocess_fn: Callable[..., Any] | None
    default_config: dict[str, Any]
    stats_fn: Callable[..., Any] | None = None
    classes: dict[str, type] = field(default_factory=dict)


_REGISTRY: dict[str, _Registration] = {}


def register_policy(
    algo: str,
    torch_loss: Callable[..., Any] | None,
    tf_loss: Callable[..., Any] | None,
    postprocess_fn: Callable[..., Any] | None = None,
    default_config: Mapping[str, Any] | None = None,
    stats_fn: Callable[..., Any] | None = None,
) -> None:
    """Registers an algorithm's losses so `get_policy_class(algo, framework)` can build them.

    Registering the same name again replaces the earlier registration. A loss may be None when
    the algorithm does not support that framework.
    """
    if torch_loss is None and tf_loss is None:
        raise ValueError(f"register_policy({algo!r}) needs at least one of torch_loss, tf_loss")
    _REGISTRY[algo.lower()] = _Registration(
        torch_loss, tf_loss, postprocess_fn, dict(default_config or {}), stats_fn
    )


def registered_algorithms() -> list[str]:
    """The algorithm names `get_policy_class` knows."""
    return sorted(_REGISTRY)


def get_policy_class(algo: str, framework: str = "torch") -> type:
    """The policy class of a registered algorithm for a framework ("torch" or "tf").

    Raises:
        ValueError: for an unknown algorithm or framework (listing the valid ones).

    Examples:
        >>> get_policy_class("pg").__name__
        'PGTorchPolicy'
    """
    registration = _REGISTRY.get(algo.lower())
    if registration is None:
        raise ValueError(f"unknown algorithm {algo=}; registered: {registered_algorithms()}")
    _check_framework(framework)
    cls = registration.classes.get(framework)
    if cls is None:
        loss = registration.torch_loss if framework == "torch" else registration.tf_loss
        if loss is None:
            supported = [f for f in FRAMEWORKS if _loss_for(registration, f) is not None]
            raise ValueError(f"algorithm {algo!r} has no {framework} loss; use one of {supported}")
        cls = build_policy_class(
            f"{algo.upper()}{_CLASS_SUFFIX[framework]}",
            framework=framework,
            loss_fn=loss,
            postprocess_fn=registration.postprocess_fn,
            default_config=registration.default_config,
            stats_fn=registration.stats_fn,
        )
        registration.classes[framework] = cls
    return cls


def _loss_for(registration: _Registration, framework: str) -> Any:
    return registration.torch_loss if framework == "torch" else registration.tf_loss


def _check_framework(framework: str) -> None:
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown {framework=}; valid frameworks: {list(FRAMEWORKS)}")


def _base_class(framework: str) -> type:
    _check_framework(framework)
    module_name, class_name = _BASES[framework]
    return getattr(importlib.import_module(module_name), class_name)


register_policy("pg", pg_loss_torch, pg_loss_tf, default_config=PG_DEFAULT_CONFIG)
