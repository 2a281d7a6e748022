"""`PolicySpec`: what an algorithm supplies to the policy layer, as plain importable pieces.

There are two policy classes, `TorchPolicy` and `TFPolicy`; an algorithm never subclasses them
and nothing is generated at run time. It describes its policy with a `PolicySpec` of ordinary
module-level functions, and `spec.build(...)` makes the policy for `config.framework`:

```python
PPO_POLICY = PolicySpec(
    name="ppo",
    torch_loss=ppo_loss_torch,              # (policy, batch) -> (loss, stats), Torch tensors
    tf_loss=ppo_loss_tf,                    # the same in TensorFlow
    model=actor_critic_model,               # (config, obs_shape, action_space) -> model spec
    action_selection=sample_action_distribution,   # -> an ActionSelector
    postprocess=compute_gae_for_trajectory, # per trajectory piece; None keeps raw rows
    coefficients=("kl_coeff",),             # loss coefficients a plan may change
    config_class=PPOConfig,
)
policy = PPO_POLICY.build(obs_space, action_space, config)
```

A value-based algorithm uses `model=q_model` (or its own factory, e.g. dueling) with
`EpsilonGreedy` and `target_network=True`; a deterministic-actor algorithm uses
`deterministic_actor_critic_model` with `GaussianNoise`. An algorithm with its own network
returns its own spec from `model` (any object with `contract`, `output_size`, `torch_class`,
`tf_class`, `weight_shapes()` and `initial_weights(rng)`); a user swaps the network alone with
`config.model.custom_model` (an `nn.Module` / Keras class meeting the same contract). Specs and
policies pickle with the standard `pickle` module (the functions are pickled by reference).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym

from flowrl.policy.exploration import ActionSelector, sample_action_distribution
from flowrl.policy.models import (
    DeterministicActorCriticSpec,
    QModelSpec,
    actor_critic_model,
    build_deterministic_actor_critic_spec,
    build_q_model_spec,
)
from flowrl.policy.optimizer_groups import OptimizerGroup
from flowrl.policy.postprocessing import compute_gae_for_trajectory

FRAMEWORKS = ("torch", "tf")
_POLICY_CLASSES = {
    "torch": ("flowrl.policy.torch_policy", "TorchPolicy"),
    "tf": ("flowrl.policy.tf_policy", "TFPolicy"),
}

LossFn = Callable[[Any, Mapping[str, Any]], tuple[Any, Mapping[str, Any]]]
ModelFn = Callable[[Any, tuple[int, ...], gym.Space], Any]
SelectorFn = Callable[..., ActionSelector]
PostprocessFn = Callable[[Any, Any], Any]


def q_model(config: Any, obs_shape: tuple[int, ...], action_space: gym.Space) -> QModelSpec:
    """Model factory of value-based algorithms: a Q-network, dueling when `config.dueling`."""
    return build_q_model_spec(obs_shape, action_space, config.model,
                              dueling=bool(getattr(config, "dueling", False)))


def deterministic_actor_critic_model(config: Any, obs_shape: tuple[int, ...],
                                     action_space: gym.Space) -> DeterministicActorCriticSpec:
    """Model factory of deterministic-actor algorithms: an actor and twin critics
    (one critic when `config.twin_q` is False)."""
    return build_deterministic_actor_critic_spec(
        obs_shape, action_space, config.model, twin_q=bool(getattr(config, "twin_q", True)))


@dataclasses.dataclass(frozen=True, eq=False)
class PolicySpec:
    """An algorithm's policy: its losses, model, action selection and postprocessing."""

    name: str
    """Short name, e.g. "ppo" (used in error messages and metrics)."""
    torch_loss: LossFn | None = None
    """`loss(policy, batch) -> (loss, stats)` on Torch tensors; None: no Torch support."""
    tf_loss: LossFn | None = None
    """`loss(policy, batch) -> (loss, stats)` on TF tensors; None: no TF support."""
    model: ModelFn = actor_critic_model
    """`model(config, obs_shape, action_space) -> model spec`: the algorithm's built-in network,
    whose `contract` says which outputs the loss needs and whose `torch_class` / `tf_class`
    build it; `config.model.custom_model` replaces the class (flowrl.policy.model_contract)."""
    action_selection: SelectorFn = sample_action_distribution
    """`(config, action_space, *, worker_index, num_workers, seed) -> ActionSelector`."""
    postprocess: PostprocessFn | None = compute_gae_for_trajectory
    """`(policy, piece) -> piece` for one trajectory piece of one env; None keeps raw rows."""
    coefficients: tuple[str, ...] = ()
    """Config fields that become mutable loss coefficients (`policy.get_coefficient(name)`)."""
    target_network: bool = False
    """Keep a target copy of the model (`policy.target_model`, `policy.update_target(tau)`)."""
    config_class: type | None = None
    """The algorithm's config class; lets `build` accept a plain dict of overrides."""
    optimizer_groups: tuple[OptimizerGroup, ...] = ()
    """Named weight groups, each with its own optimizer, lr, clipping and update period; the
    loss then returns `({group: loss}, stats)`. () = one Adam over every weight on the config's
    lr / lr_schedule / grad_clip, and a scalar loss (see `flowrl.policy.optimizer_groups`)."""
    recurrent_loss: bool = False
    """The losses train recurrent models: they take the model's outputs from
    `policy.model_outputs(batch)` (one per real step, run over the batch's sequences) and
    bootstraps from `policy.bootstrap_values`. Without it, a recurrent model cannot learn."""
    batch_of_sequences: bool = False
    """Each training row is one whole sequence with a time axis (obs [S, T, ...], actions
    [S, T], `state_in_{i}` [S, ...], `seq_lens` [S]), as R2D2's replay stores them; the loss
    calls the model on them itself. False: rows are steps, cut into sequences by the policy."""
    time_major: bool = False
    """The loss reshapes the rows to time-major [T, B] (V-trace): every agent stream of a
    sample must be a whole fragment of `rollout_fragment_length` rows."""

    def loss_for(self, framework: str) -> LossFn:
        """The loss of `framework`, or a clear error when the algorithm has none for it."""
        check_framework(framework)
        loss = self.torch_loss if framework == "torch" else self.tf_loss
        if loss is None:
            supported = [f for f in FRAMEWORKS if (self.torch_loss, self.tf_loss)[
                FRAMEWORKS.index(f)] is not None]
            raise ValueError(
                f"Policy {self.name!r} has no {framework} loss; use framework one of "
                f"{supported}.")
        return loss

    def policy_class(self, framework: str) -> type:
        """`TorchPolicy` or `TFPolicy` (imports that framework on first use)."""
        return policy_class(framework)

    def build(self, observation_space: gym.Space, action_space: gym.Space, config: Any, *,
              worker_index: int = 0, num_workers: int = 0, seed: int | None = None,
              num_threads: int | None = None) -> Any:
        """Builds this policy for `config.framework`.

        Args:
            observation_space: the env's observation space.
            action_space: the env's action space.
            config: the algorithm's typed config (or a dict of overrides when the spec names
                its `config_class`).
            worker_index: 0 for the learner's policy, 1..n on rollout workers.
            num_workers: how many rollout workers there are (per-worker exploration).
            seed: this policy's seed (default: `config.seed`).
            num_threads: intra-op threads of the framework in this process (None: default).
        """
        config = self.resolve_config(config)
        return self.policy_class(config.framework)(
            observation_space, action_space, config, spec=self, worker_index=worker_index,
            num_workers=num_workers, seed=seed, num_threads=num_threads)

    def resolve_config(self, config: Any) -> Any:
        """The typed config: `config` itself, or a dict of overrides parsed by `config_class`."""
        if isinstance(config, Mapping):
            if self.config_class is None:
                raise TypeError(
                    f"Policy {self.name!r} needs a typed config object; got a "
                    f"{type(config).__name__}. Build one with flowrl.config.from_dict("
                    f"YourConfig, overrides), or give the PolicySpec a config_class.")
            from flowrl.config import from_dict

            return from_dict(self.config_class, config)
        if not hasattr(config, "framework"):
            raise TypeError(f"Policy {self.name!r} needs an algorithm config (with fields "
                            f"framework, lr, model, ...); got {config!r}.")
        return config

    def __repr__(self) -> str:
        return f"PolicySpec({self.name!r})"


def check_framework(framework: str) -> None:
    """Raises ValueError naming the valid frameworks."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown {framework=}; valid frameworks: {list(FRAMEWORKS)}")


def policy_class(framework: str) -> type:
    """`TorchPolicy` for "torch", `TFPolicy` for "tf"; imports that framework on first use."""
    check_framework(framework)
    module_name, class_name = _POLICY_CLASSES[framework]
    return getattr(importlib.import_module(module_name), class_name)
