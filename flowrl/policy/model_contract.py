"""The model contract: what a policy's network computes, and how users bring their own.

A policy's model is an ordinary framework object: a `torch.nn.Module` for Torch, a Keras model
(or any `tf.Module`) for TF. The algorithm says which outputs its loss and its action selection
need by the *contract* of its default model; any model that computes those outputs can stand in.

| contract                     | stateless call                                 | outputs        |
|------------------------------|------------------------------------------------|----------------|
| `actor_critic`               | `model(obs) -> (dist_inputs, values)`          | [B, n], [B]    |
| `q`                          | `model(obs) -> q_values`                       | [B, n]         |
| `deterministic_actor_critic` | `model.actor(obs)`, `model.critics(obs, act)`  | [B, n], [[B]]  |
| `soft_actor_critic`          | `model.actor(obs)`, `model.critics(obs, act)`  | [B, n], [[B]]  |

`n` is the contract's `num_outputs` for this action space: the action distribution's input size
(e.g. 2 logits for Discrete(2), mean and log-std for a Box: 2 * A), the number of actions for Q,
and the action size for a deterministic actor (outputs in [-1, 1], scaled to the bounds). A soft
actor (SAC) outputs the inputs of its action distribution: mean and log-std of a Gaussian
squashed by tanh for a Box (n = 2 * A), logits for Discrete (n = |A|); for Discrete its critics
are called without actions, `model.critics(obs) -> list of Q [B, |A|]`, and the model also
holds SAC's temperature as a weight named `log_alpha` (shape (1,)).

A *recurrent* model also defines `initial_state() -> list` (one array or tensor per state
tensor, without the batch dimension; non-empty) and is called over [B, T] sequences:
`model(obs[B, T, ...], state[list of B, ...], seq_lens[B]) -> (*outputs, state_out)`, each
output with a time dimension after the batch one ([B, T, n], [B, T]) and `state_out` the state
after each sequence's last valid step. When acting, the policy calls it with T = 1.

A custom model class is built as
`Model(obs_shape, action_space, num_outputs, model_config, **custom_model_config)` and named in
the config: `{"model": {"custom_model": Model, "custom_model_config": {...}}}`, or by a name
given to `register_model` (or a `"package.module:Class"` import path, which is also what a
checkpoint stores for a class).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FRAMEWORK_NAMES = ("torch", "tf")
_REGISTRY: dict[str, dict[str, Any]] = {}


@dataclasses.dataclass(frozen=True)
class ModelContract:
    """The outputs an algorithm needs from its model, as written in error messages and docs."""

    name: str
    """"actor_critic", "q" or "deterministic_actor_critic"."""
    call: str
    """The stateless call and its outputs' shapes."""
    outputs: tuple[str, ...]
    """Names of the outputs, in the order the model returns them."""
    recurrent: bool = True
    """Whether a recurrent model may implement it."""


ACTOR_CRITIC = ModelContract(
    "actor_critic", "model(obs) -> (dist_inputs [B, num_outputs], values [B])",
    ("dist_inputs", "values"))
Q_VALUES = ModelContract("q", "model(obs) -> q_values [B, num_outputs]", ("q_values",))
DETERMINISTIC_ACTOR_CRITIC = ModelContract(
    "deterministic_actor_critic",
    "model.actor(obs) -> actions in [-1, 1] [B, num_outputs]; model.critics(obs, actions) -> "
    "list of Q-values [B]", ("actions",), recurrent=False)
SOFT_ACTOR_CRITIC = ModelContract(
    "soft_actor_critic",
    "model.actor(obs) -> dist_inputs [B, num_outputs] (Box: tanh-Gaussian mean and log-std; "
    "Discrete: logits); model.critics(obs, actions) -> list of Q [B] (Discrete: "
    "model.critics(obs) -> list of Q [B, num_actions]); a weight log_alpha [1]",
    ("dist_inputs",), recurrent=False)
CONTRACTS = {c.name: c for c in (ACTOR_CRITIC, Q_VALUES, DETERMINISTIC_ACTOR_CRITIC,
                                 SOFT_ACTOR_CRITIC)}
"""Every model contract by name."""


def register_model(name: str, *, torch: Any = None, tf: Any = None) -> None:
    """Registers a custom model under `name` for `{"model": {"custom_model": name}}`.

    Give the class of each framework the model exists in (at least one). Registering is
    explicit: nothing registers on import, and the built-in models need no registration.

    Args:
        name: the name configs use.
        torch: the `torch.nn.Module` class (or None).
        tf: the Keras model / `tf.Module` class (or None).

    Raises:
        ValueError: no class given, or the name is taken by different classes.

    Examples:
        >>> class TinyTorchNet: ...
        >>> register_model("tiny_doc_example", torch=TinyTorchNet)
        >>> resolve_model_class("tiny_doc_example", "torch") is TinyTorchNet
        True
    """
    if torch is None and tf is None:
        raise ValueError(f"register_model({name!r}) needs a model class: pass torch=... "
                         "and/or tf=....")
    classes = {"torch": torch, "tf": tf}
    known = _REGISTRY.get(name)
    if known is not None and known != classes:
        raise ValueError(f"a model named {name!r} is already registered ({known}); choose "
                         "another name or unregister_model() it first.")
    _REGISTRY[name] = classes


def unregister_model(name: str) -> None:
    """Removes a registered model name (no error when it is not registered)."""
    _REGISTRY.pop(name, None)


def registered_models() -> list[str]:
    """The names `register_model` registered, sorted."""
    return sorted(_REGISTRY)


def resolve_model_class(custom_model: Any, framework: str) -> Any:
    """The class a config's `custom_model` names for `framework`.

    Args:
        custom_model: a class, a registered name, or a `"package.module:Class"` path.
        framework: "torch" or "tf".

    Raises:
        ValueError: an unknown name, a name with no class for this framework, or a class of
            the other framework (each message says what would work).
    """
    if isinstance(custom_model, str):
        if custom_model in _REGISTRY:
            found = _REGISTRY[custom_model][framework]
            if found is None:
                others = [f for f, c in _REGISTRY[custom_model].items() if c is not None]
                raise ValueError(
                    f"custom_model {custom_model!r} is registered for {others} only, not for "
                    f"framework={framework!r}; register a {framework} class with "
                    f"flowrl.register_model({custom_model!r}, {framework}=...) or use "
                    f"framework={others[0]!r}.")
            return found
        if ":" in custom_model:
            return _import_class(custom_model)
        raise ValueError(
            f"unknown custom_model={custom_model!r}; registered models: "
            f"{registered_models()}. Pass the model class itself, a name registered with "
            "flowrl.register_model(name, torch=..., tf=...), or a 'package.module:Class' path.")
    if not callable(custom_model):
        raise ValueError(f"custom_model must be a model class, a registered name or a "
                         f"'package.module:Class' path; got {custom_model!r}.")
    found_framework = class_framework(custom_model)
    if found_framework is not None and found_framework != framework:
        raise ValueError(
            f"custom_model {_qualified_name(custom_model)} is a {found_framework} model, but "
            f"the policy's framework={framework!r}; set framework={found_framework!r}, or "
            f"register both implementations with flowrl.register_model(name, torch=..., "
            f"tf=...) and pass the name.")
    return custom_model


def class_framework(model_class: Any) -> str | None:
    """"torch" or "tf" by the framework a class derives from (None: neither is recognised)."""
    for base in getattr(model_class, "__mro__", ()):
        root = getattr(base, "__module__", "").split(".")[0]
        if root == "torch":
            return "torch"
        if root in ("tensorflow", "keras", "tf_keras"):
            return "tf"
    return None


def model_class_path(model_class: type) -> str:
    """The `"package.module:Class"` path of a class (what a stored config keeps)."""
    return _qualified_name(model_class)


def check_model_outputs(contract: ModelContract, outputs: Mapping[str, np.ndarray],
                        *, batch_size: int, num_outputs: int, model_name: str,
                        time_steps: int | None = None) -> None:
    """Raises ValueError when a model's outputs (numpy) do not have the contract's shapes.

    Args:
        contract: the algorithm's model contract.
        outputs: the named outputs of one probe call (`contract.outputs`, plus `critics` for
            the deterministic actor-critic), as numpy.
        batch_size: rows in the probe batch.
        num_outputs: the contract's output size for this action space.
        model_name: for the message.
        time_steps: the time dimension of a recurrent probe (None: stateless).
    """
    lead = (batch_size,) if time_steps is None else (batch_size, time_steps)
    expected = {"dist_inputs": lead + (num_outputs,), "values": lead,
                "q_values": lead + (num_outputs,), "actions": lead + (num_outputs,)}
    for name in contract.outputs:
        got = tuple(np.shape(outputs[name]))
        if got != expected[name]:
            raise ValueError(
                f"model {model_name} breaks the {contract.name!r} model contract: output "
                f"{name!r} has shape {got}, expected {expected[name]} for a batch of "
                f"{batch_size}{'' if time_steps is None else f' x {time_steps} steps'} "
                f"(num_outputs={num_outputs}). The contract is: {contract.call}.")
    for index, critic in enumerate(outputs.get("critics", ())):
        if tuple(np.shape(critic)) != lead:
            raise ValueError(
                f"model {model_name} breaks the {contract.name!r} model contract: critic "
                f"{index} has shape {tuple(np.shape(critic))}, expected {lead}. The contract "
                f"is: {contract.call}.")


def check_output_count(contract: ModelContract, outputs: Any, *, recurrent: bool,
                       model_name: str) -> Sequence[Any]:
    """The model's return value as a sequence of the contract's outputs (plus the state for a
    recurrent model); a clear error when the count is wrong."""
    expected = len(contract.outputs) + (1 if recurrent else 0)
    items = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    if expected == 1 and not isinstance(outputs, (tuple, list)):
        return items
    if len(items) != expected:
        how = ("(" + ", ".join(contract.outputs) + (", state_out" if recurrent else "") + ")")
        raise ValueError(
            f"model {model_name} breaks the {contract.name!r} model contract: it returned "
            f"{len(items)} value(s), expected {expected}: {how}. The contract is: "
            f"{contract.call}" + ("; a recurrent model also returns its state_out list last."
                                  if recurrent else "."))
    return items


def _import_class(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"custom_model path {path!r} does not import ({error}); use "
                         "'package.module:Class' of an importable class.") from error
    return value


def _qualified_name(value: Any) -> str:
    return f"{getattr(value, '__module__', '?')}:{getattr(value, '__qualname__', value)}"
