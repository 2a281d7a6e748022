"""`TorchPolicy`: the `Policy` interface on PyTorch (CPU, or CUDA for a learner with `num_gpus`).

An algorithm does not subclass this: its `PolicySpec` supplies the loss, model and action
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
from flowrl.policy.model_contract import DETERMINISTIC_ACTOR_CRITIC
from flowrl.policy.optimizer_groups import ResolvedGroup, group_losses
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
from flowrl.policy.torch_models import model_weights


class TorchPolicy(Policy, Saveable):
    """A `Policy` whose model, loss and Adam optimizer are Torch; behaviour from its `PolicySpec`.

    Attributes:
        model: the `nn.Module` meeting the algorithm's model contract: the spec's built-in
            (`TorchModel` for actor-critic: `model(obs) -> (dist_inputs, values)`;
            `TorchQModel`: `model(obs) -> q_values`; `TorchDeterministicActorCritic`:
            `model.actor(obs)`, `model.critics(obs, actions)`) or the config's `custom_model`.
        model_weights: the weight view of `model` (names, parameters, numpy get/set).
        target_model: a second model of the same class when the spec has a target network.
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
        self._build_models(rng, DISTRIBUTIONS, device=self.device)
        if self.is_recurrent and not self.num_threads and not self._on_gpu:
            # A cell's per-step ops are too small to split: more intra-op threads only spin
            # (80x slower on a loaded 2-core machine). learner_num_threads overrides this.
            torch.set_num_threads(1)
        self._setup_optimizer_groups()
        self._optimizers: list[torch.optim.Optimizer] | None = None

    # ---- acting -------------------------------------------------------------------------------

    def sample_actions(self, obs_rows: np.ndarray, explore: bool, state: list[np.ndarray]
                       ) -> tuple[np.ndarray, list[np.ndarray], dict[str, np.ndarray]]:
        if self.dist_class is None:
            return super().sample_actions(obs_rows, explore, state)
        state_out: list[np.ndarray] = []
        with torch.inference_mode():
            obs = self._tensor(obs_rows)
            if self.is_recurrent:
                dist_inputs, values, state_tensors = self._recurrent_step(
                    obs, state, self._acting_prev)
                state_out = [value.cpu().numpy() for value in state_tensors]
            else:
                dist_inputs, values = self.model(obs)
            dist = self.dist_class(dist_inputs)
            actions = dist.sample(self.generator) if explore else dist.deterministic_sample()
            logp = dist.logp(actions)
        extras = {  # .cpu() returns the tensor itself on the CPU: no copy there
            "action_logp": logp.cpu().numpy(),
            "action_dist_inputs": dist_inputs.cpu().numpy(),
            "vf_preds": values.cpu().numpy(),
        }
        return actions.cpu().numpy(), state_out, extras

    def forward(self, obs_rows: np.ndarray, state: list[np.ndarray] | None = None,
                prev: list[np.ndarray] | None = None
                ) -> tuple[tuple[np.ndarray, ...], list[np.ndarray]]:
        rows = self._model_input(obs_rows)
        state = self._state_for(len(rows), state)
        state_out: list[torch.Tensor] = []
        with torch.inference_mode():
            obs = self._tensor(rows)
            if self.is_recurrent:
                *outputs, state_out = self._recurrent_step(
                    obs, state, self._acting_prev if prev is None else prev)
            elif self.contract is DETERMINISTIC_ACTOR_CRITIC:
                outputs = [self.model.actor(obs)]
            else:
                result = self.model(obs)
                outputs = list(result) if isinstance(result, (tuple, list)) else [result]
            return (tuple(value.cpu().numpy() for value in outputs),
                    [value.cpu().numpy() for value in state_out])

    def _recurrent_step(self, obs: torch.Tensor, state: list[np.ndarray],
                        prev: list[np.ndarray]) -> list[Any]:
        """One step of a recurrent model: obs [B] as [B, 1] sequences (`prev`: the previous
        actions and rewards, for a model that reads them); outputs without the time dimension,
        then the state out."""
        seq_lens = torch.ones(obs.shape[0], dtype=torch.int64, device=obs.device)
        kwargs = {}
        if prev:
            kwargs = {"prev_actions": self._tensor(prev[0])[:, None],
                      "prev_rewards": self._tensor(prev[1])[:, None]}
        *outputs, state_out = self.model(obs[:, None], [self._tensor(v) for v in state],
                                         seq_lens, **kwargs)
        return [value[:, 0] for value in outputs] + [list(state_out)]

    # ---- the model in a loss ------------------------------------------------------------------

    def model_outputs(self, batch: Mapping[str, torch.Tensor], model: Any = None) -> Any:
        """The model's contract outputs for every row of a training batch, as a loss uses them
        (`model`: e.g. the target model; default the model). A stateless model is called on
        `obs`; a recurrent one runs over the batch's sequences from their stored start states,
        and its outputs come back as one per row, in row order (padding never reaches the
        loss; `flowrl.policy.sequences`)."""
        model = self.model if model is None else model
        if not self.is_recurrent:
            return model(batch["obs"])
        seq_lens, slots, rows = batch["seq_lens"], batch["seq_slots"], batch["seq_rows"]
        count, steps = seq_lens.shape[0], self.max_seq_len
        obs = batch["obs"][rows].reshape(count, steps, *batch["obs"].shape[1:])
        state = [batch[f"seq_state_in_{i}"] for i in range(len(self._initial_state))]
        kwargs = {}
        if self.uses_prev_actions or self.uses_prev_rewards:
            kwargs = {"prev_actions": _rows_or_none(batch, "prev_actions", rows, count, steps),
                      "prev_rewards": _rows_or_none(batch, "prev_rewards", rows, count, steps)}
        # The loss needs no state out, and a step's outputs do not depend on later steps: every
        # sequence runs to T (no packing); the padded steps' outputs are dropped.
        full = torch.full_like(seq_lens, steps)
        *outputs, _ = model(obs, state, full, **kwargs)
        outputs = [value.reshape(count * steps, *value.shape[2:])[slots] for value in outputs]
        return tuple(outputs) if len(outputs) > 1 else outputs[0]

    def bootstrap_values(self, batch: Mapping[str, torch.Tensor],
                         index: torch.Tensor) -> torch.Tensor:
        """V(new_obs) of the rows `index` of a training batch, without gradient (V-trace's
        bootstraps); a recurrent model first steps through `obs` from the stored state
        (`Policy.compute_values_after`)."""
        with torch.no_grad():
            if not self.is_recurrent:
                return self.model(batch["new_obs"][index])[1]
            count = index.shape[0]
            ones = torch.ones(count, dtype=torch.int64, device=index.device)
            state = [batch[f"state_in_{i}"][index] for i in range(len(self._initial_state))]
            kwargs, next_kwargs = {}, {}
            if self.uses_prev_actions or self.uses_prev_rewards:
                kwargs = {"prev_actions": _rows_or_none(batch, "prev_actions", index, count, 1),
                          "prev_rewards": _rows_or_none(batch, "prev_rewards", index, count, 1)}
                next_kwargs = {"prev_actions": self._encode_actions(batch["actions"][index])[
                    :, None], "prev_rewards": batch["rewards"][index][:, None]}
            *_, state = self.model(batch["obs"][index][:, None], state, ones, **kwargs)
            _, values, _ = self.model(batch["new_obs"][index][:, None], state, ones,
                                      **next_kwargs)
            return values[:, 0]

    def _encode_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Model-space actions as previous-action inputs (as `encode_prev_actions`)."""
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            return torch.nn.functional.one_hot(actions.long(), int(space.n)).float()
        if isinstance(space, gym.spaces.MultiDiscrete):
            nvec = np.asarray(space.nvec).reshape(-1)
            columns = actions.reshape(actions.shape[0], -1).long()
            return torch.cat([torch.nn.functional.one_hot(columns[:, i], int(n)).float()
                              for i, n in enumerate(nvec)], dim=-1)
        return actions.reshape(actions.shape[0], -1).float()

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
        count = len(batch)
        size = min(sgd_minibatch_size or count, count)
        generator = self._shuffle_generator
        if seed is not None:
            generator = torch.Generator()
            generator.manual_seed(seed)
        if self.is_recurrent and not self.spec.batch_of_sequences:
            return self._learn_on_sequences(batch, num_sgd_iter, size, generator)
        tensors = self._batch_to_tensors(batch)
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

    def _learn_on_sequences(self, batch: SampleBatch, num_sgd_iter: int, size: int,
                            generator: torch.Generator) -> dict[str, float]:
        """`learn_on_minibatches` for a recurrent model: minibatches of whole sequences."""
        arrays = self._training_arrays(batch)
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        epoch_stats: list[dict[str, float]] = []
        for _ in range(num_sgd_iter):
            minibatches = ([arrays] if size >= len(batch)
                           else self._sequence_minibatches(arrays, size, rng))
            epoch_stats = [self._train_step(self._arrays_to_tensors(minibatch))
                           for minibatch in minibatches]
        return average_stats(epoch_stats)

    def compute_gradients(self, batch: SampleBatch) -> tuple[list[np.ndarray], dict[str, float]]:
        stats = self._backward(self._batch_to_tensors(batch))
        weights = self.model_weights
        grads = [weights.to_neutral(name, p.grad)
                 for name, p in zip(weights.names, weights.parameters())]
        return grads, stats

    def apply_gradients(self, gradients: list[np.ndarray]) -> None:
        names = self.model_weights.names
        if len(gradients) != len(names):
            raise ValueError(
                f"apply_gradients needs one gradient per weight ({len(names)}, in get_weights() "
                f"order), got {len(gradients)}"
            )
        self._check_weights(dict(zip(names, gradients)), self._weight_shapes)
        for name, param, grad in zip(names, self.model_weights.parameters(), gradients):
            param.grad = self.model_weights.from_neutral(name, grad)
        self._step(self._due_groups())

    def _train_step(self, tensors: dict[str, torch.Tensor]) -> dict[str, float]:
        due = self._due_groups()
        stats = self._backward(tensors, due)
        self._step(due)
        return stats

    def _step(self, due: list[ResolvedGroup]) -> None:
        """One optimizer step of each due group (of the only optimizer without groups)."""
        self.num_updates += 1
        if not self._grouped:
            self.optimizer.step()
            return
        optimizers = self.optimizers
        for index, group in enumerate(self.optimizer_groups):
            if group in due:
                optimizers[index].step()

    def _backward(self, tensors: dict[str, torch.Tensor],
                  due: list[ResolvedGroup] | None = None) -> dict[str, float]:
        """Loss, backward, non-finite check and global-norm clipping; leaves grads in .grad
        (of the `due` groups' weights; None: every group's)."""
        params = self.model_weights.parameters()
        for param in params:
            param.grad = None
        loss, stats = self.loss_fn(self, tensors)
        if self._grouped:
            return self._backward_groups(params, loss, stats, due)
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

    def _backward_groups(self, params: list[torch.Tensor], loss: Any, stats: Mapping[str, Any],
                         due: list[ResolvedGroup] | None) -> dict[str, float]:
        """Each group's gradients from its own loss, clipped by its own `grad_clip`."""
        losses = group_losses(loss, self.optimizer_groups, self.spec.name)
        values = {name: _scalar(value) for name, value in stats.items()}
        squared_norms = []
        for group in self.optimizer_groups:
            members = [params[index] for index in group.indices]
            values.setdefault(f"{group.name}_loss", _scalar(losses[group.name]))
            values[f"{group.name}_cur_lr"] = group.lr
            if due is not None and group not in due:
                for param in members:
                    param.grad = torch.zeros_like(param)
                continue
            grads = torch.autograd.grad(losses[group.name], members, retain_graph=True,
                                        allow_unused=True)
            for param, grad in zip(members, grads):
                param.grad = torch.zeros_like(param) if grad is None else grad
            norm = torch.nn.utils.get_total_norm([param.grad for param in members])
            if group.grad_clip:
                torch.nn.utils.clip_grads_with_norm_(members, group.grad_clip, norm)
            values[f"{group.name}_grad_gnorm"] = float(norm)
            squared_norms.append(float(norm) ** 2)
        values.setdefault("total_loss", sum(_scalar(value) for value in losses.values()))
        global_norm = float(np.sqrt(sum(squared_norms)))
        raise_if_not_finite(values, global_norm)
        values["grad_gnorm"] = global_norm
        values["cur_lr"] = self.lr
        return values

    def _batch_to_tensors(self, batch: SampleBatch) -> dict[str, torch.Tensor]:
        return self._arrays_to_tensors(self._training_arrays(batch))

    def _arrays_to_tensors(self, arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {name: self._tensor(array) for name, array in arrays.items()}

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        """`array` as a tensor on the policy's device (sharing memory on the CPU)."""
        tensor = _tensor(array)
        return tensor.to(self.device, non_blocking=True) if self._on_gpu else tensor

    # ---- weights and state --------------------------------------------------------------------

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.model_weights.get_weights()

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        self._check_weights(weights, self._weight_shapes)
        self.model_weights.set_weights(dict(weights))

    def get_target_weights(self) -> dict[str, np.ndarray]:
        self._target("read target weights")
        return self.target_weights.get_weights()

    def update_target(self, tau: float = 1.0) -> None:
        self._target("update the target network")
        _check_tau(tau)
        target, source = self.target_weights.params, self.model_weights.params
        with torch.no_grad():
            for name in self.model_weights.names:
                target[name].lerp_(source[name], float(tau))

    def _weights_view(self, model: Any) -> Any:
        return model_weights(model)

    def _to_framework(self, array: np.ndarray) -> torch.Tensor:
        return self._tensor(np.asarray(array))

    def _new_custom_model(self, model_class: Any, options: Mapping[str, Any],
                          init_seed: int, num_outputs: int | None = None) -> Any:
        """Builds a custom model under a seeded Torch rng (the process's rng is left as it
        was), then moves it to the policy's device."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            model = super()._new_custom_model(model_class, options, init_seed, num_outputs)
        return model.to(self.device) if isinstance(model, torch.nn.Module) else model


    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """One optimizer per optimizer group (in `optimizer_groups` order), made on first use.

        A worker that only acts never builds them (building the first torch optimizer in a
        process costs over a second of imports).
        """
        if self._optimizers is None:
            params = self.model_weights.parameters()
            self._optimizers = [_make_optimizer(group, [params[i] for i in group.indices])
                                for group in self.optimizer_groups]
        return self._optimizers

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The first group's optimizer: a spec without groups has only this Adam."""
        return self.optimizers[0]

    def _set_group_lr(self, index: int, lr: float) -> None:
        super()._set_group_lr(index, lr)
        if self._optimizers is not None:
            for group in self._optimizers[index].param_groups:
                group["lr"] = lr

    def get_state(self) -> dict[str, Any]:
        optimizers = [self._group_state(index) for index in range(len(self.optimizer_groups))]
        if self._grouped:
            optimizer: dict[str, Any] = {
                "groups": {group.name: state for group, state in
                           zip(self.optimizer_groups, optimizers)},
                "num_updates": self.num_updates}
        else:
            optimizer = optimizers[0]
        return {
            "weights": self.get_weights(),
            "optimizer": optimizer,
            "global_timestep": self.global_timestep,
            "num_updates": self.num_updates,
            "coefficients": self._coefficient_values(),
            **({"target_weights": self.get_target_weights()} if self.target_model else {}),
            **({"observation_filter": self.filter_state()} if self.observation_filter else {}),
        }

    def _group_state(self, index: int) -> dict[str, Any]:
        """One group's optimizer state under the weights' names: step, lr, Adam's moments."""
        group, optimizer = self.optimizer_groups[index], self.optimizers[index]
        weights, params = self.model_weights, self.model_weights.parameters()
        step, first, second = 0, {}, {}
        for name, position in zip(group.weight_names, group.indices):
            state = optimizer.state.get(params[position])
            if state and "step" in state:
                step = int(state["step"])
            if state and "exp_avg" in state:
                first[name] = weights.to_neutral(name, state["exp_avg"])
                second[name] = weights.to_neutral(name, state["exp_avg_sq"])
        return {"step": step, "lr": group.lr, "exp_avg": first, "exp_avg_sq": second}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.set_weights(state["weights"])
        self.set_filter_state(state.get("observation_filter"))
        for index, group_state in enumerate(self._group_states(state["optimizer"])):
            self._set_group_state(index, group_state)
        self.on_global_var_update({"timestep": int(state["global_timestep"])})
        if "num_updates" in state:
            self.num_updates = int(state["num_updates"])
        for name, value in state["coefficients"].items():
            self.set_coefficient(name, value)
        if self.target_model is not None and "target_weights" in state:
            self._check_weights(state["target_weights"], self._weight_shapes)
            self.target_weights.set_weights(dict(state["target_weights"]))

    def _set_group_state(self, index: int, saved: Mapping[str, Any]) -> None:
        group, optimizer = self.optimizer_groups[index], self.optimizers[index]
        self._set_group_lr(index, float(saved["lr"]))
        params, weights = self.model_weights.parameters(), self.model_weights
        for position in group.indices:
            optimizer.state.pop(params[position], None)
        if not saved["step"] or group.optimizer != "adam":
            return
        for name, position in zip(group.weight_names, group.indices):
            param = params[position]
            optimizer.state[param] = {
                "step": torch.tensor(float(saved["step"]), device=param.device),
                "exp_avg": weights.from_neutral(name, saved["exp_avg"][name]),
                "exp_avg_sq": weights.from_neutral(name, saved["exp_avg_sq"][name]),
            }


def _make_optimizer(group: ResolvedGroup, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """The Torch optimizer of one group."""
    if group.optimizer == "sgd":
        return torch.optim.SGD(params, lr=group.lr)
    # The fused kernel is ~5x faster than the per-tensor loop for small CPU networks.
    return torch.optim.Adam(params, lr=group.lr, fused=True)


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing memory with `array` when possible (copies read-only arrays)."""
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, copy=True, order="C")
    return torch.from_numpy(array)


def _rows_or_none(batch: Mapping[str, torch.Tensor], name: str, rows: torch.Tensor,
                  count: int, steps: int) -> torch.Tensor | None:
    """A per-row column taken at `rows` and shaped [count, steps, ...]; None when absent."""
    if name not in batch:
        return None
    value = batch[name][rows]
    return value.reshape(count, steps, *value.shape[1:])


def _scalar(value: Any) -> float:
    return value.detach().item() if isinstance(value, torch.Tensor) else float(value)
