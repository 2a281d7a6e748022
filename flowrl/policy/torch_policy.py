"""`TorchPolicy`: the `Policy` interface on PyTorch (CPU, or CUDA for a learner with `num_gpus`).

An algorithm does not subclass this: its `PolicySpec` supplies the loss, model kind and action
selection, and `spec.build(...)` constructs a `TorchPolicy` when `config.framework == "torch"`.
The learner's policy (worker_index 0) of a config with `num_gpus > 0` keeps its model, target
model and optimizer on CUDA; batches go to the GPU once per learn call and everything it hands
out (actions, stats, weights, gradients) is numpy on the CPU, so rollout workers (always on
the CPU) load its weights as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from flowrl.data.sample_batch import SampleBatch
from flowrl.policy.policy import (
    Policy,
    Saveable,
    _check_sgd_args,
    _check_tau,
    average_stats,
    learner_gpus,
    raise_if_not_finite,
    seed_streams,
)
from flowrl.policy.torch_distributions import DISTRIBUTIONS
from flowrl.policy.torch_models import MODEL_CLASSES


class TorchPolicy(Policy, Saveable):
    """A `Policy` whose model, loss and Adam optimizer are Torch; behaviour from its `PolicySpec`.

    Attributes:
        model: the Torch model of the spec's model kind (`TorchModel` for actor-critic:
            `model(obs) -> (dist_inputs, values)`; `TorchQModel`: `model(obs) -> q_values`;
            `TorchDeterministicActorCritic`: `model.actor(obs)`, `model.critics(obs, actions)`).
        target_model: a second model of the same kind when the spec has a target network.
        dist_class: actor-critic models: maps `dist_inputs` to a `TorchDistribution`.
        generator: the per-policy `torch.Generator` used for sampling (on `device`).
        device: where the models live: `cuda` for the learner's policy with `num_gpus > 0`,
            else the CPU.

    Raises:
        ValueError: `config.num_gpus > 0` for the learner's policy on a machine where
            `torch.cuda.device_count()` is smaller (naming both numbers).
    """

    framework: ClassVar[str] = "torch"

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, config: Any,
                 **options: Any) -> None:
        super().__init__(observation_space, action_space, config, **options)
        if self.num_threads:
            torch.set_num_threads(int(self.num_threads))
        gpus = learner_gpus(self.config, self.worker_index, torch.cuda.device_count,
                            "torch.cuda.device_count()")
        self.device = torch.device("cuda") if gpus else torch.device("cpu")
        self._on_gpu = self.device.type != "cpu"
        rng, sampling_seed, shuffle_seed = seed_streams(self.seed)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(sampling_seed)
        self._shuffle_generator = torch.Generator()
        self._shuffle_generator.manual_seed(shuffle_seed)
        self._build_models(rng, MODEL_CLASSES, DISTRIBUTIONS, device=self.device)
        self._optimizer: torch.optim.Adam | None = None

    # ---- acting -------------------------------------------------------------------------------

    def sample_actions(self, obs_rows: np.ndarray,
                       explore: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if self.dist_class is None:
            return super().sample_actions(obs_rows, explore)
        with torch.inference_mode():
            dist_inputs, values = self.model(self._tensor(obs_rows))
            dist = self.dist_class(dist_inputs)
            actions = dist.sample(self.generator) if explore else dist.deterministic_sample()
            logp = dist.logp(actions)
        extras = {  # .cpu() returns the tensor itself on the CPU: no copy there
            "action_logp": logp.cpu().numpy(),
            "action_dist_inputs": dist_inputs.cpu().numpy(),
            "vf_preds": values.cpu().numpy(),
        }
        return actions.cpu().numpy(), extras

    def compute_q_values(self, obs_rows: np.ndarray) -> np.ndarray:
        if self.model_spec.kind != "q":
            return super().compute_q_values(obs_rows)
        with torch.inference_mode():
            return self.model(self._tensor(self._model_input(obs_rows))).cpu().numpy()

    def compute_deterministic_actions(self, obs_rows: np.ndarray) -> np.ndarray:
        if self.model_spec.kind != "deterministic_actor_critic":
            return super().compute_deterministic_actions(obs_rows)
        with torch.inference_mode():
            return self.model.actor(self._tensor(self._model_input(obs_rows))).cpu().numpy()

    def compute_values(self, obs_rows: np.ndarray) -> np.ndarray:
        if self.model_spec.kind != "actor_critic":
            return super().compute_values(obs_rows)
        with torch.inference_mode():
            _, values = self.model(self._tensor(self._model_input(obs_rows)))
        return values.cpu().numpy()

    def run_on_batch(self, fn: Callable[..., Mapping[str, Any]],
                     batch: SampleBatch) -> dict[str, np.ndarray]:
        with torch.no_grad():
            outputs = fn(self, self._batch_to_tensors(batch))
        return {name: value.detach().cpu().numpy() if isinstance(value, torch.Tensor)
                else np.asarray(value) for name, value in outputs.items()}

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
            if self._on_gpu:
                order = order.to(self.device)
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
        params = self.model.parameters()
        for param in params:
            param.grad = None
        loss, stats = self.loss_fn(self, tensors)
        loss.backward()
        for param in params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        grads = [param.grad for param in params]
        norm = torch.nn.utils.get_total_norm(grads)
        values = {name: _scalar(value) for name, value in stats.items()}
        values.setdefault("total_loss", _scalar(loss))
        raise_if_not_finite(values, float(norm))
        if self.config.grad_clip:
            torch.nn.utils.clip_grads_with_norm_(params, float(self.config.grad_clip), norm)
        values["grad_gnorm"] = float(norm)
        values["cur_lr"] = self.lr
        return values

    def _batch_to_tensors(self, batch: SampleBatch) -> dict[str, torch.Tensor]:
        return {name: self._tensor(array)
                for name, array in self._training_arrays(batch).items()}

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        """`array` as a tensor on the policy's device (sharing memory on the CPU)."""
        tensor = _tensor(array)
        return tensor.to(self.device, non_blocking=True) if self._on_gpu else tensor

    # ---- weights and state --------------------------------------------------------------------

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.model.get_weights()

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        self._check_weights(weights, self._weight_shapes)
        self.model.set_weights(dict(weights))

    def get_target_weights(self) -> dict[str, np.ndarray]:
        return self._target("read target weights").get_weights()

    def update_target(self, tau: float = 1.0) -> None:
        target = self._target("update the target network")
        _check_tau(tau)
        with torch.no_grad():
            for name in self.model.names:
                target.params[name].lerp_(self.model.params[name], float(tau))


    @property
    def optimizer(self) -> torch.optim.Adam:
        """Adam over the model's parameters, created on first use.

        A worker that only acts never builds it (building the first torch optimizer in a
        process costs over a second of imports).
        """
        if self._optimizer is None:
            # The fused kernel is ~5x faster than the per-tensor loop for small CPU networks.
            self._optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr, fused=True)
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
            "optimizer": {"step": step, "lr": self.lr,
                          "exp_avg": first, "exp_avg_sq": second},
            "global_timestep": self.global_timestep,
            "coefficients": self._coefficient_values(),
            **({"target_weights": self.get_target_weights()} if self.target_model else {}),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.set_weights(state["weights"])
        optimizer = state["optimizer"]
        self._set_learning_rate(float(optimizer["lr"]))
        self.optimizer.state.clear()
        if optimizer["step"]:
            for name, param in zip(self.model.names, self.model.parameters()):
                self.optimizer.state[param] = {
                    "step": torch.tensor(float(optimizer["step"]), device=param.device),
                    "exp_avg": self.model.from_neutral(name, optimizer["exp_avg"][name]),
                    "exp_avg_sq": self.model.from_neutral(name, optimizer["exp_avg_sq"][name]),
                }
        self.on_global_var_update({"timestep": int(state["global_timestep"])})
        for name, value in state["coefficients"].items():
            self.set_coefficient(name, value)
        if self.target_model is not None and "target_weights" in state:
            self._check_weights(state["target_weights"], self._weight_shapes)
            self.target_model.set_weights(dict(state["target_weights"]))


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing memory with `array` when possible (copies read-only arrays)."""
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, copy=True, order="C")
    return torch.from_numpy(array)


def _scalar(value: Any) -> float:
    return value.detach().item() if isinstance(value, torch.Tensor) else float(value)
