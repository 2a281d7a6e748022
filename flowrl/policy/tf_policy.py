"""`TFPolicy`: the `Policy` interface on TensorFlow 2 (no Keras models, no Keras optimizers).

The model is a `tf.Module` of `tf.Variable`s, the optimizer is Adam written on variables with the
same maths as `torch.optim.Adam`, and the hot paths (acting, values, the train step, gradients)
are `tf.function`s with an `input_signature` whose batch dimension is None, so minibatches of any
size reuse one graph. Loss coefficients are `tf.Variable`s: changing one never retraces.

The learner's policy (worker_index 0) of a config with `num_gpus > 0` creates its variables and
runs its functions under `tf.device("/GPU:0")`; every other policy is pinned to "/CPU:0" when
the process sees a GPU (TensorFlow would otherwise place rollout workers' ops on it) and runs
exactly as before when it sees none.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import gymnasium as gym
import numpy as np
import tensorflow as tf

from flowrl.data.sample_batch import SampleBatch
from flowrl.policy.model_contract import DETERMINISTIC_ACTOR_CRITIC
from flowrl.policy.optimizer_groups import group_losses
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
from flowrl.policy.tf_distributions import DISTRIBUTIONS
from flowrl.policy.tf_models import model_weights

ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-8
_Method = TypeVar("_Method", bound=Callable[..., Any])


def _rows_or_none(batch: Mapping[str, tf.Tensor], name: str, rows: tf.Tensor, count: Any,
                  steps: int) -> tf.Tensor | None:
    """A per-row column taken at `rows` and shaped [count, steps, ...]; None when absent."""
    if name not in batch:
        return None
    value = tf.gather(batch[name], rows)
    return tf.reshape(value, tf.concat([[count, steps], tf.shape(value)[1:]], axis=0))


@functools.cache
def _visible_gpus() -> int:
    """GPUs TensorFlow sees in this process (counted once)."""
    return len(tf.config.list_physical_devices("GPU"))


def _placed(method: _Method) -> _Method:
    """Runs a policy method under the policy's device scope (none when no GPU is visible)."""

    @functools.wraps(method)
    def placed(self: TFPolicy, *args: Any, **kwargs: Any) -> Any:
        if self.device is None:
            return method(self, *args, **kwargs)
        with tf.device(self.device):
            return method(self, *args, **kwargs)

    return placed  # type: ignore[return-value]


class TFPolicy(Policy, Saveable):
    """A `Policy` whose model, loss and Adam optimizer are TensorFlow; behaviour from its spec.

    The loss (`spec.tf_loss(policy, batch)`) is traced once per batch-column signature. The
    model (a built-in `tf.Module` or the config's Keras `custom_model`) and the attributes are
    as in `TorchPolicy` (`model`, `model_weights`, `target_model`, `dist_class`); `device`
    is "/GPU:0" for the learner's policy with `num_gpus > 0`, "/CPU:0" for the others when a
    GPU is visible, and None (TensorFlow's default placement, the CPU) when none is.

    Raises:
        ValueError: `config.num_gpus > 0` for the learner's policy on a machine where
            `tf.config.list_physical_devices("GPU")` lists fewer GPUs (naming both numbers).
    """

    framework: ClassVar[str] = "tf"

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, config: Any,
                 **options: Any) -> None:
        super().__init__(observation_space, action_space, config, **options)
        gpus = learner_gpus(self.config, self.worker_index, _visible_gpus,
                            'len(tf.config.list_physical_devices("GPU"))')
        self.device: str | None = "/GPU:0" if gpus else "/CPU:0" if _visible_gpus() else None
        with tf.device(self.device) if self.device else contextlib.nullcontext():
            self._build()

    def _build(self) -> None:
        """Variables, the optimizer's slots and the compiled functions (under `device`)."""
        rng, sampling_seed, shuffle_seed = seed_streams(self.seed)
        self.generator = tf.random.Generator.from_seed(sampling_seed)
        self._shuffle_rng = np.random.default_rng(shuffle_seed)
        self._build_models(rng, DISTRIBUTIONS)
        self._coefficients = {
            name: tf.Variable(value, dtype=tf.float32, trainable=False)
            for name, value in self._coefficients.items()
        }
        self._setup_optimizer_groups()
        params = self.model_weights.parameters()
        self._group_lrs = [tf.Variable(group.lr, dtype=tf.float32, trainable=False)
                           for group in self.optimizer_groups]
        self._group_steps = [tf.Variable(0.0, dtype=tf.float32, trainable=False)
                             for _ in self.optimizer_groups]
        self._lr, self._adam_step = self._group_lrs[0], self._group_steps[0]
        self._num_updates = tf.Variable(self._initial_updates, dtype=tf.int64, trainable=False)
        self._adam_m = [tf.Variable(tf.zeros_like(p), trainable=False) for p in params]
        self._adam_v = [tf.Variable(tf.zeros_like(p), trainable=False) for p in params]
        obs_dtype = tf.uint8 if self.preprocessor.dtype == np.uint8 else tf.float32
        obs_spec = tf.TensorSpec((None, *self.preprocessor.shape), obs_dtype)
        state_specs = ([[tf.TensorSpec((None, *value.shape), tf.float32)
                         for value in self._initial_state]] if self.is_recurrent else [])
        if self.is_recurrent:  # [prev_actions, prev_rewards] (empty unless the model reads them)
            state_specs.append([tf.TensorSpec((None, self.prev_action_width), tf.float32),
                                tf.TensorSpec((None,), tf.float32)]
                               if self.uses_prev_actions or self.uses_prev_rewards else [])
        forward = self._forward_body if self.is_recurrent else (
            lambda obs: self._forward_body(obs, [], []))
        self._forward_fn = tf.function(forward, input_signature=[obs_spec, *state_specs],
                                       autograph=False)
        if self.dist_class is not None:
            actions = self._actions_body if self.is_recurrent else (
                lambda obs, explore: self._actions_body(obs, explore, [], []))
            self._actions_fn = tf.function(
                actions,
                input_signature=[obs_spec, tf.TensorSpec((), tf.bool), *state_specs],
                autograph=False,
            )
        self._apply_fn = tf.function(
            self._apply_grads,
            input_signature=[[tf.TensorSpec(p.shape, tf.float32) for p in params]],
            autograph=False,
        )
        self._train_fns: dict[tuple, Any] = {}
        self._grads_fns: dict[tuple, Any] = {}
        self._stat_names: list[str] = []

    # ---- acting -------------------------------------------------------------------------------

    def _actions_body(self, obs: tf.Tensor, explore: tf.Tensor, state: list[tf.Tensor],
                      prev: list[tf.Tensor]) -> tuple[Any, ...]:
        if self.is_recurrent:
            dist_inputs, values, state_out = self._recurrent_step(obs, state, prev)
        else:
            (dist_inputs, values), state_out = self.model(obs), []
        dist = self.dist_class(dist_inputs)
        actions = tf.cond(
            explore, lambda: dist.sample(self.generator), dist.deterministic_sample
        )
        return actions, dist.logp(actions), dist_inputs, values, state_out

    def _forward_body(self, obs: tf.Tensor, state: list[tf.Tensor],
                      prev: list[tf.Tensor]) -> tuple[tuple, list]:
        """The contract's outputs and the state out (see `Policy.forward`)."""
        if self.is_recurrent:
            *outputs, state_out = self._recurrent_step(obs, state, prev)
            return tuple(outputs), state_out
        if self.contract is DETERMINISTIC_ACTOR_CRITIC:
            return (self.model.actor(obs),), []
        result = self.model(obs)
        return (tuple(result) if isinstance(result, (tuple, list)) else (result,)), []

    def _recurrent_step(self, obs: tf.Tensor, state: list[tf.Tensor],
                        prev: list[tf.Tensor]) -> list[Any]:
        """One step of a recurrent model: obs [B] as [B, 1] sequences (`prev`: the previous
        actions and rewards, for a model that reads them); outputs without the time dimension,
        then the state out."""
        seq_lens = tf.ones(tf.shape(obs)[:1], tf.int64)
        kwargs = {}
        if prev:
            kwargs = {"prev_actions": prev[0][:, None], "prev_rewards": prev[1][:, None]}
        *outputs, state_out = self.model(obs[:, None], list(state), seq_lens, **kwargs)
        return [value[:, 0] for value in outputs] + [list(state_out)]

    # ---- the model in a loss ------------------------------------------------------------------

    def model_outputs(self, batch: Mapping[str, tf.Tensor], model: Any = None) -> Any:
        """The model's contract outputs for every row of a training batch (see
        `TorchPolicy.model_outputs`)."""
        model = self.model if model is None else model
        if not self.is_recurrent:
            return model(batch["obs"])
        seq_lens, slots, rows = batch["seq_lens"], batch["seq_slots"], batch["seq_rows"]
        count, steps = tf.shape(seq_lens)[0], self.max_seq_len
        obs = tf.gather(batch["obs"], rows)
        obs = tf.reshape(obs, [count, steps, *self.preprocessor.shape])
        state = [batch[f"seq_state_in_{i}"] for i in range(len(self._initial_state))]
        kwargs = {}
        if self.uses_prev_actions or self.uses_prev_rewards:
            kwargs = {"prev_actions": _rows_or_none(batch, "prev_actions", rows, count, steps),
                      "prev_rewards": _rows_or_none(batch, "prev_rewards", rows, count, steps)}
        # The loss needs no state out, and a step's outputs do not depend on later steps: every
        # sequence runs to T; the padded steps' outputs are dropped.
        *outputs, _ = model(obs, state, tf.fill(tf.shape(seq_lens), tf.cast(steps, seq_lens.dtype)),
                            **kwargs)
        outputs = [tf.gather(tf.reshape(value, tf.concat([[count * steps], tf.shape(value)[2:]],
                                                         axis=0)), slots) for value in outputs]
        return tuple(outputs) if len(outputs) > 1 else outputs[0]

    def bootstrap_values(self, batch: Mapping[str, tf.Tensor], index: tf.Tensor) -> tf.Tensor:
        """V(new_obs) of the rows at `index` ([K, 1], as `tf.where` gives), without gradient
        (see `TorchPolicy.bootstrap_values`)."""
        if not self.is_recurrent:
            return tf.stop_gradient(self.model(tf.gather_nd(batch["new_obs"], index))[1])
        rows = index[:, 0]
        count = tf.shape(rows)[0]
        ones = tf.ones([count], tf.int64)
        state = [tf.gather(batch[f"state_in_{i}"], rows)
                 for i in range(len(self._initial_state))]
        kwargs, next_kwargs = {}, {}
        if self.uses_prev_actions or self.uses_prev_rewards:
            kwargs = {"prev_actions": _rows_or_none(batch, "prev_actions", rows, count, 1),
                      "prev_rewards": _rows_or_none(batch, "prev_rewards", rows, count, 1)}
            next_kwargs = {
                "prev_actions": self._encode_actions(tf.gather(batch["actions"], rows))[:, None],
                "prev_rewards": tf.gather(batch["rewards"], rows)[:, None]}
        *_, state = self.model(tf.gather(batch["obs"], rows)[:, None], state, ones, **kwargs)
        _, values, _ = self.model(tf.gather(batch["new_obs"], rows)[:, None], state, ones,
                                  **next_kwargs)
        return tf.stop_gradient(values[:, 0])

    def _encode_actions(self, actions: tf.Tensor) -> tf.Tensor:
        """Model-space actions as previous-action inputs (as `encode_prev_actions`)."""
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            return tf.one_hot(tf.cast(actions, tf.int64), int(space.n))
        if isinstance(space, gym.spaces.MultiDiscrete):
            nvec = np.asarray(space.nvec).reshape(-1)
            columns = tf.reshape(tf.cast(actions, tf.int64), [tf.shape(actions)[0], -1])
            return tf.concat([tf.one_hot(columns[:, i], int(n)) for i, n in enumerate(nvec)],
                             axis=-1)
        return tf.reshape(tf.cast(actions, tf.float32), [tf.shape(actions)[0], -1])

    @_placed
    def sample_actions(self, obs_rows: np.ndarray, explore: bool, state: list[np.ndarray]
                       ) -> tuple[np.ndarray, list[np.ndarray], dict[str, np.ndarray]]:
        if self.dist_class is None:
            return super().sample_actions(obs_rows, explore, state)
        extra_args = [list(state), self._acting_prev] if self.is_recurrent else []
        actions, logp, dist_inputs, values, state_out = self._actions_fn(
            obs_rows, tf.constant(bool(explore)), *extra_args)
        extras = {
            "action_logp": logp.numpy(),
            "action_dist_inputs": dist_inputs.numpy(),
            "vf_preds": values.numpy(),
        }
        return actions.numpy(), [value.numpy() for value in state_out], extras

    @_placed
    def forward(self, obs_rows: np.ndarray, state: list[np.ndarray] | None = None,
                prev: list[np.ndarray] | None = None
                ) -> tuple[tuple[np.ndarray, ...], list[np.ndarray]]:
        rows = self._model_input(obs_rows)
        if self.is_recurrent:
            prev = self._acting_prev if prev is None else prev
            if not prev and (self.uses_prev_actions or self.uses_prev_rewards):
                prev = self._prev_inputs(len(rows), None, None)
            outputs, state_out = self._forward_fn(rows, self._state_for(len(rows), state),
                                                  list(prev))
        else:
            outputs, state_out = self._forward_fn(rows)
        return tuple(value.numpy() for value in outputs), [value.numpy() for value in state_out]

    @_placed
    def run_on_batch(self, fn: Callable[..., Mapping[str, Any]],
                     batch: SampleBatch) -> dict[str, np.ndarray]:
        outputs = fn(self, self._batch_to_tensors(batch))
        return {name: np.asarray(tf.stop_gradient(value)) for name, value in outputs.items()}

    # ---- learning -----------------------------------------------------------------------------

    def _loss_and_grads(self, batch: dict[str, tf.Tensor]) -> tuple[list, tf.Tensor, tf.Tensor]:
        params = self.model_weights.parameters()
        if self._grouped:
            return self._group_loss_and_grads(batch, params)
        with tf.GradientTape() as tape:
            loss, stats = self.loss_fn(self, batch)
        grads = tape.gradient(loss, params)
        grads = [tf.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        norm = tf.linalg.global_norm(grads)
        clip = self.optimizer_groups[0].grad_clip
        if clip:
            scale = tf.minimum(clip / (norm + 1e-6), 1.0)
            grads = [g * scale for g in grads]
        stats = dict(stats)
        stats.setdefault("total_loss", loss)
        return grads, *self._stat_vector(stats, norm)

    def _group_loss_and_grads(self, batch: dict[str, tf.Tensor],
                              params: list[tf.Variable]) -> tuple[list, tf.Tensor, tf.Tensor]:
        """Each group's gradients from its own loss, clipped by its own `grad_clip`."""
        with tf.GradientTape(persistent=True) as tape:
            loss, stats = self.loss_fn(self, batch)
        losses = group_losses(loss, self.optimizer_groups, self.spec.name)
        grads: list[Any] = [None] * len(params)
        stats, norms = dict(stats), []
        for group in self.optimizer_groups:
            members = [params[index] for index in group.indices]
            group_grads = tape.gradient(losses[group.name], members)
            group_grads = [tf.zeros_like(p) if g is None else g
                           for p, g in zip(members, group_grads)]
            norm = tf.linalg.global_norm(group_grads)
            if group.grad_clip:
                scale = tf.minimum(group.grad_clip / (norm + 1e-6), 1.0)
                group_grads = [g * scale for g in group_grads]
            for index, grad in zip(group.indices, group_grads):
                grads[index] = grad
            stats.setdefault(f"{group.name}_loss", losses[group.name])
            stats[f"{group.name}_grad_gnorm"] = norm
            norms.append(norm)
        del tape
        stats.setdefault("total_loss", tf.add_n(list(losses.values())))
        return grads, *self._stat_vector(stats, tf.sqrt(tf.add_n([n * n for n in norms])))

    def _stat_vector(self, stats: dict[str, Any], norm: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The stats and the global gradient norm as one vector, and whether all are finite."""
        self._stat_names = list(stats)
        vector = tf.stack([tf.cast(stats[name], tf.float32) for name in self._stat_names] + [norm])
        return vector, tf.reduce_all(tf.math.is_finite(vector))

    def _train_body(self, batch: dict[str, tf.Tensor], indices: tf.Tensor) -> tf.Tensor:
        if self.is_recurrent and not self.spec.batch_of_sequences:
            minibatch = batch  # whole sequences, chosen before (`_learn_on_sequences`)
        else:
            minibatch = {name: tf.gather(value, indices) for name, value in batch.items()}
        grads, vector, finite = self._loss_and_grads(minibatch)

        def apply() -> tf.Tensor:
            self._apply_grads(grads)
            return tf.constant(True)

        applied = tf.cond(finite, apply, lambda: tf.constant(False))
        with tf.control_dependencies([applied]):
            return tf.identity(vector)

    def _apply_grads(self, grads: list[tf.Tensor]) -> None:
        """One step of each group due on this update (`update_period`), then counts it."""
        if not self._grouped:
            self._group_apply(0, grads)
            self._num_updates.assign_add(1)
            return
        for index, group in enumerate(self.optimizer_groups):
            members = [grads[position] for position in group.indices]
            if group.update_period == 1:
                self._group_apply(index, members)
                continue

            def step(index: int = index, members: list = members) -> tf.Tensor:
                self._group_apply(index, members)
                return tf.constant(True)

            due = tf.equal(tf.math.floormod(self._num_updates, group.update_period), 0)
            tf.cond(due, step, lambda: tf.constant(False))
        self._num_updates.assign_add(1)

    def _group_apply(self, index: int, grads: list[tf.Tensor]) -> None:
        """One optimizer step of group `index` (Adam with torch.optim.Adam's maths, or SGD)."""
        group, params = self.optimizer_groups[index], self.model_weights.parameters()
        lr, step = self._group_lrs[index], self._group_steps[index].assign_add(1.0)
        if group.optimizer == "sgd":
            for position, grad in zip(group.indices, grads):
                params[position].assign_sub(lr * grad)
            return
        step_size = lr / (1.0 - tf.pow(ADAM_BETA1, step))
        correction2_sqrt = tf.sqrt(1.0 - tf.pow(ADAM_BETA2, step))
        for position, grad in zip(group.indices, grads):
            param, m, v = params[position], self._adam_m[position], self._adam_v[position]
            m.assign(ADAM_BETA1 * m + (1.0 - ADAM_BETA1) * grad)
            v.assign(ADAM_BETA2 * v + (1.0 - ADAM_BETA2) * tf.square(grad))
            param.assign_sub(step_size * m / (tf.sqrt(v) / correction2_sqrt + ADAM_EPSILON))

    def _compiled(self, cache: dict, body: Callable, batch: dict[str, tf.Tensor],
                  with_indices: bool) -> Any:
        key = tuple((name, value.dtype.name, tuple(value.shape[1:])) for name, value in
                    batch.items())
        fn = cache.get(key)
        if fn is None:
            signature = [{name: tf.TensorSpec((None, *value.shape[1:]), value.dtype)
                          for name, value in batch.items()}]
            if with_indices:
                signature.append(tf.TensorSpec((None,), tf.int32))
            fn = cache[key] = tf.function(body, input_signature=signature, autograph=False)
        return fn

    def _stats(self, vector: np.ndarray) -> dict[str, float]:
        stats = {name: float(value) for name, value in zip(self._stat_names, vector[:-1])}
        raise_if_not_finite(stats, float(vector[-1]))
        stats["grad_gnorm"] = float(vector[-1])
        if self._grouped:
            for group in self.optimizer_groups:
                stats[f"{group.name}_cur_lr"] = group.lr
        stats["cur_lr"] = self.lr
        return stats

    @_placed
    def learn_on_batch(self, batch: SampleBatch) -> dict[str, float]:
        tensors = self._batch_to_tensors(batch)
        train = self._compiled(self._train_fns, self._train_body, tensors, True)
        return self._stats(train(tensors, tf.range(len(batch), dtype=tf.int32)).numpy())

    @_placed
    def learn_on_minibatches(
        self,
        batch: SampleBatch,
        *,
        num_sgd_iter: int,
        sgd_minibatch_size: int,
        seed: int | None = None,
    ) -> dict[str, float]:
        """As `Policy.learn_on_minibatches`; the batch becomes tensors once and each minibatch
        is gathered inside the compiled train step. Returns the last epoch's mean stats."""
        _check_sgd_args(num_sgd_iter, sgd_minibatch_size)
        count = len(batch)
        size = min(sgd_minibatch_size or count, count)
        rng = self._shuffle_rng if seed is None else np.random.default_rng(seed)
        if self.is_recurrent and not self.spec.batch_of_sequences:
            return self._learn_on_sequences(batch, num_sgd_iter, size, rng)
        tensors = self._batch_to_tensors(batch)
        train = self._compiled(self._train_fns, self._train_body, tensors, True)
        vectors: list[tf.Tensor] = []
        for _ in range(num_sgd_iter):
            order = rng.permutation(count).astype(np.int32) if size < count else np.arange(
                count, dtype=np.int32)
            vectors = []
            for start in range(0, count, size):
                vector = train(tensors, tf.constant(order[start : start + size]))
                vectors.append(vector)
                if not np.isfinite(vector.numpy()).all():
                    self._stats(vector.numpy())
        return average_stats([self._stats(v.numpy()) for v in vectors])

    def _learn_on_sequences(self, batch: SampleBatch, num_sgd_iter: int, size: int,
                            rng: np.random.Generator) -> dict[str, float]:
        """`learn_on_minibatches` for a recurrent model: minibatches of whole sequences."""
        arrays = self._training_arrays(batch)
        vectors: list[tf.Tensor] = []
        for _ in range(num_sgd_iter):
            minibatches = ([arrays] if size >= len(batch)
                           else self._sequence_minibatches(arrays, size, rng))
            vectors = []
            for minibatch in minibatches:
                tensors = {name: tf.convert_to_tensor(a) for name, a in minibatch.items()}
                train = self._compiled(self._train_fns, self._train_body, tensors, True)
                vector = train(tensors, tf.zeros([0], tf.int32))
                vectors.append(vector)
                if not np.isfinite(vector.numpy()).all():
                    self._stats(vector.numpy())
        return average_stats([self._stats(v.numpy()) for v in vectors])

    @_placed
    def compute_gradients(self, batch: SampleBatch) -> tuple[list[np.ndarray], dict[str, float]]:
        tensors = self._batch_to_tensors(batch)
        grads_fn = self._compiled(
            self._grads_fns, lambda b: self._loss_and_grads(b)[:2], tensors, False
        )
        grads, vector = grads_fn(tensors)
        stats = self._stats(vector.numpy())
        return [g.numpy() for g in grads], stats

    @_placed
    def apply_gradients(self, gradients: list[np.ndarray]) -> None:
        names = self.model_weights.names
        if len(gradients) != len(names):
            raise ValueError(
                f"apply_gradients needs one gradient per weight ({len(names)}, in get_weights() "
                f"order), got {len(gradients)}"
            )
        self._check_weights(dict(zip(names, gradients)), self._weight_shapes)
        self._apply_fn([np.asarray(g, np.float32) for g in gradients])

    def _batch_to_tensors(self, batch: SampleBatch) -> dict[str, tf.Tensor]:
        return {name: tf.convert_to_tensor(a) for name, a in self._training_arrays(batch).items()}

    # ---- coefficients, weights and state ------------------------------------------------------

    def set_coefficient(self, name: str, value: float) -> None:
        self._check_coefficient(name)
        self._coefficients[name].assign(float(value))

    def _coefficient_values(self) -> dict[str, float]:
        return {name: float(var.numpy()) for name, var in self._coefficients.items()}

    def _set_group_lr(self, index: int, lr: float) -> None:
        super()._set_group_lr(index, lr)
        self._group_lrs[index].assign(lr)

    _initial_updates = 0

    @property  # type: ignore[override]
    def num_updates(self) -> int:
        """Optimizer updates so far (kept in a `tf.Variable` the compiled steps advance)."""
        variable = self.__dict__.get("_num_updates")
        return self._initial_updates if variable is None else int(variable.numpy())

    @num_updates.setter
    def num_updates(self, value: int) -> None:
        variable = self.__dict__.get("_num_updates")
        if variable is None:
            self._initial_updates = int(value)
        else:
            variable.assign(int(value))

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.model_weights.get_weights()

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        self._check_weights(weights, self._weight_shapes)
        self.model_weights.set_weights(dict(weights))

    def get_target_weights(self) -> dict[str, np.ndarray]:
        self._target("read target weights")
        return self.target_weights.get_weights()

    @_placed
    def update_target(self, tau: float = 1.0) -> None:
        self._target("update the target network")
        _check_tau(tau)
        if self.__dict__.get("_update_target_fn") is None:
            # One compiled step for every variable: eager assigns cost ~0.1 ms each, which
            # SAC and TD3, moving the target after every update, would pay per variable.
            pairs = [(self.target_weights.params[name], self.model_weights.params[name])
                     for name in self.model_weights.names]

            def move(fraction: tf.Tensor) -> None:
                for variable, source in pairs:
                    variable.assign(variable + fraction * (source - variable))

            self._update_target_fn = tf.function(
                move, input_signature=[tf.TensorSpec((), tf.float32)])
        self._update_target_fn(tf.constant(float(tau), tf.float32))

    def _weights_view(self, model: Any) -> Any:
        return model_weights(model)

    def _to_framework(self, array: np.ndarray) -> tf.Tensor:
        return tf.convert_to_tensor(np.asarray(array))


    def get_state(self) -> dict[str, Any]:
        groups = [self._group_state(index) for index in range(len(self.optimizer_groups))]
        optimizer: dict[str, Any] = groups[0]
        if self._grouped:
            optimizer = {"groups": {g.name: state for g, state in
                                    zip(self.optimizer_groups, groups)},
                         "num_updates": self.num_updates}
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
        group = self.optimizer_groups[index]
        step = int(self._group_steps[index].numpy())
        moments = bool(step) and group.optimizer == "adam"
        pairs = list(zip(group.weight_names, group.indices))
        return {
            "step": step if group.optimizer == "adam" else 0,
            "lr": float(self._group_lrs[index].numpy()),
            "exp_avg": {n: self._adam_m[i].numpy().copy() for n, i in pairs} if moments else {},
            "exp_avg_sq": {n: self._adam_v[i].numpy().copy() for n, i in pairs} if moments
            else {},
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.set_weights(state["weights"])
        self.set_filter_state(state.get("observation_filter"))
        for index, saved in enumerate(self._group_states(state["optimizer"])):
            group = self.optimizer_groups[index]
            self._set_group_lr(index, float(saved["lr"]))
            self._group_steps[index].assign(float(saved["step"]))
            for name, position in zip(group.weight_names, group.indices):
                m, v = self._adam_m[position], self._adam_v[position]
                if saved["step"] and group.optimizer == "adam":
                    m.assign(np.asarray(saved["exp_avg"][name], np.float32))
                    v.assign(np.asarray(saved["exp_avg_sq"][name], np.float32))
                else:
                    m.assign(tf.zeros_like(m))
                    v.assign(tf.zeros_like(v))
        self.on_global_var_update({"timestep": int(state["global_timestep"])})
        if "num_updates" in state:
            self.num_updates = int(state["num_updates"])
        for name, value in state["coefficients"].items():
            self.set_coefficient(name, value)
        if self.target_model is not None and "target_weights" in state:
            self._check_weights(state["target_weights"], self._weight_shapes)
            self.target_weights.set_weights(dict(state["target_weights"]))
