"""`TorchRecurrentModel`: a built-in or custom Torch model wrapped in an LSTM or GRU.

The architecture and weight names are `flowrl.policy.recurrent_spec.RecurrentModelSpec`'s;
the TF twin (`tf_recurrent_models.TFRecurrentModel`) computes the same function of the same
weights. The cell runs in ATen's fused LSTM/GRU loop (`torch.lstm`, `torch.gru`) on the
neutral kernels, transposed (and the GRU's gate blocks reordered) on the fly; a single step
(acting) is written out, which is several times faster than ATen's call for one step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from flowrl.policy.model_contract import ACTOR_CRITIC
from flowrl.policy.recurrent_spec import (
    RecurrentModelSpec,
    refuse_recurrent_encoder,
    weights_under,
)
from flowrl.policy.torch_models import _ACTIVATIONS, TorchModel, TorchParameters


class TorchRecurrentModel(TorchParameters):
    """`model(obs[B, T, ...], state, seq_lens[B], prev_actions=None, prev_rewards=None)`
    -> `(*outputs[B, T, ...], state_out)`: the recurrent form of the spec's contract.

    A sequence's state stops at its last valid step (`t < seq_lens[b]`); outputs past it are
    computed but meaningless (the policy drops them). `prev_actions` ([B, T, A] float rows,
    `encode_prev_actions`) and `prev_rewards` ([B, T]) are zeros when not given.

    Args:
        spec: the wrapped architecture.
        weights: initial neutral weights (the encoders' too, unless they are custom).
        device: where the parameters live.
        encoders: custom encoder modules (the config's `custom_model`), one per tower
            (`spec.towers`), built by the policy.
    """

    def __init__(self, spec: RecurrentModelSpec, weights: Mapping[str, np.ndarray],
                 device: torch.device | str | None = None,
                 encoders: Sequence[torch.nn.Module] | None = None) -> None:
        torch.nn.Module.__init__(self)
        self.spec = spec
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if encoders is None and spec.encoder is not None:
            encoders = [TorchModel(spec.encoder, weights_under(weights, f"{tower}encoder/"),
                                   self.device) for tower in spec.towers]
        for encoder in encoders or ():
            refuse_recurrent_encoder(encoder)
        self.encoders = torch.nn.ModuleList(encoders or [])
        self.params: dict[str, torch.Tensor] = {}
        for tower, encoder in zip(spec.towers, self.encoders):
            named = (encoder.params if isinstance(encoder, TorchParameters)
                     else dict(encoder.named_parameters()))
            self.params.update({f"{tower}encoder/{name}": value for name, value in named.items()})
        own = spec.own_weight_shapes()
        for name, shape in own.items():
            parameter = torch.nn.Parameter(torch.zeros(shape, device=self.device))
            self.register_parameter(name, parameter)
            self.params[name] = parameter
        self.names = list(self.params)
        with torch.no_grad():
            for name in own:
                self.params[name].copy_(torch.from_numpy(np.asarray(weights[name], np.float32)))
        self._encoder_act = _ACTIVATIONS[spec.encoder_activation]
        self.uses_prev_actions = spec.prev_action_size > 0
        self.uses_prev_rewards = spec.use_prev_reward

    def initial_state(self) -> list[np.ndarray]:
        """Zeros: [h, c] for an LSTM, [h] for a GRU, per tower."""
        return self.spec.initial_state()

    def features(self, obs: torch.Tensor, tower: int = 0) -> torch.Tensor:
        """A tower's encoder features of observation rows [N, ...] -> [N, F]."""
        if not len(self.encoders):
            x = obs.float() / 255.0 if obs.dtype == torch.uint8 else obs
            return x.reshape(x.shape[0], -1)
        out = self.encoders[tower](obs)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return self._encoder_act(out)

    def forward(self, obs: torch.Tensor, state: list[torch.Tensor], seq_lens: torch.Tensor,
                prev_actions: torch.Tensor | None = None,
                prev_rewards: torch.Tensor | None = None) -> tuple[Any, ...]:
        spec = self.spec
        batch, steps = obs.shape[0], obs.shape[1]
        rows = obs.reshape(batch * steps, *obs.shape[2:])
        extra = []
        if spec.prev_action_size:
            extra.append(_or_zeros(prev_actions, (batch, steps, spec.prev_action_size), obs))
        if spec.use_prev_reward:
            extra.append(_or_zeros(prev_rewards, (batch, steps), obs).unsqueeze(-1))
        lengths = seq_lens.to("cpu", torch.int64)
        per, hidden, state_out = spec.state_size, [], []
        for index, tower in enumerate(spec.towers):
            x = self.features(rows, index).reshape(batch, steps, -1)
            x = torch.cat([x, *extra], dim=-1) if extra else x
            out, final = self._run_cell(tower, x, list(state[index * per:(index + 1) * per]),
                                        lengths)
            hidden.append(out.reshape(batch * steps, spec.cell_size))
            state_out.extend(final)
        heads = [head.reshape(batch, steps, *head.shape[1:]) for head in self._heads(hidden)]
        return (*heads, state_out)

    __call__ = forward

    def _run_cell(self, tower: str, x: torch.Tensor, state: list[torch.Tensor],
                  lengths: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """A tower's cell over [B, T, F_in] inputs with ATen's fused LSTM/GRU loop: outputs
        [B, T, H] and the state after each sequence's last valid step (packed sequences
        when the lengths differ)."""
        kind, size = self.spec.cell, self.spec.cell_size
        cell = f"{tower}{kind}"
        kernel, recurrent = self.params[f"{cell}/kernel"], self.params[f"{cell}/recurrent_kernel"]
        if x.shape[1] == 1:  # acting: one step by hand is ~8x faster than ATen's call
            new_state = self._one_step(cell, torch.addmm(self.params[f"{cell}/bias"], x[:, 0],
                                                         kernel), state)
            return new_state[0][:, None], new_state
        if kind == "lstm":
            weights = [kernel.t(), recurrent.t(), self.params[f"{cell}/bias"],
                       torch.zeros(4 * size, device=x.device)]
            run, hx = torch.lstm, [value[None] for value in state]
        else:  # neutral (update, reset, candidate) blocks -> ATen's (reset, update, candidate)
            order = torch.cat([torch.arange(size, 2 * size), torch.arange(size),
                               torch.arange(2 * size, 3 * size)]).to(x.device)
            weights = [kernel[:, order].t(), recurrent[:, order].t(),
                       self.params[f"{cell}/bias"][order],
                       self.params[f"{cell}/recurrent_bias"][order]]
            run, hx = torch.gru, state[0][None]
        steps = x.shape[1]
        if bool((lengths == steps).all()):
            outputs, *final = run(x, hx, weights, True, 1, 0.0, False, False, True)
            return outputs, [value[0] for value in final]
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths.clamp(min=1),
                                                         batch_first=True, enforce_sorted=False)
        sorted_hx = ([value.index_select(1, packed.sorted_indices) for value in hx]
                     if kind == "lstm" else hx.index_select(1, packed.sorted_indices))
        data, *final = run(packed.data, packed.batch_sizes, sorted_hx, weights, True, 1, 0.0,
                           False, False)
        outputs, _ = torch.nn.utils.rnn.pad_packed_sequence(
            packed._replace(data=data), batch_first=True, total_length=steps)
        return outputs, [value[0].index_select(0, packed.unsorted_indices) for value in final]

    def _one_step(self, cell: str, projected: torch.Tensor, state: list[torch.Tensor]
                  ) -> list[torch.Tensor]:
        """One step of a tower's cell from its projected input (x @ kernel + bias): the same
        gates as ATen's loop, in the neutral (Keras) block order."""
        recurrent = self.params[f"{cell}/recurrent_kernel"]
        if self.spec.cell == "lstm":
            h, c = state
            i, f, g, o = (projected + torch.matmul(h, recurrent)).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return [torch.sigmoid(o) * torch.tanh(c), c]
        (h,) = state
        x_z, x_r, x_h = projected.chunk(3, dim=-1)
        h_z, h_r, h_h = torch.addmm(self.params[f"{cell}/recurrent_bias"], h,
                                    recurrent).chunk(3, dim=-1)
        z, r = torch.sigmoid(x_z + h_z), torch.sigmoid(x_r + h_r)
        return [z * h + (1.0 - z) * torch.tanh(x_h + r * h_h)]

    def _heads(self, hidden: list[torch.Tensor]) -> list[torch.Tensor]:
        """The contract's outputs from the towers' cell outputs [N, H] (the value head on the
        last tower)."""
        spec, policy_hidden = self.spec, hidden[0]
        if spec.contract is ACTOR_CRITIC:
            dist_inputs = self.dense(policy_hidden, "pi/out")
            if spec.log_std_size:
                dist_inputs = torch.cat([dist_inputs, self.params["pi/log_std"].expand(
                    policy_hidden.shape[0], -1)], -1)
            values = (self.dense(hidden[-1], "vf/out").squeeze(-1) if spec.use_value
                      else torch.zeros(policy_hidden.shape[0], device=policy_hidden.device))
            return [dist_inputs, values]
        if not spec.dueling:
            return [self.dense(policy_hidden, "q/out")]
        advantages = self.dense(policy_hidden, "q/advantage/out")
        value = self.dense(policy_hidden, "q/value/out")
        return [value + advantages - advantages.mean(dim=-1, keepdim=True)]


def _or_zeros(value: torch.Tensor | None, shape: tuple[int, ...],
              like: torch.Tensor) -> torch.Tensor:
    if value is None:
        return torch.zeros(shape, device=like.device)
    return value.float().reshape(shape)
