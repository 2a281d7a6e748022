"""`use_lstm` / `use_gru`: the architecture of a model wrapped in a recurrent cell.

`wrap_recurrent(spec, model_config, action_space)` turns an algorithm's built-in model spec
(actor-critic or Q-network) into a `RecurrentModelSpec`: an *encoder* computes features of each
observation, an LSTM or GRU carries a state across the steps of a sequence, and the algorithm's
heads sit on the cell's output::

    obs[B, T, ...] -> encoder -> features[B, T, F] (+ prev action, prev reward)
                   -> LSTM/GRU (state [h, c] or [h]) -> heads: (dist_inputs, values) or q

The encoder is the built-in network without its output layer (``fcnet_hiddens`` and, for
images, the conv stack; its last hidden layer gives the features), or the config's
`custom_model` built with ``num_outputs=F``, whose first output is taken as the features.

An actor-critic model with ``vf_share_layers`` False (the default, as for the built-in MLP) has
a second tower, encoder and cell, for its value head (images share one conv tower); its state
follows the policy's:
``[h, c, h_vf, c_vf]`` (LSTM) or ``[h, h_vf]`` (GRU). With ``vf_share_layers`` both heads sit on
one cell.

Weight names (neutral, as every built-in): ``encoder/…`` (the built-in encoder's own names),
``lstm/kernel`` (F_in, 4H), ``lstm/recurrent_kernel`` (H, 4H), ``lstm/bias`` (4H) with the gates
in Keras's order (input, forget, cell, output); or ``gru/kernel`` (F_in, 3H),
``gru/recurrent_kernel`` (H, 3H), ``gru/bias`` and ``gru/recurrent_bias`` (3H) in the order
(update, reset, candidate), the reset gate applied after the recurrent matmul (Keras's
``reset_after``, Torch's GRU); then the heads ``pi/out``, ``pi/log_std``, ``vf/out`` or
``q/out`` (``q/advantage/out`` and ``q/value/out`` when dueling); a value tower's encoder and
cell weights are the same names prefixed ``vf_``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from flowrl.policy.model_contract import ACTOR_CRITIC, Q_VALUES, ModelContract
from flowrl.policy.models import ModelSpec, QModelSpec, orthogonal

CELLS = {"lstm": 4, "gru": 3}
"""The recurrent cells and how many gate blocks of H units their kernels hold."""


@dataclass(frozen=True)
class RecurrentModelSpec:
    """A model wrapped in an LSTM or GRU: encoder, cell, then the contract's heads."""

    obs_shape: tuple[int, ...]
    contract: ModelContract
    """ACTOR_CRITIC or Q_VALUES: which heads sit on the cell."""
    encoder: ModelSpec | None
    """The built-in encoder (None: a custom model's, or the flat observation when there are
    no hidden layers)."""
    feature_size: int
    """F: the size of the encoder's features."""
    encoder_activation: str
    """Applied to the built-in encoder's output layer (its last hidden layer); "linear" for a
    custom encoder, whose output is used as it is."""
    custom_encoder: bool
    """The encoder is the config's custom model (built by the policy, not from this spec)."""
    cell: str
    """"lstm" or "gru"."""
    cell_size: int
    """H: units of the cell's state."""
    prev_action_size: int
    """Size of the previous-action input (one-hot for discrete spaces); 0 when not used."""
    use_prev_reward: bool
    """Whether the previous reward is an input of the cell."""
    num_outputs: int
    """Outputs of the policy head (actor-critic) or one Q-value per action."""
    log_std_size: int = 0
    """Actor-critic with `free_log_std`: a state-independent log-std of this size."""
    use_value: bool = True
    """Actor-critic: a value head."""
    dueling: bool = False
    """Q-network: value and advantage heads."""
    separate_value: bool = False
    """Actor-critic: the value head has an encoder and cell of its own (`vf_share_layers`
    False), whose state follows the policy's in the state list."""

    torch_class = "flowrl.policy.torch_recurrent_models:TorchRecurrentModel"
    tf_class = "flowrl.policy.tf_recurrent_models:TFRecurrentModel"

    @property
    def kind(self) -> str:
        return f"recurrent_{self.contract.name}"

    @property
    def output_size(self) -> int:
        """The contract's `num_outputs` (as the wrapped spec's)."""
        return self.num_outputs + self.log_std_size

    @property
    def towers(self) -> tuple[str, ...]:
        """Weight-name prefixes of the encoder-and-cell towers: the policy's (or the Q
        network's) "", and "vf_" for a separate value tower."""
        return ("", "vf_") if self.separate_value else ("",)

    @property
    def cell_input_size(self) -> int:
        """F_in: features, then the previous action and reward when they are inputs."""
        return self.feature_size + self.prev_action_size + int(self.use_prev_reward)

    def own_weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """The cell's and the heads' weights (not the encoder's)."""
        size, blocks = self.cell_size, CELLS[self.cell]
        shapes: dict[str, tuple[int, ...]] = {}
        for tower in self.towers:
            cell = f"{tower}{self.cell}"
            shapes[f"{cell}/kernel"] = (self.cell_input_size, blocks * size)
            shapes[f"{cell}/recurrent_kernel"] = (size, blocks * size)
            shapes[f"{cell}/bias"] = (blocks * size,)
            if self.cell == "gru":
                shapes[f"{cell}/recurrent_bias"] = (blocks * size,)
        if self.contract is ACTOR_CRITIC:
            shapes["pi/out/kernel"], shapes["pi/out/bias"] = (size, self.num_outputs), (
                self.num_outputs,)
            if self.log_std_size:
                shapes["pi/log_std"] = (self.log_std_size,)
            if self.use_value:
                shapes["vf/out/kernel"], shapes["vf/out/bias"] = (size, 1), (1,)
        elif self.dueling:
            shapes["q/advantage/out/kernel"] = (size, self.num_outputs)
            shapes["q/advantage/out/bias"] = (self.num_outputs,)
            shapes["q/value/out/kernel"], shapes["q/value/out/bias"] = (size, 1), (1,)
        else:
            shapes["q/out/kernel"], shapes["q/out/bias"] = (size, self.num_outputs), (
                self.num_outputs,)
        return shapes

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every weight of a built-in encoder's model, in get_weights order (a custom
        encoder's weights come from the model itself)."""
        shapes: dict[str, tuple[int, ...]] = {}
        for tower in self.towers if self.encoder is not None else ():
            shapes.update({f"{tower}encoder/{name}": shape
                           for name, shape in self.encoder.weight_shapes().items()})
        shapes.update(self.own_weight_shapes())
        return shapes

    def initial_weights(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Seeded float32 weights: the encoder's as the built-in's, Glorot-uniform input
        kernels, orthogonal recurrent kernels, zero biases but an LSTM forget-gate bias of 1,
        and the heads as the built-ins' (gain 0.01 policy and Q, 1.0 value)."""
        weights: dict[str, np.ndarray] = {}
        for tower in self.towers if self.encoder is not None else ():
            weights.update({f"{tower}encoder/{name}": value
                            for name, value in self.encoder.initial_weights(rng).items()})
        size = self.cell_size
        gains = {"pi/out/kernel": 0.01, "vf/out/kernel": 1.0, "q/out/kernel": 0.01,
                 "q/advantage/out/kernel": 0.01, "q/value/out/kernel": 1.0}
        for name, shape in self.own_weight_shapes().items():
            if name.endswith("/recurrent_kernel"):
                weights[name] = np.concatenate(
                    [orthogonal((size, size), 1.0, rng) for _ in range(shape[1] // size)], axis=1)
            elif name.endswith(f"{self.cell}/kernel"):
                limit = math.sqrt(6.0 / (shape[0] + shape[1]))
                weights[name] = rng.uniform(-limit, limit, shape).astype(np.float32)
            elif name.endswith("/kernel"):
                weights[name] = orthogonal(shape, gains[name], rng)
            else:
                weights[name] = np.zeros(shape, np.float32)
        for tower in self.towers if self.cell == "lstm" else ():
            weights[f"{tower}lstm/bias"][size:2 * size] = 1.0
        return weights

    @property
    def state_size(self) -> int:
        """State tensors per tower: 2 (h, c) for an LSTM, 1 (h) for a GRU."""
        return 2 if self.cell == "lstm" else 1

    def initial_state(self) -> list[np.ndarray]:
        """Zeros: [h, c] for an LSTM, [h] for a GRU, per tower (no batch dimension)."""
        count = self.state_size * len(self.towers)
        return [np.zeros(self.cell_size, np.float32) for _ in range(count)]


def wrap_recurrent(spec: Any, model_config: Any, action_space: gym.Space) -> RecurrentModelSpec:
    """The `RecurrentModelSpec` that wraps `spec` (an actor-critic `ModelSpec` or a
    `QModelSpec`) as `model_config` asks (`use_lstm` / `use_gru`, `lstm_cell_size`,
    `lstm_use_prev_action`, `lstm_use_prev_reward`, `custom_model`).

    Raises:
        ValueError: for any other model kind (SAC's, DDPG's), naming the ones that wrap.
    """
    if not isinstance(spec, (ModelSpec, QModelSpec)):
        raise ValueError(
            f"model.use_lstm / use_gru wrap actor-critic and Q models (PG, A2C, A3C, PPO, "
            f"IMPALA, APPO, DQN, R2D2); this algorithm's model is {spec.contract.name!r} "
            f"({type(spec).__name__}). Remove use_lstm/use_gru, or bring a recurrent "
            "custom_model of that contract (flowrl.policy.model_contract).")
    custom = getattr(model_config, "custom_model", None) is not None
    hiddens = tuple(model_config.fcnet_hiddens)
    encoder: ModelSpec | None = None
    if custom:
        feature_size = int(hiddens[-1]) if hiddens else int(model_config.lstm_cell_size)
    elif spec.is_cnn:
        feature_size = int(model_config.lstm_cell_size)
        encoder = ModelSpec(spec.obs_shape, feature_size, 0, (), spec.activation, False, False,
                            spec.conv_filters, spec.conv_activation)
    elif hiddens:
        feature_size = int(hiddens[-1])
        encoder = ModelSpec(spec.obs_shape, feature_size, 0, hiddens[:-1], spec.activation,
                            False, False, None, spec.conv_activation)
    else:
        feature_size = int(np.prod(spec.obs_shape))
    common = {
        "obs_shape": tuple(spec.obs_shape), "encoder": encoder, "feature_size": feature_size,
        "encoder_activation": "linear" if custom or encoder is None else (
            spec.conv_activation if spec.is_cnn else spec.activation),
        "custom_encoder": custom, "cell": "lstm" if model_config.use_lstm else "gru",
        "cell_size": int(model_config.lstm_cell_size),
        "prev_action_size": (prev_action_size(action_space)
                             if model_config.lstm_use_prev_action else 0),
        "use_prev_reward": bool(model_config.lstm_use_prev_reward),
    }
    if isinstance(spec, ModelSpec):
        return RecurrentModelSpec(contract=ACTOR_CRITIC, num_outputs=spec.num_outputs,
                                  log_std_size=spec.log_std_size, use_value=spec.use_value,
                                  separate_value=(spec.use_value and not spec.vf_share_layers
                                                  and not spec.is_cnn),
                                  **common)
    return RecurrentModelSpec(contract=Q_VALUES, num_outputs=spec.num_actions,
                              dueling=spec.dueling, **common)


def prev_action_size(action_space: gym.Space) -> int:
    """The size of a previous action as a model input: one-hot for Discrete, concatenated
    one-hots for MultiDiscrete, the flat action for a Box."""
    if isinstance(action_space, gym.spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, gym.spaces.MultiDiscrete):
        return int(np.sum(action_space.nvec))
    return int(np.prod(action_space.shape))


def encode_prev_actions(action_space: gym.Space, model_actions: np.ndarray) -> np.ndarray:
    """Model-space actions (indices from 0, or float rows) as the float32 rows a recurrent
    wrapper reads as its previous-action input.

    Examples:
        >>> encode_prev_actions(gym.spaces.Discrete(3), np.array([2, 0]))
        array([[0., 0., 1.],
               [1., 0., 0.]], dtype=float32)
    """
    model_actions = np.asarray(model_actions)
    rows = len(model_actions)
    if isinstance(action_space, gym.spaces.Discrete):
        encoded = np.zeros((rows, int(action_space.n)), np.float32)
        encoded[np.arange(rows), model_actions.reshape(rows).astype(np.int64)] = 1.0
        return encoded
    if isinstance(action_space, gym.spaces.MultiDiscrete):
        nvec = np.asarray(action_space.nvec).reshape(-1)
        columns = model_actions.reshape(rows, -1).astype(np.int64)
        encoded = np.zeros((rows, int(nvec.sum())), np.float32)
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        for index, offset in enumerate(offsets):
            encoded[np.arange(rows), offset + columns[:, index]] = 1.0
        return encoded
    return model_actions.reshape(rows, -1).astype(np.float32)



def weights_under(weights: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The weights named `prefix…`, without the prefix (one tower's encoder)."""
    return {name[len(prefix):]: value for name, value in weights.items()
            if name.startswith(prefix)}


def refuse_recurrent_encoder(encoder: Any) -> None:
    """Raises ValueError when a custom model asked to be wrapped is recurrent itself."""
    if callable(getattr(encoder, "initial_state", None)):
        raise ValueError(f"model.use_lstm/use_gru wraps a stateless model, but the custom model "
                         f"{type(encoder).__name__} is recurrent already (it has "
                         "initial_state()); drop use_lstm/use_gru or the model's state.")
