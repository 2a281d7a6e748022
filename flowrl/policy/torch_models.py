"""The Torch model: a `ModelSpec` evaluated with plain tensors stored under neutral names.

Dense kernels are stored (in, out) exactly as the neutral weights, so `get_weights` needs no
transposes; conv kernels are stored OIHW (Torch's layout) and converted from/to HWIO.
Images are channels-last (H, W, C) in the batch and permuted to NCHW for the convolutions; the
conv output is permuted back to NHWC before flattening so that the dense layer after it matches TF.
"""

from __future__ import annotations

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


class TorchModel:
    """`model(obs) -> (dist_inputs, values)` for float or uint8 observation rows.

    Args:
        spec: the architecture.
        weights: initial neutral weights (numpy), e.g. `spec.initial_weights(rng)`.
    """

    def __init__(self, spec: ModelSpec, weights: dict[str, np.ndarray]) -> None:
        self.spec = spec
        self.names = list(spec.weight_shapes())
        self.params: dict[str, torch.Tensor] = {
            name: torch.zeros(_torch_shape(name, shape)).requires_grad_(True)
            for name, shape in spec.weight_shapes().items()
        }
        self.set_weights(weights)
        self._act = _ACTIVATIONS[spec.activation]
        self._trunk_act = _ACTIVATIONS[spec.trunk_activation]
        self._conv_act = _ACTIVATIONS[spec.conv_activation]
        self._pi = [(self.params[f"{n}/kernel"], self.params[f"{n}/bias"]) for n in spec.pi_dense]
        self._vf = [(self.params[f"{n}/kernel"], self.params[f"{n}/bias"]) for n in spec.vf_dense]
        self._trunk = [
            (self.params[f"{n}/kernel"], self.params[f"{n}/bias"]) for n in spec.trunk_dense
        ]
        self._convs = [
            (self.params[f"{n}/kernel"], self.params[f"{n}/bias"], stride)
            for n, stride in spec.convs
        ]
        self._pi_out = (self.params["pi/out/kernel"], self.params["pi/out/bias"])
        self._vf_out = (
            (self.params["vf/out/kernel"], self.params["vf/out/bias"]) if spec.use_value else None
        )
        self._log_std = self.params.get(spec.log_std_name) if spec.log_std_name else None

    def parameters(self) -> list[torch.Tensor]:
        """The trainable tensors, in neutral-name order."""
        return [self.params[name] for name in self.names]

    def __call__(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        if self._convs:
            x = x.permute(0, 3, 1, 2)
            for kernel, bias, stride in self._convs:
                x = self._conv_act(F.conv2d(x, kernel, bias, stride=stride))
            x = x.permute(0, 2, 3, 1)
        x = x.reshape(x.shape[0], -1)
        for kernel, bias in self._trunk:
            x = self._trunk_act(torch.addmm(bias, x, kernel))
        hidden = x
        for kernel, bias in self._pi:
            hidden = self._act(torch.addmm(bias, hidden, kernel))
        dist_inputs = torch.addmm(self._pi_out[1], hidden, self._pi_out[0])
        if self._log_std is not None:
            dist_inputs = torch.cat([dist_inputs, self._log_std.expand_as(dist_inputs)], dim=-1)
        if self._vf_out is None:
            return dist_inputs, torch.zeros(x.shape[0])
        value = x
        for kernel, bias in self._vf:
            value = self._act(torch.addmm(bias, value, kernel))
        return dist_inputs, torch.addmm(self._vf_out[1], value, self._vf_out[0]).squeeze(-1)

    def get_weights(self) -> dict[str, np.ndarray]:
        """Neutral numpy weights (copies)."""
        return {name: _to_neutral(name, self.params[name]) for name in self.names}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
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
        """Converts a neutral array for parameter `name` into a Torch-layout tensor."""
        return torch.from_numpy(_from_neutral(name, array).copy())


def _is_conv_kernel(name: str) -> bool:
    return name.startswith("conv_") and name.endswith("/kernel")


def _torch_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if _is_conv_kernel(name):
        h, w, i, o = shape
        return (o, i, h, w)
    return tuple(shape)


def _to_neutral(name: str, tensor: torch.Tensor) -> np.ndarray:
    array = tensor.detach().numpy()
    if _is_conv_kernel(name):
        array = array.transpose(2, 3, 1, 0)
    return np.array(array, dtype=np.float32, copy=True)


def _from_neutral(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    if _is_conv_kernel(name):
        array = array.transpose(3, 2, 0, 1)
    return np.ascontiguousarray(array)
