"""Framework-neutral model architecture: layer names, weight shapes and seeded initialisation.

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
from typing import Any

import gymnasium as gym
import numpy as np

NATURE_CNN_FILTERS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
CNN_DENSE_UNITS = 512


@dataclass(frozen=True)
class ModelSpec:
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

    @property
    def is_cnn(self) -> bool:
        return self.conv_filters is not None

    @property
    def convs(self) -> list[tuple[str, int]]:
        """(name, stride) of each conv layer."""
        return [(f"conv_{i}", f[2]) for i, f in enumerate(self.conv_filters or ())]

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
                     model_config: dict, use_value: bool) -> ModelSpec:
    """Chooses the CNN for 3-D (H, W, C) observations and the fully connected net otherwise."""
    filters = None
    if len(obs_shape) == 3:
        filters = model_config["conv_filters"] or NATURE_CNN_FILTERS
    return ModelSpec(
        obs_shape=tuple(obs_shape),
        num_outputs=num_outputs,
        log_std_size=log_std_size,
        hiddens=tuple(model_config["fcnet_hiddens"]),
        activation=model_config["fcnet_activation"],
        vf_share_layers=bool(model_config["vf_share_layers"]),
        use_value=use_value,
        conv_filters=tuple(tuple(f) for f in filters) if filters else None,
        conv_activation=model_config["conv_activation"],
    )


def plan_policy_model(
    action_space: gym.Space,
    obs_shape: tuple[int, ...],
    config: Mapping[str, Any],
    distributions: Mapping[str, Any],
) -> tuple[str, Any, ModelSpec]:
    """Chooses the action distribution and the model spec a policy needs, for any framework.

    Args:
        action_space: the env's action space.
        obs_shape: shape of one preprocessed observation row.
        config: the policy config (reads `model` and `use_critic`).
        distributions: the framework's distribution classes by name.

    Returns:
        (distribution name, distribution class ready for `dist_class(inputs)`, model spec).
    """
    dist_name, num_outputs, log_std_size = action_dist_spec(
        action_space, config["model"]["free_log_std"]
    )
    dist_class = distributions[dist_name]
    if dist_name == "MultiCategorical":
        nvec = tuple(int(n) for n in np.asarray(action_space.nvec).reshape(-1))
        dist_class = functools.partial(dist_class, nvec=nvec)
    spec = build_model_spec(obs_shape, num_outputs, log_std_size, config["model"],
                            use_value=bool(config["use_critic"]))
    return dist_name, dist_class, spec
