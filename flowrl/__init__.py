"""flowrl: distributed reinforcement learning where every algorithm is a dataflow plan.

The public entry points are re-exported here lazily, so ``import flowrl`` stays cheap: neither
Ray, torch nor TensorFlow is imported until a name that needs it is first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it. Resolved on first attribute access (PEP 562).
_LAZY_EXPORTS: dict[str, str] = {
    "init": "flowrl.iter.executor",
    "shutdown": "flowrl.iter.executor",
    "is_local_mode": "flowrl.iter.executor",
    "FlowError": "flowrl.iter.errors",
    "register_env": "flowrl.env",
    "make_env": "flowrl.env",
    "get_env_creator": "flowrl.env",
    "register_model": "flowrl.policy.model_contract",
    "unregister_model": "flowrl.policy.model_contract",
    "get_policy_class": "flowrl.plans",
    "list_algorithms": "flowrl.plans",
    "Trainer": "flowrl.trainer",
    "Callbacks": "flowrl.workers.callbacks",
    "run": "flowrl.trainer",
}

# Subpackages reachable as attributes after a plain `import flowrl` (e.g. `flowrl.viz.to_dot`).
_LAZY_SUBMODULES = ("viz",)

__all__ = sorted([*_LAZY_EXPORTS, *_LAZY_SUBMODULES]) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        module = importlib.import_module(f"flowrl.{name}")
        globals()[name] = module
        return module
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'flowrl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
