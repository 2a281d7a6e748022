"""The built-in Torch models (`torch.nn.Module`s under neutral weight names) and the weight view
the policy uses for any model, built-in or custom.

The built-ins implement the model contracts of `flowrl.policy.model_contract`: `TorchModel`
(actor-critic), `TorchQModel` (Q-values) and `TorchDeterministicActorCritic`. A user's model is
any `nn.Module` meeting its algorithm's contract; `TorchModuleWeights` lists its
`named_parameters()` as its weights.

Dense kernels are stored (in, out) exactly as the neutral weights, so `get_weights` needs no
transposes; conv kernels are stored OIHW (Torch's layout) and converted from/to HWIO.
Images are channels-last (H, W, C) in the batch and permuted to NCHW for the convolutions; the
conv output is permuted back to NHWC before flattening so that the dense layer after it matches TF.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from flowrl.policy.models import ModelSpec

_ACTIVATIONS = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "swish": F.silu,
    "linear": lambda x: x,
}


class TorchParameters(torch.nn.Module):
    """An `nn.Module` whose parameters carry the framework-neutral layout's names.

    The base of the built-in Torch models, and of a custom model whose weights should load
    into a TF model (and back): weight storage under neutral names, neutral get/set, and the
    dense and conv building blocks forward passes are written with. Subclasses set
    `__call__ = forward` to skip `nn.Module`'s hook dispatch on the acting path.

    Args:
        spec: the architecture (any spec with `weight_shapes()`).
        weights: initial neutral weights (numpy), e.g. `spec.initial_weights(rng)`.
        device: where the parameters live (None: the CPU). Weights and gradients in and out
            are numpy on the CPU whatever the device.
    """

    def __init__(self, spec: Any, weights: dict[str, np.ndarray],
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.names = list(spec.weight_shapes())
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.params: dict[str, torch.Tensor] = {}
        for name, shape in spec.weight_shapes().items():
            parameter = torch.nn.Parameter(torch.zeros(_torch_shape(name, shape),
                                                       device=self.device))
            self.register_parameter(name, parameter)
            self.params[name] = parameter
        self.set_weights(weights)

    def parameters(self, recurse: bool = True) -> list[torch.Tensor]:  # type: ignore[override]
        """The trainable tensors, in neutral-name order."""
        return [self.params[name] for name in self.names]

    def dense(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """`x @ kernel + bias` of the dense layer `name`."""
        return torch.addmm(self.params[f"{name}/bias"], x, self.params[f"{name}/kernel"])

    def mlp(self, x: torch.Tensor, prefix: str, num_hidden: int, activation: str,
            out_name: str | None = "out") -> torch.Tensor:
        """`prefix/fc_0 .. fc_{n-1}` with `activation`, then `prefix/out_name` (if given)."""
        act = _ACTIVATIONS[activation]
        for index in range(num_hidden):
            x = act(self.dense(x, f"{prefix}/fc_{index}"))
        return self.dense(x, f"{prefix}/{out_name}") if out_name else x

    def conv_trunk(self, obs: torch.Tensor) -> torch.Tensor:
        """Scales uint8 images, runs the conv layers (if any) and flattens, NHWC order."""
        x = obs
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        convs = getattr(self.spec, "convs", [])
        if convs:
            act = _ACTIVATIONS[self.spec.conv_activation]
            x = x.permute(0, 3, 1, 2)
            for name, stride in convs:
                x = act(F.conv2d(x, self.params[f"{name}/kernel"], self.params[f"{name}/bias"],
                                 stride=stride))
            x = x.permute(0, 2, 3, 1)
        return x.reshape(x.shape[0], -1)

    def get_weights(self) -> dict[str, np.ndarray]:
        """Neutral numpy weights (copies)."""
        return {name: _to_neutral(name, self.params[name]) for name in self.names}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Loads neutral numpy weights in place (names and shapes already validated)."""
        with torch.no_grad():
            for name in self.names:
                # Read-only arrays (e.g. from Ray's object store) are copied first: torch
                # refuses to alias non-writable memory.
                value = np.require(_from_neutral(name, weights[name]), requirements="W")
                self.params[name].copy_(torch.from_numpy(value))

    def to_neutral(self, name: str, tensor: torch.Tensor) -> np.ndarray:
        """Converts a tensor shaped like parameter `name` (e.g. its gradient) to neutral layout."""
        return _to_neutral(name, tensor)

    def from_neutral(self, name: str, array: np.ndarray) -> torch.Tensor:
        """Converts a neutral array for parameter `name` into a Torch-layout tensor on the
        model's device."""
        tensor = torch.from_numpy(_from_neutral(name, array).copy())
        return tensor if self.device.type == "cpu" else tensor.to(self.device)


class TorchModel(TorchParameters):
    """Actor-critic: `model(obs) -> (dist_inputs, values)` for float or uint8 observation rows."""

    def __init__(self, spec: ModelSpec, weights: dict[str, np.ndarray],
                 device: torch.device | str | None = None) -> None:
        super().__init__(spec, weights, device)
        self._act = _ACTIVATIONS[spec.activation]
        self._trunk_act = _ACTIVATIONS[spec.trunk_activation]
        self._pi = [(self.params[f"{n}/kernel"], self.params[f"{n}/bias"]) for n in spec.pi_dense]
        self._vf = [(self.params[f"{n}/kernel"], self.params[f"{n}/bias"]) for n in spec.vf_dense]
        self._trunk = [
            (self.params[f"{n}/kernel"], self.params[f"{n}/bias"]) for n in spec.trunk_dense
        ]
        self._pi_out = (self.params["pi/out/kernel"], self.params["pi/out/bias"])
        self._vf_out = (
            (self.params["vf/out/kernel"], self.params["vf/out/bias"]) if spec.use_value else None
        )
        self._log_std = self.params.get(spec.log_std_name) if spec.log_std_name else None

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv_trunk(obs)
        for kernel, bias in self._trunk:
            x = self._trunk_act(torch.addmm(bias, x, kernel))
        hidden = x
        for kernel, bias in self._pi:
            hidden = self._act(torch.addmm(bias, hidden, kernel))
        dist_inputs = torch.addmm(self._pi_out[1], hidden, self._pi_out[0])
        if self._log_std is not None:
            dist_inputs = torch.cat([dist_inputs, self._log_std.expand_as(dist_inputs)], dim=-1)
        if self._vf_out is None:
            return dist_inputs, torch.zeros(x.shape[0], device=x.device)
        value = x
        for kernel, bias in self._vf:
            value = self._act(torch.addmm(bias, value, kernel))
        return dist_inputs, torch.addmm(self._vf_out[1], value, self._vf_out[0]).squeeze(-1)

    __call__ = forward


class TorchQModel(TorchParameters):
    """Q-network: `model(obs) -> q_values` of shape (B, num_actions); dueling if the spec says."""

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        x = self.conv_trunk(obs)
        if spec.is_cnn:
            x = _ACTIVATIONS[spec.conv_activation](self.dense(x, "fc_0"))
        if not spec.dueling:
            return self.mlp(x, "q", len(spec.q_hiddens), spec.activation)
        hidden = self.mlp(x, "q", len(spec.q_hiddens), spec.activation, out_name=None)
        advantages = self.dense(hidden, "q/advantage/out")
        value = self.dense(hidden, "q/value/out")
        return value + advantages - advantages.mean(dim=1, keepdim=True)

    __call__ = forward


class TorchDeterministicActorCritic(TorchParameters):
    """`model.actor(obs)` in [-1, 1]^A and `model.critics(obs, actions)` -> one Q per critic."""

    def actor(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.conv_trunk(obs)
        return torch.tanh(self.mlp(x, "pi", len(self.spec.hiddens), self.spec.activation))

    def critics(self, obs: torch.Tensor, actions: torch.Tensor) -> list[torch.Tensor]:
        x = torch.cat([self.conv_trunk(obs), actions.reshape(actions.shape[0], -1)], dim=-1)
        return [self.mlp(x, name, len(self.spec.hiddens), self.spec.activation).squeeze(-1)
                for name in self.spec.critic_names]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs)

    __call__ = forward


class TorchSoftActorCritic(TorchParameters):
    """SAC's model: `model.actor(obs)` -> dist inputs, `model.critics(obs, actions)` -> one Q
    per critic ([B]; Discrete: `model.critics(obs)` -> [B, n] each), weight `log_alpha`."""

    def actor(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.conv_trunk(obs)
        return self.mlp(x, "pi", len(self.spec.hiddens), self.spec.activation)

    def critics(self, obs: torch.Tensor, actions: torch.Tensor | None = None
                ) -> list[torch.Tensor]:
        x = self.conv_trunk(obs)
        if self.spec.discrete:
            return [self.mlp(x, name, len(self.spec.hiddens), self.spec.activation)
                    for name in self.spec.critic_names]
        x = torch.cat([x, actions.reshape(actions.shape[0], -1)], dim=-1)
        return [self.mlp(x, name, len(self.spec.hiddens), self.spec.activation).squeeze(-1)
                for name in self.spec.critic_names]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs)

    __call__ = forward


class TorchModuleWeights:
    """The policy's view of a custom `nn.Module`'s weights: its `named_parameters()`, by name.

    The same methods as `TorchParameters` (`names`, `params`, `parameters()`, `get_weights`,
    `set_weights`, `to_neutral`, `from_neutral`), with the module's own names and layouts
    (`fc.weight` is (out, in) as Torch stores it). Buffers (e.g. batch-norm statistics) are not
    weights here.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.params: dict[str, torch.Tensor] = dict(module.named_parameters())
        self.names = list(self.params)
        first = next(iter(self.params.values()), None)
        self.device = first.device if first is not None else torch.device("cpu")

    def parameters(self) -> list[torch.Tensor]:
        """The trainable tensors, in `names` order."""
        return [self.params[name] for name in self.names]

    def get_weights(self) -> dict[str, np.ndarray]:
        """The parameters as float32 numpy copies."""
        return {name: self.to_neutral(name, self.params[name]) for name in self.names}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Loads numpy arrays in place (names and shapes already validated)."""
        with torch.no_grad():
            for name in self.names:
                self.params[name].copy_(self.from_neutral(name, weights[name]))

    def to_neutral(self, name: str, tensor: torch.Tensor) -> np.ndarray:
        """A tensor shaped like parameter `name` as a float32 numpy copy."""
        return np.array(tensor.detach().cpu().numpy(), dtype=np.float32, copy=True)

    def from_neutral(self, name: str, array: np.ndarray) -> torch.Tensor:
        """A numpy array for parameter `name` as a tensor on the module's device."""
        tensor = torch.from_numpy(np.array(array, dtype=np.float32, copy=True))
        return tensor if self.device.type == "cpu" else tensor.to(self.device)


def model_weights(model: Any) -> TorchParameters | TorchModuleWeights:
    """The weight view the policy trains and transfers: the model itself when it keeps
    neutral names (`TorchParameters`), else its `named_parameters()`."""
    if isinstance(model, TorchParameters):
        return model
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"a Torch policy's model must be a torch.nn.Module; got "
                        f"{type(model).__name__}. Subclass torch.nn.Module (see "
                        "flowrl.policy.model_contract for the outputs it must return).")
    return TorchModuleWeights(model)


def _is_conv_kernel(name: str) -> bool:
    """`conv_{i}/kernel`, also inside a wrapper (`encoder/conv_{i}/kernel`)."""
    parts = name.split("/")
    return len(parts) >= 2 and parts[-2].startswith("conv_") and parts[-1] == "kernel"


def _torch_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if _is_conv_kernel(name):
        h, w, i, o = shape
        return (o, i, h, w)
    return tuple(shape)


def _to_neutral(name: str, tensor: torch.Tensor) -> np.ndarray:
    array = tensor.detach().cpu().numpy()  # .cpu() is the tensor itself on the CPU
    if _is_conv_kernel(name):
        array = array.transpose(2, 3, 1, 0)
    return np.array(array, dtype=np.float32, copy=True)


def _from_neutral(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    if _is_conv_kernel(name):
        array = array.transpose(3, 2, 0, 1)
    return np.ascontiguousarray(array)
