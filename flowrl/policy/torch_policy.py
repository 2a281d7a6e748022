"""`TorchPolicy`: the `Policy` interface on PyTorch (CPU).

An algorithm does not subclass this by hand: `build_policy_class(name, framework="torch",
loss_fn=...)` returns a thin subclass with the loss attached.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from flowrl.policy.models import plan_policy_model
from flowrl.policy.policy import (
    Policy,
    Saveable,
    _check_sgd_args,
    average_stats,
    raise_if_not_finite,
    seed_streams,
)
from flowrl.policy.sample_batch import SampleBatch
from flowrl.policy.spaces import action_offset
from flowrl.policy.torch_distributions import DISTRIBUTIONS
from flowrl.policy.torch_models import TorchModel

TorchLossFn = Callable[..., tuple[torch.Tensor, dict[str, Any]]]


class TorchPolicy(Policy, Saveable):
    """A `Policy` whose model, distributions, loss and Adam optimizer are Torch.

    Class attributes set by `build_policy_class`: `loss_fn(policy, model, dist_class,
    train_batch) -> (loss, stats)`, optional `stats_fn(policy, train_batch) -> stats`,
    `postprocess_fn(policy, batch) -> batch` and `default_config`.

    Attributes:
        model: the `TorchModel`; `model(obs) -> (dist_inputs, values)`.
        dist_class: callable mapping `dist_inputs` to a `TorchDistribution`.
        generator: the per-policy `torch.Generator` used for sampling and shuffling.
    """

    framework: ClassVar[str] = "torch"
    loss_fn: ClassVar[TorchLossFn | None] = None
    stats_fn: ClassVar[Callable[..., dict[str, Any]] | None] = None

    def __init__(
        self, observation_space: gym.Space, action_space: gym.Space, config: Mapping[str, Any]
    ) -> None:
        super().__init__(observation_space, action_space, config)
        if self.config["num_threads"]:
            torch.set_num_threads(int(self.config["num_threads"]))
        rng, sampling_seed, shuffle_seed = seed_streams(self.config["seed"])
        self.generator = torch.Generator()
        self.generator.manual_seed(sampling_seed)
        self._shuffle_generator = torch.Generator()
        self._shuffle_generator.manual_seed(shuffle_seed)
        self.dist_name, self.dist_class, self.spec = plan_policy_model(
            action_space, self.preprocessor.shape, self.config, DISTRIBUTIONS
        )
        self.model = TorchModel(self.spec, self.spec.initial_weights(rng))
        self._weight_shapes = self.spec.weight_shapes()
        self._optimizer: torch.optim.Adam | None = None
        self._offset = action_offset(action_space)

    # ---- acting -------------------------------------------------------------------------------

    def compute_actions(
        self, obs_batch: Any, explore: bool = True
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        rows = self.preprocess(obs_batch)
        if rows.dtype != np.uint8 and rows.dtype != np.float32:
            rows = rows.astype(np.float32)
        with torch.inference_mode():
            dist_inputs, values = self.model(_tensor(rows))
            dist = self.dist_class(dist_inputs)
            actions = dist.sample(self.generator) if explore else dist.deterministic_sample()
            logp = dist.logp(actions)
        extras = {
            "action_logp": logp.numpy(),
            "action_dist_inputs": dist_inputs.numpy(),
            "vf_preds": values.numpy(),
        }
        return self._to_env_actions(actions.numpy()), extras

    def _to_env_actions(self, actions: np.ndarray) -> np.ndarray:
        space = self.action_space
        if isinstance(space, gym.spaces.Box):
            return actions.reshape((len(actions),) + space.shape).astype(space.dtype, copy=False)
        actions = actions + self._offset
        return actions.reshape((len(actions),) + space.shape).astype(space.dtype, copy=False)

    def compute_values(self, obs_rows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            _, values = self.model(_tensor(self._model_input(obs_rows)))
        return values.numpy()

    # ---- learning -----------------------------------------------------------------------------

    def learn_on_batch(self, batch: SampleBatch) -> dict[str, float]:
        return self._train_step(self._batch_to_tensors(batch))

    def learn_on_minibatches(
        self,
        batch: SampleBatch,
        *,
        num_sgd_iter: int,
        sgd_minibatch_size: int,
        seed: int | None = None,
    ) -> dict[str, float]:
        """As `Policy.learn_on_minibatches`; the batch becomes tensors once, minibatches are
        tensor index selections. Returns stats averaged over the last epoch's steps."""
        _check_sgd_args(num_sgd_iter, sgd_minibatch_size)
        tensors = self._batch_to_tensors(batch)
        count = len(batch)
        size = min(sgd_minibatch_size or count, count)
        generator = self._shuffle_generator
        if seed is not None:
            generator = torch.Generator()
            generator.manual_seed(seed)
        epoch_stats: list[dict[str, float]] = []
        for _ in range(num_sgd_iter):
            if size >= count:
                epoch_stats = [self._train_step(tensors)]
                continue
            order = torch.randperm(count, generator=generator)
            epoch_stats = []
            for start in range(0, count, size):
                index = order[start : start + size]
                minibatch = {name: value[index] for name, value in tensors.items()}
                epoch_stats.append(self._train_step(minibatch))
        return average_stats(epoch_stats)

    def compute_gradients(self, batch: SampleBatch) -> tuple[list[np.ndarray], dict[str, float]]:
        stats = self._backward(self._batch_to_tensors(batch))
        grads = [
            self.model.to_neutral(name, p.grad)
            for name, p in zip(self.model.names, self.model.parameters())
        ]
        return grads, stats

    def apply_gradients(self, gradients: list[np.ndarray]) -> None:
        names = self.model.names
        if len(gradients) != len(names):
            raise ValueError(
                f"apply_gradients needs one gradient per weight ({len(names)}, in get_weights() "
                f"order), got {len(gradients)}"
            )
        self._check_weights(dict(zip(names, gradients)), self._weight_shapes)
        for name, param, grad in zip(names, self.model.parameters(), gradients):
            param.grad = self.model.from_neutral(name, grad)
        self.optimizer.step()

    def _train_step(self, tensors: dict[str, torch.Tensor]) -> dict[str, float]:
        stats = self._backward(tensors)
        self.optimizer.step()
        return stats

    def _backward(self, tensors: dict[str, torch.Tensor]) -> dict[str, float]:
        """Loss, backward, non-finite check and global-norm clipping; leaves grads in .grad."""
        loss_fn = type(self).loss_fn
        if loss_fn is None:
            raise RuntimeError(
                f"{type(self).__name__} has no loss; build a trainable class with "
                "build_policy_class(..., loss_fn=...) or get_policy_class(algo)"
            )
        params = self.model.parameters()
        for param in params:
            param.grad = None
        loss, stats = loss_fn(self, self.model, self.dist_class, tensors)
        if type(self).stats_fn is not None:
            stats = {**stats, **type(self).stats_fn(self, tensors)}
        loss.backward()
        for param in params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        grads = [param.grad for param in params]
        norm = torch.nn.utils.get_total_norm(grads)
        values = {name: _scalar(value) for name, value in stats.items()}
        values.setdefault("total_loss", _scalar(loss))
        raise_if_not_finite(values, float(norm))
        if self.config["grad_clip"]:
            torch.nn.utils.clip_grads_with_norm_(params, float(self.config["grad_clip"]), norm)
        values["grad_gnorm"] = float(norm)
        values["cur_lr"] = float(self.config["lr"])
        return values

    def _batch_to_tensors(self, batch: SampleBatch) -> dict[str, torch.Tensor]:
        return {name: _tensor(array) for name, array in self._training_arrays(batch).items()}

    # ---- weights and state --------------------------------------------------------------------

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.model.get_weights()

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        self._check_weights(weights, self._weight_shapes)
        self.model.set_weights(dict(weights))

    @property
    def optimizer(self) -> torch.optim.Adam:
        """Adam over the model's parameters, created on first use.

        A worker that only acts never builds it (building the first torch optimizer in a
        process costs over a second of imports).
        """
        if self._optimizer is None:
            # The fused kernel is ~5x faster than the per-tensor loop for small CPU networks.
            self._optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config["lr"],
                                               fused=True)
        return self._optimizer

    def _set_learning_rate(self, lr: float) -> None:
        super()._set_learning_rate(lr)
        if self._optimizer is not None:
            for group in self._optimizer.param_groups:
                group["lr"] = lr

    def get_state(self) -> dict[str, Any]:
        step, first, second = 0, {}, {}
        for name, param in zip(self.model.names, self.model.parameters()):
            state = self.optimizer.state.get(param)
            if state:
                step = int(state["step"])
                first[name] = self.model.to_neutral(name, state["exp_avg"])
                second[name] = self.model.to_neutral(name, state["exp_avg_sq"])
        return {
            "weights": self.get_weights(),
            "optimizer": {"step": step, "lr": float(self.config["lr"]),
                          "exp_avg": first, "exp_avg_sq": second},
            "global_timestep": self.global_timestep,
            "coefficients": self._coefficient_values(),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.set_weights(state["weights"])
        optimizer = state["optimizer"]
        self._set_learning_rate(float(optimizer["lr"]))
        self.optimizer.state.clear()
        if optimizer["step"]:
            for name, param in zip(self.model.names, self.model.parameters()):
                self.optimizer.state[param] = {
                    "step": torch.tensor(float(optimizer["step"])),
                    "exp_avg": self.model.from_neutral(name, optimizer["exp_avg"][name]),
                    "exp_avg_sq": self.model.from_neutral(name, optimizer["exp_avg_sq"][name]),
                }
        self.global_timestep = int(state["global_timestep"])
        for name, value in state["coefficients"].items():
            self.set_coefficient(name, value)


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing memory with `array` when possible (copies read-only arrays)."""
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, copy=True, order="C")
    return torch.from_numpy(array)


def _scalar(value: Any) -> float:
    return value.detach().item() if isinstance(value, torch.Tensor) else float(value)
