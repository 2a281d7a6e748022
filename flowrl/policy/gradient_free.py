"""Policies for gradient-free algorithms (ES, ARS): one flat parameter vector, in numpy.

Evolution strategies never backpropagate: they perturb a flat parameter vector θ, run
episodes, and move θ along the perturbations that scored well. `GradientFreePolicy` is the
policy they act with and update:

```python
policy = ES_POLICY.build(obs_space, action_space, config)   # a GradientFreePolicy
theta = policy.get_flat_weights()                             # float32 vector, num_params long
actions = policy.compute_actions_with(theta + sigma * eps, obs_rows)   # a perturbed copy
policy.apply_gradients([loss_gradient])                       # one Adam / SGD step on θ
```

Two backends compute actions from θ:

- **numpy** (`config.numpy_policy=True`, the default): a linear map or a small MLP evaluated
  with numpy matrix products. Rollout workers never import torch or TensorFlow.
- **framework** (`numpy_policy=False`): any built-in model of `config.framework` (Torch or TF),
  reached through its flat weights: θ is the concatenation of the model's policy weights in
  `get_weights()` order, loaded into the model before acting.

Discrete actions take the argmax of the outputs; Box actions are the outputs clipped to the
space's bounds, with optional Gaussian action noise while perturbed episodes are collected.
Observations are normalized by a mean/std snapshot (`RunningStat`) that the learner merges
from every worker's observations and sends back with the weights.

This module imports neither Ray nor a framework (the framework backend imports it on use).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from flowrl.policy.filters import FILTER_CLIP, RunningStat
from flowrl.policy.models import build_model_spec
from flowrl.policy.spec import PolicySpec

OptimizerName = Literal["adam", "sgd"]




# ---- optimizers on a flat vector --------------------------------------------------------------


class FlatOptimizer:
    """Adam (Kingma & Ba, 2015) or plain SGD with optional momentum on a flat parameter vector.

    `step(theta, gradient)` returns the new vector for a gradient of a loss to *minimize*.

    Examples:
        >>> sgd = FlatOptimizer("sgd", lr=0.5)
        >>> sgd.step(np.array([1.0, 2.0]), np.array([2.0, -2.0])).tolist()
        [0.0, 3.0]
    """

    def __init__(self, name: OptimizerName, lr: float, *, momentum: float = 0.0,
                 beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8) -> None:
        if name not in ("adam", "sgd"):
            raise ValueError(f"unknown optimizer {name=}; valid: ['adam', 'sgd']")
        self.name, self.lr, self.momentum = name, lr, momentum
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.t = 0
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None

    def step(self, theta: np.ndarray, gradient: np.ndarray) -> np.ndarray:
        gradient = np.asarray(gradient, dtype=np.float64)
        if self.m is None:
            self.m = np.zeros_like(gradient)
            self.v = np.zeros_like(gradient)
        self.t += 1
        if self.name == "sgd":
            self.m = self.momentum * self.m + (1.0 - self.momentum) * gradient
            update = -self.lr * self.m
        else:
            assert self.v is not None
            self.m = self.beta1 * self.m + (1 - self.beta1) * gradient
            self.v = self.beta2 * self.v + (1 - self.beta2) * gradient**2
            corrected = self.lr * math.sqrt(1 - self.beta2**self.t) / (1 - self.beta1**self.t)
            update = -corrected * self.m / (np.sqrt(self.v) + self.epsilon)
        return (theta + update).astype(np.float32)

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"t": int(self.t)}
        if self.m is not None:
            state.update(m=self.m.copy(), v=np.asarray(self.v).copy())
        return state

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.t = int(state.get("t", 0))
        self.m = None if "m" not in state else np.asarray(state["m"], dtype=np.float64).copy()
        self.v = None if "v" not in state else np.asarray(state["v"], dtype=np.float64).copy()


# ---- the numpy model ------------------------------------------------------------------------


_ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "swish": lambda x: x / (1.0 + np.exp(-x)),
    "linear": lambda x: x,
}


def mlp_shapes(in_size: int, hiddens: Sequence[int], out_size: int) -> list[tuple[str, tuple]]:
    """Names and shapes of a dense stack `pi/fc_i` then `pi/out` (kernels [in, out])."""
    shapes: list[tuple[str, tuple]] = []
    size = in_size
    for index, hidden in enumerate(hiddens):
        shapes += [(f"pi/fc_{index}/kernel", (size, hidden)), (f"pi/fc_{index}/bias", (hidden,))]
        size = hidden
    return shapes + [("pi/out/kernel", (size, out_size)), ("pi/out/bias", (out_size,))]


def _unflatten(theta: np.ndarray, shapes: list[tuple[str, tuple]]) -> dict[str, np.ndarray]:
    arrays, start = {}, 0
    for name, shape in shapes:
        size = int(np.prod(shape))
        arrays[name] = theta[start:start + size].reshape(shape)
        start += size
    return arrays


def _initial_mlp(rng: np.random.Generator, shapes: list[tuple[str, tuple]]) -> np.ndarray:
    """Column-normalized Gaussian kernels (std 1 hidden, 0.01 output), zero biases; a linear
    policy (no hidden layer) starts at zero, as in Mania et al. 2018."""
    parts = []
    linear = len(shapes) == 2
    for name, shape in shapes:
        if name.endswith("bias") or linear:
            parts.append(np.zeros(int(np.prod(shape))))
            continue
        kernel = rng.standard_normal(shape)
        scale = 0.01 if name.startswith("pi/out") else 1.0
        kernel *= scale / np.sqrt(np.square(kernel).sum(axis=0, keepdims=True))
        parts.append(kernel.ravel())
    return np.concatenate(parts).astype(np.float32)


# ---- the policy ------------------------------------------------------------------------------


class GradientFreePolicy:
    """Acts with a flat parameter vector θ and updates it with a flat optimizer (see module).

    Args:
        observation_space: a Box (flattened to one row per observation).
        action_space: Discrete (argmax of the outputs) or Box (outputs clipped to bounds).
        config: the algorithm's config: `model`, `framework`, `numpy_policy`, `lr`,
            `observation_filter`, `action_noise_std`, `seed`.
        spec: the `GradientFreePolicySpec` that built it (its optimizer name).
        seed: the initialization seed (default `config.seed`).
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, config: Any, *,
                 spec: GradientFreePolicySpec, worker_index: int = 0, num_workers: int = 0,
                 seed: int | None = None, num_threads: int | None = None) -> None:
        if not isinstance(observation_space, gym.spaces.Box):
            raise ValueError(
                f"{spec.name.upper()} needs a Box observation space (flattened and normalized); "
                f"got {observation_space=}. Wrap the env to return a Box (e.g. "
                "gymnasium.wrappers.FlattenObservation).")
        if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise ValueError(f"{spec.name.upper()} supports Discrete and Box actions; got "
                             f"{action_space=}.")
        self.observation_space, self.action_space = observation_space, action_space
        self.config, self.spec, self.worker_index = config, spec, worker_index
        self.framework = "numpy" if config.numpy_policy else config.framework
        self.obs_size = int(np.prod(observation_space.shape))
        discrete = isinstance(action_space, gym.spaces.Discrete)
        self.out_size = int(action_space.n) if discrete else int(np.prod(action_space.shape))
        self.weights_version = 0
        self.global_timestep = 0
        seed = config.seed if seed is None else seed
        self._model: Any = None
        if self.framework == "numpy":
            self._shapes = mlp_shapes(self.obs_size, config.model.fcnet_hiddens, self.out_size)
            self.flat_weights = _initial_mlp(np.random.default_rng(seed), self._shapes)
        else:
            self._model = _build_framework_model(observation_space, action_space, config, seed,
                                                 num_threads)
            weights = self._model.get_weights()
            self._shapes = [(name, weights[name].shape) for name in weights]
            self.flat_weights = np.concatenate(
                [weights[name].ravel() for name, _ in self._shapes]).astype(np.float32)
        self._loaded_theta: np.ndarray | None = None
        self.observation_stats = RunningStat((self.obs_size,))
        self.filter_mean = np.zeros(self.obs_size, dtype=np.float32)
        self.filter_std = np.ones(self.obs_size, dtype=np.float32)
        self.optimizer = FlatOptimizer(spec.optimizer, config.lr, momentum=spec.momentum)

    # --- acting -----------------------------------------------------------------------------

    @property
    def num_params(self) -> int:
        """Length of θ."""
        return int(self.flat_weights.size)

    def preprocess(self, raw_obs: Any) -> np.ndarray:
        """Observation rows as float32 [batch, obs_size] (flattened, not normalized)."""
        return np.asarray(raw_obs, dtype=np.float32).reshape(-1, self.obs_size)

    def normalize(self, obs_rows: np.ndarray) -> np.ndarray:
        """Rows normalized by the current filter snapshot (identity with "NoFilter")."""
        if self.config.observation_filter == "NoFilter":
            return obs_rows
        return np.clip((obs_rows - self.filter_mean) / self.filter_std, -FILTER_CLIP,
                       FILTER_CLIP)

    def compute_actions_with(self, theta: np.ndarray, raw_obs: Any,
                             action_noise: np.random.Generator | None = None) -> np.ndarray:
        """Actions of the policy with parameters `theta` (not this policy's own θ), for a
        batch of raw observations; `action_noise` adds `action_noise_std` noise (Box only)."""
        outputs = self._outputs(theta, self.normalize(self.preprocess(raw_obs)))
        if isinstance(self.action_space, gym.spaces.Discrete):
            return outputs.argmax(axis=1)
        actions = outputs.reshape((-1, *self.action_space.shape))
        if action_noise is not None and self.config.action_noise_std > 0:
            actions = actions + action_noise.normal(0.0, self.config.action_noise_std,
                                                    actions.shape)
        return np.clip(actions, self.action_space.low, self.action_space.high).astype(np.float32)

    def _outputs(self, theta: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if self.framework != "numpy":
            return self._framework_outputs(theta, rows)
        layers = _unflatten(theta, self._shapes)
        activation = _ACTIVATIONS[self.config.model.fcnet_activation]
        hidden = rows
        for index in range(len(self.config.model.fcnet_hiddens)):
            hidden = activation(hidden @ layers[f"pi/fc_{index}/kernel"]
                                + layers[f"pi/fc_{index}/bias"])
        return hidden @ layers["pi/out/kernel"] + layers["pi/out/bias"]

    def _framework_outputs(self, theta: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Loads θ into the Torch/TF model (when it changed) and runs it deterministically."""
        # Callers never change a θ array in place, so identity says whether it is loaded.
        if theta is not self._loaded_theta:
            self._model.set_weights(_unflatten(theta, self._shapes))
            self._loaded_theta = theta
        extras = self._model.compute_actions(rows, explore=False)[-1]
        return np.asarray(extras["action_dist_inputs"])[:, :self.out_size]

    is_recurrent = False
    uses_prev_actions = uses_prev_rewards = False

    def initial_state(self) -> list[np.ndarray]:
        """No recurrent state: `[]`."""
        return []

    def compute_actions(self, obs_batch: Any, state: list[np.ndarray] | None = None, *,
                        explore: bool = False, **_: Any
                        ) -> tuple[np.ndarray, list[np.ndarray], dict[str, np.ndarray]]:
        """`(actions, [], {})`: the actions of θ itself (no perturbation, no noise), as
        `Policy.compute_actions` returns them."""
        return self.compute_actions_with(self.flat_weights, obs_batch), [], {}

    def compute_single_action(self, obs: Any, state: list[np.ndarray] | None = None, *,
                              explore: bool = False, prev_action: Any = None,
                              prev_reward: float | None = None
                              ) -> tuple[Any, list[np.ndarray], dict]:
        """`(action, [], {})` for one raw observation (the model is stateless and reads no
        previous action or reward)."""
        actions, _, _ = self.compute_actions(np.asarray(obs)[None], explore=explore)
        return actions[0], [], {}

    # --- weights, state ---------------------------------------------------------------------

    def get_flat_weights(self) -> np.ndarray:
        return self.flat_weights.copy()

    def set_flat_weights(self, theta: np.ndarray) -> None:
        theta = np.asarray(theta, dtype=np.float32)
        if theta.shape != self.flat_weights.shape:
            raise ValueError(f"flat weights of shape {theta.shape} do not fit this policy's "
                             f"{self.flat_weights.shape}.")
        self.flat_weights = theta.copy()

    def get_weights(self) -> dict[str, np.ndarray]:
        """θ per layer (framework-neutral names), the filter snapshot and θ's version."""
        weights = {name: value.copy() for name, value in
                   _unflatten(self.flat_weights, self._shapes).items()}
        weights["observation_filter/mean"] = self.filter_mean.copy()
        weights["observation_filter/std"] = self.filter_std.copy()
        weights["weights_version"] = np.array(self.weights_version, dtype=np.int64)
        return weights

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        names = [name for name, _ in self._shapes]
        missing = [name for name in names if name not in weights]
        if missing:
            raise ValueError(f"weights lack {missing}; this policy has {names}.")
        self.set_flat_weights(np.concatenate([np.asarray(weights[n]).ravel() for n in names]))
        if "observation_filter/mean" in weights:
            self.filter_mean = np.asarray(weights["observation_filter/mean"], np.float32).copy()
            self.filter_std = np.asarray(weights["observation_filter/std"], np.float32).copy()
        if "weights_version" in weights:
            self.weights_version = int(weights["weights_version"])

    def apply_gradients(self, gradients: list[np.ndarray]) -> None:
        """One optimizer step on θ with the gradient of a loss to minimize; θ's version + 1."""
        (gradient,) = gradients
        self.flat_weights = self.optimizer.step(self.flat_weights, gradient)
        self.weights_version += 1

    def update_filter_snapshot(self) -> None:
        """Copies the merged observation statistics into the snapshot used for acting."""
        self.filter_mean = self.observation_stats.mean.astype(np.float32)
        self.filter_std = self.observation_stats.std.astype(np.float32)

    def on_global_var_update(self, global_vars: Mapping[str, Any]) -> None:
        self.global_timestep = int(global_vars.get("timestep", self.global_timestep))

    def get_state(self) -> dict[str, Any]:
        """Weights (with filter snapshot and version), optimizer state, observation stats."""
        return {"weights": self.get_weights(), "optimizer": self.optimizer.get_state(),
                "observation_stats": self.observation_stats.get_state(),
                "global_timestep": int(self.global_timestep)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.set_weights(state["weights"])
        self.optimizer.set_state(state["optimizer"])
        self.observation_stats = RunningStat.from_state(state["observation_stats"])
        self.global_timestep = int(state.get("global_timestep", 0))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_loaded_theta"] = None
        return state


def _policy_model(config: Any, obs_shape: tuple[int, ...], action_space: gym.Space) -> Any:
    """The built-in model without a value head: ES/ARS perturb only what picks actions."""
    from flowrl.policy.models import action_dist_spec

    _, num_outputs, log_std_size = action_dist_spec(action_space, config.model.free_log_std)
    return build_model_spec(obs_shape, num_outputs, log_std_size, config.model, use_value=False)


def _no_loss(policy: Any, batch: Any) -> Any:
    raise RuntimeError("gradient-free policies are never trained with a loss")


_FRAMEWORK_MODEL_SPEC = PolicySpec(name="gradient_free_model", torch_loss=_no_loss,
                                   tf_loss=_no_loss, model=_policy_model, postprocess=None)


def _build_framework_model(observation_space: gym.Space, action_space: gym.Space, config: Any,
                           seed: int | None, num_threads: int | None) -> Any:
    flat_space = gym.spaces.Box(-np.inf, np.inf, (int(np.prod(observation_space.shape)),),
                                np.float32)
    return _FRAMEWORK_MODEL_SPEC.build(flat_space, action_space, config, seed=seed,
                                       num_threads=num_threads)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class GradientFreePolicySpec(PolicySpec):
    """A `PolicySpec` whose `build` returns a `GradientFreePolicy` (no loss, a flat optimizer).

    Examples:
        >>> GradientFreePolicySpec(name="ars", optimizer="sgd")
        PolicySpec('ars')
    """

    optimizer: OptimizerName = "adam"
    """The flat optimizer `apply_gradients` steps with: "adam" (ES) or "sgd" (ARS)."""
    momentum: float = 0.0
    """SGD momentum (ignored by Adam)."""
    postprocess: Any = None

    def build(self, observation_space: gym.Space, action_space: gym.Space, config: Any, *,
              worker_index: int = 0, num_workers: int = 0, seed: int | None = None,
              num_threads: int | None = None) -> GradientFreePolicy:
        config = self.resolve_config(config)
        return GradientFreePolicy(observation_space, action_space, config, spec=self,
                                  worker_index=worker_index, num_workers=num_workers, seed=seed,
                                  num_threads=num_threads)

    def loss_for(self, framework: str) -> Any:
        return _no_loss
