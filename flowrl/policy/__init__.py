"""The policy layer: the `Policy` interface, its Torch and TF implementations, and the data.

Importing this package imports neither torch nor TensorFlow: the framework classes
(`TorchPolicy`, `TFPolicy`, the `Torch*`/`TF*` distributions and models) load on first use.
This package never imports Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

from flowrl.data.sample_batch import MultiAgentBatch, SampleBatch, concat_samples
from flowrl.policy.exploration import (
    ActionSelector,
    EpsilonGreedy,
    GaussianNoise,
    SampleActionDistribution,
    sample_action_distribution,
)
from flowrl.policy.losses import pg_loss_tf, pg_loss_torch
from flowrl.policy.model_contract import (
    ACTOR_CRITIC,
    CONTRACTS,
    DETERMINISTIC_ACTOR_CRITIC,
    Q_VALUES,
    ModelContract,
    register_model,
    registered_models,
    unregister_model,
)
from flowrl.policy.models import (
    DeterministicActorCriticSpec,
    ModelSpec,
    QModelSpec,
    actor_critic_model,
)
from flowrl.policy.optimizer_groups import OptimizerGroup
from flowrl.policy.policy import Policy, Saveable
from flowrl.policy.postprocessing import (
    compute_advantages,
    compute_gae_for_fragment,
    compute_gae_for_trajectory,
    discount_cumsum,
    trajectory_bounds,
)
from flowrl.policy.schedules import PiecewiseSchedule
from flowrl.policy.spaces import Preprocessor, get_preprocessor
from flowrl.policy.spec import (
    FRAMEWORKS,
    PolicySpec,
    deterministic_actor_critic_model,
    policy_class,
    q_model,
)

DISTRIBUTION_NAMES = ("Categorical", "MultiCategorical", "DiagGaussian", "Deterministic")

_LAZY: dict[str, str] = {
    "TorchPolicy": "flowrl.policy.torch_policy",
    "TorchParameters": "flowrl.policy.torch_models",
    "TorchModuleWeights": "flowrl.policy.torch_models",
    "TorchModel": "flowrl.policy.torch_models",
    "TorchQModel": "flowrl.policy.torch_models",
    "TorchDeterministicActorCritic": "flowrl.policy.torch_models",
    "TorchCategorical": "flowrl.policy.torch_distributions",
    "TorchMultiCategorical": "flowrl.policy.torch_distributions",
    "TorchDiagGaussian": "flowrl.policy.torch_distributions",
    "TorchDeterministic": "flowrl.policy.torch_distributions",
    "TFPolicy": "flowrl.policy.tf_policy",
    "TFParameters": "flowrl.policy.tf_models",
    "TFModuleWeights": "flowrl.policy.tf_models",
    "TFModel": "flowrl.policy.tf_models",
    "TFQModel": "flowrl.policy.tf_models",
    "TFDeterministicActorCritic": "flowrl.policy.tf_models",
    "TFCategorical": "flowrl.policy.tf_distributions",
    "TFMultiCategorical": "flowrl.policy.tf_distributions",
    "TFDiagGaussian": "flowrl.policy.tf_distributions",
    "TFDeterministic": "flowrl.policy.tf_distributions",
}

_DIST_MODULES = {
    "torch": "flowrl.policy.torch_distributions",
    "tf": "flowrl.policy.tf_distributions",
}


def get_distribution_class(name: str, framework: str = "torch") -> type:
    """A distribution class by name ("Categorical", ...) for "torch" or "tf"."""
    if framework not in _DIST_MODULES:
        raise ValueError(f"unknown {framework=}; valid frameworks: {list(_DIST_MODULES)}")
    if name not in DISTRIBUTION_NAMES:
        raise ValueError(f"unknown distribution {name=}; valid: {list(DISTRIBUTION_NAMES)}")
    return importlib.import_module(_DIST_MODULES[framework]).DISTRIBUTIONS[name]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'flowrl.policy' has no attribute {name!r}")
    return getattr(importlib.import_module(module_name), name)


__all__ = [
    "ACTOR_CRITIC",
    "CONTRACTS",
    "DETERMINISTIC_ACTOR_CRITIC",
    "Q_VALUES",
    "ModelContract",
    "OptimizerGroup",
    "register_model",
    "registered_models",
    "unregister_model",
    "DISTRIBUTION_NAMES",
    "FRAMEWORKS",
    "ActionSelector",
    "DeterministicActorCriticSpec",
    "EpsilonGreedy",
    "GaussianNoise",
    "ModelSpec",
    "MultiAgentBatch",
    "PiecewiseSchedule",
    "Policy",
    "PolicySpec",
    "Preprocessor",
    "QModelSpec",
    "SampleActionDistribution",
    "SampleBatch",
    "Saveable",
    "actor_critic_model",
    "compute_advantages",
    "compute_gae_for_fragment",
    "compute_gae_for_trajectory",
    "concat_samples",
    "deterministic_actor_critic_model",
    "discount_cumsum",
    "get_distribution_class",
    "get_preprocessor",
    "pg_loss_tf",
    "pg_loss_torch",
    "policy_class",
    "q_model",
    "sample_action_distribution",
    "trajectory_bounds",
    *_LAZY,
]
