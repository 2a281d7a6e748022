"""Framework-neutral model architecture: layer names, weight shapes and seeded initialisation.

These are the built-in models: each spec names the model contract it implements
(`flowrl.policy.model_contract`) and its Torch and TF classes (`torch_class`, `tf_class`, as
import paths so this module imports neither framework). A custom model replaces the built-in
class; the spec still tells the policy the contract and its `output_size`.

Both the Torch and the TF model are built from the same `ModelSpec`, so they have the same
architecture, the same weight names and shapes, and (for the same seed) the same initial weights,
which are drawn here with numpy.

Weight names (what `Policy.get_weights()` returns; dense kernels are (in, out), conv kernels HWIO):

- fully connected, separate value branch: ``pi/fc_{i}/kernel|bias``, ``pi/out/…``,
  ``vf/fc_{i}/…``, ``vf/out/…``; with ``vf_share_layers`` the value head ``vf/out`` sits on the
  last ``pi/fc`` layer;
- CNN (3-D observations): ``conv_{i}/kernel|bias`` (VALID padding), a shared dense ``fc_0`` of 512
  units, then the heads ``pi/out`` and ``vf/out``;
- ``pi/log_std`` when a Box action space uses ``free_log_std``.

Initialisation: orthogonal kernels (gain sqrt(2) hidden, 0.01 policy head, 1.0 value head), zero
biases and a zero log-std.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from flowrl.policy.model_contract import (
    ACTOR_CRITIC,
    DETERMINISTIC_ACTOR_CRITIC,
    Q_VALUES,
    SOFT_ACTOR_CRITIC,
    ModelContract,
)

NATURE_CNN_FILTERS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
CNN_DENSE_UNITS = 512


class ConvTrunk:
    """The conv-stack naming shared by the model specs that take images (`conv_filters`)."""

    conv_filters: tuple[tuple[int, int, int], ...] | None

    @property
    def is_cnn(self) -> bool:
        return self.conv_filters is not None

    @property
    def convs(self) -> list[tuple[str, int]]:
        """(name, stride) of each conv layer."""
        return [(f"conv_{i}", f[2]) for i, f in enumerate(self.conv_filters or ())]


@dataclass(frozen=True)
class ModelSpec(ConvTrunk):
    """The architecture of a policy's model, shared by the Torch and TF implementations."""

    obs_shape: tuple[int, ...]
    num_outputs: int
    log_std_size: int
    hiddens: tuple[int, ...]
    activation: str
    vf_share_layers: bool
    use_value: bool
    conv_filters: tuple[tuple[int, int, int], ...] | None
    conv_activation: str

    kind = "actor_critic"
    contract: ClassVar[ModelContract] = ACTOR_CRITIC
    torch_class = "flowrl.policy.torch_models:TorchModel"
    tf_class = "flowrl.policy.tf_models:TFModel"

    @property
    def output_size(self) -> int:
        """The contract's `num_outputs`: the action distribution's input size."""
        return self.num_outputs + self.log_std_size

    @property
    def trunk_dense(self) -> list[str]:
        """Dense layers shared by the policy and value heads."""
        if self.is_cnn:
            return ["fc_0"]
        if self.vf_share_layers:
            return [f"pi/fc_{i}" for i in range(len(self.hiddens))]
        return []

    @property
    def trunk_activation(self) -> str:
        return self.conv_activation if self.is_cnn else self.activation

    @property
    def pi_dense(self) -> list[str]:
        if self.is_cnn or self.vf_share_layers:
            return []
        return [f"pi/fc_{i}" for i in range(len(self.hiddens))]

    @property
    def vf_dense(self) -> list[str]:
        if self.is_cnn or self.vf_share_layers or not self.use_value:
            return []
        return [f"vf/fc_{i}" for i in range(len(self.hiddens))]

    @property
    def log_std_name(self) -> str | None:
        return "pi/log_std" if self.log_std_size else None

    def _conv_output_size(self) -> int:
        height, width, channels = self.obs_shape
        for out_channels, kernel, stride in self.conv_filters or ():
            height, width = (height - kernel) // stride + 1, (width - kernel) // stride + 1
            channels = out_channels
            if height <= 0 or width <= 0:
                raise ValueError(
                    f"image observations of shape {self.obs_shape} are too small for "
                    f"conv_filters={self.conv_filters} (VALID padding); use larger images or "
                    "smaller kernels/strides in model conv_filters"
                )
        return height * width * channels

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every weight name and shape, in the canonical (get_weights) order."""
        shapes: dict[str, tuple[int, ...]] = {}
        if self.is_cnn:
            channels = self.obs_shape[2]
            for (name, _), (out_c, kernel, _) in zip(self.convs, self.conv_filters):
                shapes[f"{name}/kernel"] = (kernel, kernel, channels, out_c)
                shapes[f"{name}/bias"] = (out_c,)
                channels = out_c
            size = self._conv_output_size()
            sizes = [CNN_DENSE_UNITS]
        else:
            size = int(np.prod(self.obs_shape))
            sizes = list(self.hiddens)
        trunk_in = size
        for name, out in zip(self.trunk_dense, sizes):
            shapes[f"{name}/kernel"], shapes[f"{name}/bias"] = (size, out), (out,)
            size = out
        shared_size, head_size = size, size
        for name, out in zip(self.pi_dense, self.hiddens):
            shapes[f"{name}/kernel"], shapes[f"{name}/bias"] = (head_size, out), (out,)
            head_size = out
        shapes["pi/out/kernel"], shapes["pi/out/bias"] = (head_size, self.num_outputs), (
            self.num_outputs,
        )
        if self.log_std_name:
            shapes[self.log_std_name] = (self.log_std_size,)
        if self.use_value:
            value_size = shared_size if self.trunk_dense else trunk_in
            for name, out in zip(self.vf_dense, self.hiddens):
                shapes[f"{name}/kernel"], shapes[f"{name}/bias"] = (value_size, out), (out,)
                value_size = out
            shapes["vf/out/kernel"], shapes["vf/out/bias"] = (value_size, 1), (1,)
        return shapes

    def initial_weights(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Seeded float32 initial weights for every name in `weight_shapes()`."""
        weights = {}
        for name, shape in self.weight_shapes().items():
            if name.endswith("/kernel"):
                gain = {"pi/out/kernel": 0.01, "vf/out/kernel": 1.0}.get(name, math.sqrt(2.0))
                weights[name] = orthogonal(shape, gain, rng)
            else:
                weights[name] = np.zeros(shape, dtype=np.float32)
        return weights


def orthogonal(shape: tuple[int, ...], gain: float, rng: np.random.Generator) -> np.ndarray:
    """An orthogonal matrix (columns over the last axis) scaled by `gain`, as float32."""
    rows, cols = int(np.prod(shape[:-1])), shape[-1]
    flat = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return (gain * q[:rows, :cols]).reshape(shape).astype(np.float32)


def action_dist_spec(action_space: gym.Space, free_log_std: bool) -> tuple[str, int, int]:
    """(distribution name, model output size, free log-std size) for an action space."""
    if isinstance(action_space, gym.spaces.Discrete):
        return "Categorical", int(action_space.n), 0
    if isinstance(action_space, gym.spaces.MultiDiscrete):
        return "MultiCategorical", int(np.sum(action_space.nvec)), 0
    size = int(np.prod(action_space.shape))
    if free_log_std:
        return "DiagGaussian", size, size
    return "DiagGaussian", 2 * size, 0


def build_model_spec(obs_shape: tuple[int, ...], num_outputs: int, log_std_size: int,
                     model_config: Any, use_value: bool) -> ModelSpec:
    """Chooses the CNN for 3-D (H, W, C) observations and the fully connected net otherwise.

    `model_config` is a `flowrl.config.ModelConfig` (read by attribute).
    """
    filters = None
    if len(obs_shape) == 3:
        filters = model_config.conv_filters or NATURE_CNN_FILTERS
    return ModelSpec(
        obs_shape=tuple(obs_shape),
        num_outputs=num_outputs,
        log_std_size=log_std_size,
        hiddens=tuple(model_config.fcnet_hiddens),
        activation=model_config.fcnet_activation,
        vf_share_layers=bool(model_config.vf_share_layers),
        use_value=use_value,
        conv_filters=tuple(tuple(f) for f in filters) if filters else None,
        conv_activation=model_config.conv_activation,
    )


def action_distribution(action_space: gym.Space, free_log_std: bool,
                        distributions: Mapping[str, Any]) -> tuple[str, Any]:
    """(distribution name, class ready for `dist_class(inputs)`) for an action space."""
    dist_name, _, _ = action_dist_spec(action_space, free_log_std)
    dist_class = distributions[dist_name]
    if dist_name == "MultiCategorical":
        nvec = tuple(int(n) for n in np.asarray(action_space.nvec).reshape(-1))
        dist_class = functools.partial(dist_class, nvec=nvec)
    return dist_name, dist_class


def actor_critic_model(config: Any, obs_shape: tuple[int, ...],
                       action_space: gym.Space) -> ModelSpec:
    """The model factory of stochastic actor-critic algorithms: a distribution head and a value
    head (the value head only when `config.use_critic`, default True)."""
    _, num_outputs, log_std_size = action_dist_spec(action_space, config.model.free_log_std)
    return build_model_spec(obs_shape, num_outputs, log_std_size, config.model,
                            use_value=bool(getattr(config, "use_critic", True)))


# ---- value-based and deterministic-actor models ---------------------------------------------
#
# Weight names:
# - Q model: an optional conv trunk (``conv_{i}``, ``fc_0`` as above), then ``q/fc_{i}`` hidden
#   layers (fully connected observations only) and either ``q/out`` (one output per action) or,
#   with ``dueling``, ``q/advantage/out`` (one per action) and ``q/value/out`` (one), combined as
#   ``V + A - mean(A)``.
# - Deterministic actor with twin critics: ``pi/fc_{i}``, ``pi/out`` (tanh, scaled to the action
#   bounds by the policy) and critics ``q1/…``, ``q2/…`` whose input is ``[obs, action]``.


def _dense_shapes(prefix: str, in_size: int, hiddens: tuple[int, ...], out_size: int,
                  out_name: str = "out") -> dict[str, tuple[int, ...]]:
    """Kernel and bias shapes of a stack of dense layers `prefix/fc_i` then `prefix/out_name`."""
    shapes: dict[str, tuple[int, ...]] = {}
    size = in_size
    for index, out in enumerate(hiddens):
        shapes[f"{prefix}/fc_{index}/kernel"], shapes[f"{prefix}/fc_{index}/bias"] = (
            (size, out), (out,))
        size = out
    shapes[f"{prefix}/{out_name}/kernel"], shapes[f"{prefix}/{out_name}/bias"] = (
        (size, out_size), (out_size,))
    return shapes


def _seeded_weights(shapes: Mapping[str, tuple[int, ...]], out_gains: Mapping[str, float],
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Orthogonal kernels (gain sqrt(2) hidden, `out_gains[name]` for outputs), zero biases."""
    weights = {}
    for name, shape in shapes.items():
        if name.endswith("/kernel"):
            weights[name] = orthogonal(shape, out_gains.get(name, math.sqrt(2.0)), rng)
        else:
            weights[name] = np.zeros(shape, dtype=np.float32)
    return weights


@dataclass(frozen=True)
class QModelSpec(ConvTrunk):
    """A Q-network: one value per discrete action, optionally with dueling heads."""

    obs_shape: tuple[int, ...]
    num_actions: int
    hiddens: tuple[int, ...]
    activation: str
    dueling: bool
    conv_filters: tuple[tuple[int, int, int], ...] | None
    conv_activation: str

    kind = "q"
    contract: ClassVar[ModelContract] = Q_VALUES
    torch_class = "flowrl.policy.torch_models:TorchQModel"
    tf_class = "flowrl.policy.tf_models:TFQModel"

    @property
    def output_size(self) -> int:
        """The contract's `num_outputs`: one Q-value per action."""
        return self.num_actions

    @property
    def q_hiddens(self) -> tuple[int, ...]:
        """Hidden dense sizes of the Q head (the CNN's dense layer replaces them for images)."""
        return () if self.is_cnn else self.hiddens

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        if self.is_cnn:
            trunk = ModelSpec(self.obs_shape, 1, 0, (), self.activation, False, False,
                              self.conv_filters, self.conv_activation)
            shapes.update({n: s for n, s in trunk.weight_shapes().items()
                           if n.startswith(("conv_", "fc_0"))})
            size = CNN_DENSE_UNITS
        else:
            size = int(np.prod(self.obs_shape))
        if not self.dueling:
            shapes.update(_dense_shapes("q", size, self.q_hiddens, self.num_actions))
            return shapes
        shapes.update(_dense_shapes("q", size, self.q_hiddens, self.num_actions,
                                    out_name="advantage/out"))
        last = self.q_hiddens[-1] if self.q_hiddens else size
        shapes["q/value/out/kernel"], shapes["q/value/out/bias"] = (last, 1), (1,)
        return shapes

    def initial_weights(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        gains = {"q/out/kernel": 0.01, "q/advantage/out/kernel": 0.01,
                 "q/value/out/kernel": 1.0}
        return _seeded_weights(self.weight_shapes(), gains, rng)


@dataclass(frozen=True)
class DeterministicActorCriticSpec:
    """A deterministic actor `pi(obs) in [-1, 1]^A` and twin critics `q1, q2(obs, action)`."""

    obs_size: int
    action_size: int
    hiddens: tuple[int, ...]
    activation: str
    twin_q: bool = True

    kind = "deterministic_actor_critic"
    contract: ClassVar[ModelContract] = DETERMINISTIC_ACTOR_CRITIC
    torch_class = "flowrl.policy.torch_models:TorchDeterministicActorCritic"
    tf_class = "flowrl.policy.tf_models:TFDeterministicActorCritic"

    @property
    def output_size(self) -> int:
        """The contract's `num_outputs`: the action size."""
        return self.action_size

    @property
    def critic_names(self) -> tuple[str, ...]:
        return ("q1", "q2") if self.twin_q else ("q1",)

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = _dense_shapes("pi", self.obs_size, self.hiddens, self.action_size)
        for critic in self.critic_names:
            shapes.update(_dense_shapes(critic, self.obs_size + self.action_size,
                                        self.hiddens, 1))
        return shapes

    def initial_weights(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        gains = {"pi/out/kernel": 0.01, **{f"{c}/out/kernel": 1.0 for c in self.critic_names}}
        return _seeded_weights(self.weight_shapes(), gains, rng)


@dataclass(frozen=True)
class SoftActorCriticSpec:
    """A stochastic actor, twin critics and a learned temperature (SAC).

    Box actions: `pi(obs)` gives the mean and log-std of a Gaussian squashed by tanh into
    [-1, 1]^A, and critics `q1, q2(obs, action)` one value each. Discrete actions: `pi(obs)`
    gives logits and each critic `q(obs)` one value per action. `log_alpha` is the log of the
    entropy temperature, trained by its own optimizer group.
    """

    obs_size: int
    action_size: int
    """A for a Box of A dimensions; the number of actions for Discrete."""
    discrete: bool
    hiddens: tuple[int, ...]
    activation: str
    twin_q: bool = True
    initial_alpha: float = 1.0

    kind = "soft_actor_critic"
    contract: ClassVar[ModelContract] = SOFT_ACTOR_CRITIC
    torch_class = "flowrl.policy.torch_models:TorchSoftActorCritic"
    tf_class = "flowrl.policy.tf_models:TFSoftActorCritic"

    @property
    def output_size(self) -> int:
        """The contract's `num_outputs`: 2 * A (mean, log-std) for a Box, |A| logits else."""
        return self.action_size if self.discrete else 2 * self.action_size

    @property
    def critic_names(self) -> tuple[str, ...]:
        return ("q1", "q2") if self.twin_q else ("q1",)

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = _dense_shapes("pi", self.obs_size, self.hiddens, self.output_size)
        for critic in self.critic_names:
            if self.discrete:
                shapes.update(_dense_shapes(critic, self.obs_size, self.hiddens,
                                            self.action_size))
            else:
                shapes.update(_dense_shapes(critic, self.obs_size + self.action_size,
                                            self.hiddens, 1))
        shapes["log_alpha"] = (1,)
        return shapes

    def initial_weights(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        gains = {"pi/out/kernel": 0.01, **{f"{c}/out/kernel": 1.0 for c in self.critic_names}}
        weights = _seeded_weights(self.weight_shapes(), gains, rng)
        weights["log_alpha"] = np.full((1,), math.log(self.initial_alpha), np.float32)
        return weights


def build_q_model_spec(obs_shape: tuple[int, ...], action_space: gym.Space, model_config: Any,
                       *, dueling: bool) -> QModelSpec:
    """The Q-network for a Discrete action space (a CNN trunk for 3-D image observations)."""
    if not isinstance(action_space, gym.spaces.Discrete):
        raise ValueError(
            f"A Q-network needs a Discrete action space (one value per action); got "
            f"action_space={action_space}. Use an actor-critic algorithm (PPO, A2C, IMPALA) for "
            f"continuous or multi-discrete actions."
        )
    filters = None
    if len(obs_shape) == 3:
        filters = model_config.conv_filters or NATURE_CNN_FILTERS
    return QModelSpec(
        obs_shape=tuple(obs_shape), num_actions=int(action_space.n),
        hiddens=tuple(model_config.fcnet_hiddens), activation=model_config.fcnet_activation,
        dueling=bool(dueling),
        conv_filters=tuple(tuple(f) for f in filters) if filters else None,
        conv_activation=model_config.conv_activation,
    )


def build_deterministic_actor_critic_spec(obs_shape: tuple[int, ...], action_space: gym.Space,
                                          model_config: Any, *, twin_q: bool = True
                                          ) -> DeterministicActorCriticSpec:
    """A deterministic actor and (twin) critics for a Box action space and flat observations."""
    if not isinstance(action_space, gym.spaces.Box):
        raise ValueError(
            f"A deterministic actor needs a continuous (Box) action space; got "
            f"action_space={action_space}. For Discrete actions use SAC (discrete SAC) or DQN."
        )
    return DeterministicActorCriticSpec(
        obs_size=int(np.prod(obs_shape)), action_size=int(np.prod(action_space.shape)),
        hiddens=tuple(model_config.fcnet_hiddens), activation=model_config.fcnet_activation,
        twin_q=twin_q,
    )


def build_soft_actor_critic_spec(obs_shape: tuple[int, ...], action_space: gym.Space,
                                 model_config: Any, *, twin_q: bool = True,
                                 initial_alpha: float = 1.0) -> SoftActorCriticSpec:
    """SAC's actor, critics and temperature for a Box or Discrete action space and flat
    observations."""
    if isinstance(action_space, gym.spaces.Discrete):
        discrete, size = True, int(action_space.n)
    elif isinstance(action_space, gym.spaces.Box):
        discrete, size = False, int(np.prod(action_space.shape))
    else:
        raise ValueError(
            f"SAC needs a Box (continuous) or Discrete action space; got "
            f"action_space={action_space}. Use PPO or IMPALA for other action spaces.")
    if len(obs_shape) != 1:
        raise ValueError(
            f"SAC's built-in networks take flat observations; got observation shape "
            f"{tuple(obs_shape)}. Flatten the observations (gymnasium's FlattenObservation) or "
            "bring your own model in config.model.custom_model.")
    return SoftActorCriticSpec(
        obs_size=int(np.prod(obs_shape)), action_size=size, discrete=discrete,
        hiddens=tuple(model_config.fcnet_hiddens), activation=model_config.fcnet_activation,
        twin_q=twin_q, initial_alpha=float(initial_alpha))
