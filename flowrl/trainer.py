"""Trainer and run(): drive a plan, report results, evaluate, checkpoint.

The Trainer is the sink outside the plan: it pulls items from the plan's output iterator and
turns the shared metrics, the workers' finished episodes and the learner statistics into one
result dict per `train()` call. Plans stay composable because none of this lives in them.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import gymnasium

from flowrl import checkpoint, preflight
from flowrl.config import from_dict
from flowrl.env import env_label, get_env_creator, module_to_import
from flowrl.iter.errors import FlowError
from flowrl.iter.executor import init
from flowrl.ops import (
    DEFAULT_POLICY_ID,
    STEPS_SAMPLED_COUNTER,
    STEPS_TRAINED_COUNTER,
    StoreToReplay,
    TrainResult,
)
from flowrl.ops.learner_thread import stop_learner_threads
from flowrl.plans import get_algorithm
from flowrl.plans.multiagent import plan_for, resolve_policies
from flowrl.policy import EpsilonGreedy, policy_class
from flowrl.reporting import (
    STOP_KEYS,
    DivergenceMonitor,
    format_progress,
    should_stop,
    validate_stop,
)
from flowrl.run_records import RunDirInUseError, RunRecorder, default_run_dir
from flowrl.workers import WorkerSet
from flowrl.workers.callbacks import make_callbacks, summarize_custom_metrics
from flowrl.workers.multi_agent import (
    PolicyReturnTracker,
    checkpoint_ready_config,
    learner_policy_state,
    restore_learner_policy_state,
)
from flowrl.workers.worker_set import summarize_episodes

PlanFn = Callable[[WorkerSet, Any], Any]
logger = logging.getLogger(__name__)


class Trainer:
    """Runs one algorithm's plan on a set of rollout workers.

    ```python
    trainer = flowrl.Trainer("ppo", env="CartPole-v1", config={"num_workers": 1})
    for _ in range(10):
        result = trainer.train()          # one iteration
    path = trainer.save("checkpoints")    # weights, optimizer, counters, operator metrics
    trainer.stop()
    ```

    Args:
        algo: a built-in algorithm name (`flowrl.list_algorithms()`); its config class,
            policy and default plan are used.
        env: a gymnasium id or a name given to `flowrl.register_env`; or the env itself, a
            `gymnasium.Env` subclass or a function `env_config -> env` (see
            `flowrl.env.get_env_creator`).
        config: overrides of the algorithm's config (dict; validated, unknown keys rejected),
            or an instance of the algorithm's config class.
        plan: your own plan `(workers, config) -> iterator`, replacing the built-in one.
        local_mode: run everything in this process (debuggable with pdb). None keeps the
            executor `flowrl.init` chose, or starts Ray if none was chosen.
        address: a Ray cluster to join (ignored in local mode).
        log_dir: if given, every `train()` writes the run records there (`params.json`,
            `result.json`, `progress.csv`, TensorBoard events; see `flowrl.run_records`).
        checkpoint_freq: with `log_dir`, save a checkpoint there every this many iterations
            (0 = never), keeping the `keep_checkpoints_num` most recent.
        checkpoint_score_attr: keep the `keep_checkpoints_num` best periodic checkpoints by
            this result key instead (`min-<key>`: the lowest), and the latest one.
    """

    _plan_error: BaseException | None = None
    """The error the plan raised, if any; a plan iterator cannot go on after one."""
    _viewer: Any = None
    """The live plan viewer (`serve_viewer`), published to after every `train()`."""
    _stopped: bool = False
    """`stop()` released the workers: every later call but `stop()` raises."""

    def __init__(self, algo: str, env: str | type | Callable,
                 config: Mapping[str, Any] | Any = None, plan: PlanFn | None = None, *,
                 local_mode: bool | None = None, address: str | None = None,
                 log_dir: str | None = None,
                 checkpoint_freq: int = 0, keep_checkpoints_num: int = 3,
                 checkpoint_score_attr: str | None = None) -> None:
        self.spec = get_algorithm(algo)
        if isinstance(config, self.spec.config_class):
            self.config = config
        else:
            self.config = from_dict(self.spec.config_class, config)
        # Built first, so a bad `callbacks` is an error before anything starts.
        self._callbacks = make_callbacks(self.config.callbacks)
        self.env_name = env_label(env)
        env_creator = get_env_creator(env, atari_preprocessing=self.config.atari_preprocessing)
        # Everything the config, the env's spaces and the machine can tell, before Ray starts.
        preflight.check_env_spaces(self.spec, self.config, env_creator, self.env_name)
        preflight.check_machine(self.config, local_mode=local_mode, address=address)
        self.recorder = None if log_dir is None else RunRecorder(
            log_dir, self.config.to_dict(), checkpoint_freq=checkpoint_freq,
            keep_checkpoints_num=keep_checkpoints_num,
            checkpoint_score_attr=checkpoint_score_attr)
        try:
            self._start(env_creator, plan, local_mode=local_mode, address=address)
        except BaseException:
            if self.recorder is not None:
                self.recorder.discard()  # a failed start leaves no run directory behind
            raise
        self._plan_iter: Any = None
        self.iteration = 0
        self._time_total = 0.0
        self._episodes: collections.deque[tuple[float, int]] = collections.deque(
            maxlen=self.config.metrics_num_episodes_for_smoothing)
        self._last_steps_sampled = 0
        self._policy_returns = PolicyReturnTracker(
            self.workers.multi_agent.policy_ids if self.workers.multi_agent else [],
            maxlen=self.config.metrics_num_episodes_for_smoothing)
        action_space = getattr(getattr(self.workers.local_worker(), "policy", None),
                               "action_space", None)
        self._divergence = DivergenceMonitor(
            discrete_actions=isinstance(action_space, gymnasium.spaces.Discrete))

    def _start(self, env_creator: Any, plan: PlanFn | None, *, local_mode: bool | None,
               address: str | None) -> None:
        """Starts the executor (Ray, unless in local mode), the workers and the plan."""
        policies = resolve_policies(self.config, self.spec)
        # A mix of algorithms trains through the composed plan (checked before Ray starts).
        self._plan_fn = plan or plan_for(self.spec, self.config, policies)
        # Importing the framework (seconds) overlaps with Ray's start-up (seconds).
        preload = _preload_policy_class(self.config.framework)
        with _keep_sigterm_handler():
            if local_mode is not None:
                init(local_mode=local_mode, address=address)
            preload.join()
            self.workers = WorkerSet(env_creator=env_creator, policy_spec=self.spec.policy,
                                     config=self.config, policies=policies)
        try:
            self.plan = self._plan_fn(self.workers, self.config)
            _check_plan_output(self.plan, self._plan_fn)
        except BaseException:
            self.workers.stop()
            raise

    # --- training ---------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Runs the plan for one iteration and returns the result dict.

        One iteration pulls plan outputs until both `min_steps_per_iteration` env steps and
        `min_time_s_per_iteration` seconds have passed (at least one output).
        """
        self._check_not_stopped("train")
        start = time.perf_counter()
        counters = self.metrics.counters
        steps_at_start = counters[STEPS_SAMPLED_COUNTER]
        learner_stats: dict[str, dict[str, float]] = {}
        while True:
            output = self._next_plan_output()
            if isinstance(output, TrainResult):
                learner_stats.update(output.learner_stats)
            elapsed = time.perf_counter() - start
            stepped = counters[STEPS_SAMPLED_COUNTER] - steps_at_start
            if (stepped >= self.config.min_steps_per_iteration
                    and elapsed >= self.config.min_time_s_per_iteration):
                break
        self.iteration += 1
        self._time_total += time.perf_counter() - start
        if self.config.observation_filter != "NoFilter":
            self.workers.sync_observation_filters()  # every worker normalizes alike
        result = self._result(learner_stats, time.perf_counter() - start)
        interval = self.config.evaluation_interval
        if interval and self.iteration % interval == 0:  # reaches every record below
            result.update(self.evaluate())
        findings = self._divergence.check(result)
        if findings:  # each once: the metric, its value and the iteration
            result["divergence"] = findings
            for message in findings:
                logger.warning(message)
        if self.recorder is not None:
            self.recorder.record(result, self)
        if self._viewer is not None:
            self._viewer.publish(self.plan_graph(), result)
        return result

    def serve_viewer(self, port: int | None = None) -> str:
        """Serves the live plan viewer on 127.0.0.1 and returns its URL (a free port unless
        `port` is given). The page follows this trainer: every `train()` publishes the plan's
        per-operator rates, the learning curve and the result (see `flowrl.viz.live`); it
        stops with `stop()`. Calling it again returns the same URL."""
        self._check_not_stopped("serve_viewer")
        if self._viewer is None:
            from flowrl.viz.live import LiveViewer

            self._viewer = LiveViewer(f"{self.spec.name} on {self.env_name}", port=port)
            self._viewer.publish(self.plan_graph())
            logger.debug("Live plan viewer at %s", self._viewer.url)
        return self._viewer.url

    def _next_plan_output(self) -> Any:
        """The plan's next output. After the plan raised once, every later call raises a
        FlowError naming that first error: a failed plan iterator cannot go on."""
        if self._plan_error is not None:
            raise _plan_failed_earlier(self._plan_error, self.plan) from self._plan_error
        if self._plan_iter is None:
            self._plan_iter = iter(self.plan)
        try:
            return next(self._plan_iter)
        except StopIteration:
            ended = RuntimeError(
                f"The plan ended after {self.iteration} iterations: its output iterator has no "
                f"more items. A training plan must produce outputs forever; check that its "
                f"sources repeat (e.g. ParallelRollouts) instead of reading a finite list.")
            self._plan_error = ended
            raise ended from None
        except BaseException as error:
            self._plan_error = error
            raise

    @property
    def metrics(self) -> Any:
        """The plan's shared metrics context (counters, timers, info)."""
        return self.plan.shared_metrics.get()

    def _result(self, learner_stats: dict, time_this_iter: float) -> dict[str, Any]:
        new_episodes = self.workers.collect_episode_stats()
        self._episodes.extend(new_episodes)
        counters = self.metrics.counters
        steps_total = int(counters[STEPS_SAMPLED_COUNTER])
        steps_this_iter = steps_total - self._last_steps_sampled
        self._last_steps_sampled = steps_total
        result: dict[str, Any] = summarize_episodes(list(self._episodes))
        result.update(
            episodes_this_iter=len(new_episodes),
            timesteps_total=steps_total,
            timesteps_this_iter=steps_this_iter,
            num_steps_trained=int(counters[STEPS_TRAINED_COUNTER]),
            training_iteration=self.iteration,
            time_this_iter_s=time_this_iter,
            time_total_s=self._time_total,
            env_steps_per_s=steps_this_iter / max(time_this_iter, 1e-9),
            num_healthy_workers=self.workers.num_healthy_workers,
            num_worker_restarts=self.workers.num_worker_restarts,
            info={"learner": _to_floats(learner_stats),
                  "counters": {k: int(v) for k, v in counters.items()},
                  "timers": {k: _timer_summary(t) for k, t in self.metrics.timers.items()},
                  **self.metrics.info},
            ops=self.plan.stats(),
        )
        if self.workers.multi_agent:  # per-policy returns: policy_reward_mean/<policy id>
            self._policy_returns.extend(self.workers.pop_policy_episode_returns())
            result.update(self._policy_returns.summary())
        for policy_id, epsilon in self._epsilons(steps_total).items():
            result["info"]["learner"].setdefault(policy_id, {})["cur_epsilon"] = epsilon
        if self._callbacks is not None:  # custom metrics, then the user's own additions
            result["custom_metrics"] = summarize_custom_metrics(
                self.workers.collect_custom_metrics())
            self._callbacks.on_train_result(trainer=self, result=result)
        return result

    def _epsilons(self, steps_sampled: int) -> dict[str, float]:
        """Policy id -> the epsilon its epsilon-greedy schedule gives after `steps_sampled`
        env steps (DQN's exploration; the rollout workers act with it)."""
        worker = self.workers.local_worker()
        if self.workers.multi_agent:
            policies = {pid: worker.get_policy(pid) for pid in self.workers.multi_agent.policy_ids}
        else:
            policies = {DEFAULT_POLICY_ID: getattr(worker, "policy", None)}
        epsilons = {}
        for policy_id, policy in policies.items():
            selector = getattr(policy, "action_selector", None)
            if not isinstance(selector, EpsilonGreedy):
                continue
            decay = selector.decay_timesteps
            fraction = min(1.0, steps_sampled / decay) if decay > 0 else 1.0
            epsilons[policy_id] = float(selector.initial_epsilon + fraction * (
                selector.final_epsilon - selector.initial_epsilon))
        return epsilons

    # --- evaluation and acting --------------------------------------------------------------

    def evaluate(self) -> dict[str, Any]:
        """Runs `evaluation_num_episodes` episodes without exploration on the learner's policy."""
        self._check_not_stopped("evaluate")
        episodes = self.workers.local_worker().evaluate(
            self.config.evaluation_num_episodes, seed=self.config.seed)
        stats = summarize_episodes(episodes)
        stats["episodes"] = len(episodes)
        return {"evaluation": stats}

    def compute_single_action(self, obs: Any, state: list[Any] | None = None,
                              explore: bool = False, *, policy_id: str | None = None,
                              prev_action: Any = None, prev_reward: float | None = None) -> Any:
        """The learner policy's action for one raw observation.

        A stateless policy returns the action. A recurrent one returns `(action, state_out,
        extras)`: pass `state=None` at an episode's first step (its `initial_state()`) and the
        returned `state_out` at the next, e.g. ``action, state, _ =
        trainer.compute_single_action(obs, state)``; a model that reads the previous action
        and reward (`lstm_use_prev_action` / `lstm_use_prev_reward`) also takes the previous
        step's `prev_action` and env `prev_reward` (None at an episode's first step).
        `policy_id` picks one policy of a multi-agent run.
        """
        self._check_not_stopped("compute_single_action")
        policy = self.get_policy(policy_id)
        if isinstance(state, bool):  # 0.2's positional explore
            state, explore = None, state
        action, state_out, extras = policy.compute_single_action(
            obs, state, explore=explore, prev_action=prev_action, prev_reward=prev_reward)
        return (action, state_out, extras) if policy.initial_state() else action

    def get_policy(self, policy_id: str | None = None) -> Any:
        """The learner's policy (the local worker's); `policy_id` picks one of several
        policies of a multi-agent run."""
        worker = self.workers.local_worker()
        return worker.policy if policy_id is None else worker.get_policy(policy_id)

    def plan_graph(self, *, internals: bool = False) -> Any:
        """The plan as a networkx DiGraph, annotated with per-operator statistics; each
        operator as the plan calls it, or every engine node with `internals=True`."""
        return self.plan.graph(internals=internals)

    # --- checkpoints ------------------------------------------------------------------------

    def save(self, checkpoint_dir: str) -> str:
        """Writes a checkpoint under `checkpoint_dir` and returns its path.

        The checkpoint holds no pickle: arrays (weights, optimizer state) in `arrays.npz`,
        everything else in `checkpoint.json` (see `flowrl.checkpoint`). Writing is atomic, also
        over an existing checkpoint: after a crash at any moment the path holds the previous
        complete checkpoint or the new one.
        """
        self._check_not_stopped("save")
        path = os.path.join(checkpoint_dir, f"checkpoint_{self.iteration:06d}")
        state = {
            "algo": self.spec.name,
            "env": self.env_name,
            "env_source": checkpoint.describe_env_source(self.workers.env_creator),
            "config": checkpoint_ready_config(self.config.to_dict()),
            "iteration": self.iteration,
            "time_total_s": self._time_total,
            "episodes": [list(episode) for episode in self._episodes],
            "last_steps_sampled": self._last_steps_sampled,
            "policy_state": learner_policy_state(self.workers.local_worker()),
            "metrics": self.metrics.save(),
            "op_stats": [list(entry) for entry in self.plan.stats_state()],
        }
        if getattr(self.config, "store_buffer_in_checkpoints", False):
            state["replay_buffers"] = [store.replay_state() for store in self._replay_stores()]
        return checkpoint.write_checkpoint(path, state)

    def _replay_stores(self) -> list[StoreToReplay]:
        """The plan's `StoreToReplay` operators: each names the replay memory it fills."""
        return self.plan.operators(StoreToReplay)

    @classmethod
    def from_checkpoint(cls, checkpoint_path: str, *, local_mode: bool | None = True,
                        config: Mapping[str, Any] | None = None,
                        env_module: str | None = None, env: str | type | Callable | None = None,
                        trust_checkpoint: bool = False) -> Trainer:
        """A trainer rebuilt from a checkpoint's algorithm, env and config, then restored.

        The rebuilt plan may have another shape than the one that wrote the checkpoint (other
        `num_workers`, local mode instead of Ray): weights, optimizer state and counters always
        restore; per-operator statistics only where the operators match.

        Args:
            checkpoint_path: a path returned by `save`.
            local_mode: where the rebuilt trainer runs (in-process by default).
            config: overrides on top of the saved config (e.g. `{"num_workers": 0}`).
            env_module: a module name or `.py` path to import first, for a checkpoint of a
                custom env: the module whose `flowrl.register_env` call registers it.
            env: the env to run in, instead of the one the checkpoint names.
            trust_checkpoint: allow the checkpoint's env name to import the module it names
                (`module:EnvId`). Off, such a name is refused unless that module is imported
                already (e.g. by `env_module`) or `env` is given: restoring a checkpoint never
                runs code that the checkpoint chose.

        Raises:
            CheckpointTrustError: the checkpoint's env name would import a module.
        """
        state = _read_checkpoint(checkpoint_path)
        if env_module is not None:
            checkpoint.import_env_module(env_module)
        if not trust_checkpoint:
            _refuse_module_imports(state, checkpoint_path, env_given=env is not None,
                                   overrides=config or {})
        env = state["env"] if env is None else env
        _check_env_available({**state, "env": env})
        trainer = cls(state["algo"], env=env, config={**state["config"], **(config or {})},
                      local_mode=local_mode)
        try:
            trainer._restore_state(state, checkpoint_path)
        except BaseException:
            trainer.stop()  # release its workers: the caller never gets this trainer
            raise
        return trainer

    def restore(self, checkpoint_path: str) -> None:
        """Loads a checkpoint written by `save` and sends the weights to every worker.

        Never runs code from the checkpoint. Per-operator statistics restore where this plan's
        operators match the saved ones and are skipped (with one log line) where they do not.
        """
        self._check_not_stopped("restore")
        self._restore_state(_read_checkpoint(checkpoint_path), checkpoint_path)

    def _restore_state(self, state: dict[str, Any], checkpoint_path: str) -> None:
        if state["algo"] != self.spec.name:
            raise ValueError(f"Checkpoint {checkpoint_path!r} is for {state['algo']!r}, this "
                             f"trainer runs {self.spec.name!r}. Use Trainer.from_checkpoint "
                             f"to rebuild the algorithm the checkpoint was written by.")
        restore_learner_policy_state(self.workers.local_worker(), state["policy_state"])
        self.metrics.restore(state["metrics"])
        self._restore_operator_stats(state["op_stats"], checkpoint_path)
        self._restore_replay_buffers(state.get("replay_buffers"), checkpoint_path)
        self.iteration = int(state["iteration"])
        self._time_total = float(state["time_total_s"])
        self._episodes.clear()
        self._episodes.extend((float(ret), int(length)) for ret, length in state["episodes"])
        self._last_steps_sampled = int(state["last_steps_sampled"])
        self.workers.sync_weights()
        if self.config.observation_filter != "NoFilter":
            self.workers.sync_observation_filters()  # the restored statistics, everywhere

    def _restore_replay_buffers(self, saved: list[list[dict]] | None, checkpoint_path: str
                                ) -> None:
        """Refills the replay memory from a checkpoint saved with store_buffer_in_checkpoints
        (a checkpoint without buffers leaves them empty, as they start)."""
        if saved is None:
            return
        stores = self._replay_stores()
        if len(saved) != len(stores):
            raise ValueError(
                f"Checkpoint {checkpoint_path!r} holds {len(saved)} replay memories, but this "
                f"plan stores into {len(stores)}; restore it into the plan (algorithm and "
                "policies) that wrote it.")
        for store, states in zip(stores, saved):
            store.restore_replay_state(states)

    def _restore_operator_stats(self, saved: list[list[Any]], checkpoint_path: str) -> None:
        saved_entries = [tuple(entry) for entry in saved]
        saved_labels = [entry[0] for entry in saved_entries]
        labels = [entry[0] for entry in self.plan.stats_state()]
        if saved_labels == labels:
            self.plan.restore_stats(saved_entries)
            return
        logger.info(
            "Per-operator statistics in %s were not restored: they come from a plan of another "
            "shape (saved %s, this plan has %s); they start from zero. Weights, optimizer state "
            "and counters were restored.", checkpoint_path, saved_labels, labels)

    def stop(self) -> None:
        """Releases the workers (kills remote actors, closes envs) and closes the run records
        and the live viewer. Idempotent; every other call on a stopped trainer raises."""
        if self._stopped:
            return
        self._stopped = True
        if self._viewer is not None:
            self._viewer.close()
            self._viewer = None
        if self.recorder is not None:
            self.recorder.close()
        stop_learner_threads(self.workers)
        self.workers.stop()


    def _check_not_stopped(self, call: str) -> None:
        if self._stopped:
            raise RuntimeError(
                f"Trainer.{call}() was called after stop(): this trainer was stopped and its "
                f"workers are released ({self.spec.name} on {self.env_name!r}, "
                f"iteration={self.iteration}). Build a new Trainer to go on, e.g. from a "
                f"checkpoint saved before stop(): Trainer.from_checkpoint(path).")


@contextlib.contextmanager
def _keep_sigterm_handler() -> Iterator[None]:
    """Keeps a SIGTERM handler the process installed (the CLI's, which turns SIGTERM into a
    checkpoint and a clean exit) when Ray's start replaces it by its own `sys.exit`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(before) and signal.getsignal(signal.SIGTERM) is not before:
            signal.signal(signal.SIGTERM, before)


def _preload_policy_class(framework: str) -> threading.Thread:
    """Imports the framework's policy class in a background thread; join it before use. The
    import is cached, so building policies later does not pay for it again."""

    def preload() -> None:
        policy_class(framework)
        if framework == "torch":
            # The first torch optimizer imports torch._dynamo (over a second); do it now.
            importlib.import_module("torch._dynamo")

    thread = threading.Thread(target=preload, daemon=True)
    thread.start()
    return thread


_CHECKPOINT_KEYS = ("algo", "env", "config", "iteration", "time_total_s", "episodes",
                    "last_steps_sampled", "policy_state", "metrics", "op_stats")


def _read_checkpoint(checkpoint_path: str) -> dict[str, Any]:
    """A trainer checkpoint's state (see `flowrl.checkpoint.read_checkpoint`), checked for the
    keys `Trainer.save` writes. A directory of checkpoints (a run directory, Tune's
    `best.checkpoint`) means its latest one. Staging directories that a save killed midway
    left beside the checkpoint are removed."""
    checkpoint_path = checkpoint.find_checkpoint(checkpoint_path)
    with contextlib.suppress(OSError):  # a read-only checkpoint directory still restores
        checkpoint.remove_stale_staging(os.path.dirname(os.path.abspath(checkpoint_path)))
    state = checkpoint.read_checkpoint(checkpoint_path)
    missing = [key for key in _CHECKPOINT_KEYS if key not in state]
    if missing:
        raise checkpoint.CheckpointError(
            f"{checkpoint_path!r} is a flowrl checkpoint but not a Trainer's: it lacks "
            f"{missing}. Pass a path Trainer.save() returned.")
    return state


class CheckpointTrustError(ValueError):
    """A checkpoint's env name would import a module, which restoring never does unasked."""


def _refuse_module_imports(state: Mapping[str, Any], checkpoint_path: str, *, env_given: bool,
                           overrides: Mapping[str, Any]) -> None:
    """Raises CheckpointTrustError when rebuilding the checkpoint's trainer would import a
    module the checkpoint names: its env (`module:EnvId`) unless the caller names the env, or
    a `model.custom_model` path (`module:Class`, also of its policies) unless the caller's
    config overrides the model."""
    if not env_given:
        module = module_to_import(state["env"])
        if module is not None:
            raise CheckpointTrustError(
                f"Checkpoint {checkpoint_path!r} names its env {state['env']!r}, and building "
                f"that env would import the module {module!r}, running its code; flowrl does "
                f"not import modules a checkpoint names. If you trust this checkpoint, allow "
                f"it: Trainer.from_checkpoint(path, trust_checkpoint=True) or `flowrl rollout "
                f"CHECKPOINT --trust-checkpoint`. Or name the env yourself: "
                f"env={state['env']!r} (`--env {state['env']}`), or import the module first: "
                f"env_module={module!r} (`--env-module {module}`).")
    config = state.get("config", {})
    callbacks = config.get("callbacks")
    module = module_to_import(callbacks) if isinstance(callbacks, str) else None
    if module is not None and "callbacks" not in overrides:
        raise CheckpointTrustError(
            f"Checkpoint {checkpoint_path!r} names callbacks={callbacks!r}, and building them "
            f"would import the module {module!r}, running its code; flowrl does not import "
            f"modules a checkpoint names. If you trust this checkpoint, allow it: "
            f"Trainer.from_checkpoint(path, trust_checkpoint=True) or `flowrl rollout "
            f"CHECKPOINT --trust-checkpoint`; or pass config={{'callbacks': ...}} yourself.")
    if "model" in overrides:
        return
    models = [("model", config.get("model", {}))] + [
        (f"policies[{pid!r}].config.model", entry.get("config", {}).get("model", {}))
        for pid, entry in (config.get("policies") or {}).items() if isinstance(entry, dict)]
    for where, model in models:
        path = model.get("custom_model") if isinstance(model, dict) else None
        module = module_to_import(path) if isinstance(path, str) else None
        if module is not None:
            raise CheckpointTrustError(
                f"Checkpoint {checkpoint_path!r} names {where}.custom_model={path!r}, and "
                f"building that model would import the module {module!r}, running its code; "
                f"flowrl does not import modules a checkpoint names. If you trust this "
                f"checkpoint, allow it: Trainer.from_checkpoint(path, trust_checkpoint=True) "
                f"or `flowrl rollout CHECKPOINT --trust-checkpoint`; or import {module!r} "
                f"yourself first (env_module={module!r}, `--env-module {module}`).")


def _check_env_available(state: Mapping[str, Any]) -> None:
    """Raises a ValueError saying how to make a checkpoint's custom env available here."""
    try:
        get_env_creator(state["env"])
    except ValueError:
        source = state.get("env_source")
        if not source:
            raise
        raise ValueError(
            f"The checkpoint's env {state['env']!r} is a custom env, registered by "
            f"{source['module']}.{source['name']}, and is not registered in this process. "
            f"Import the module that calls flowrl.register_env({state['env']!r}, ...) first: "
            f"`flowrl rollout CHECKPOINT --env-module {source['module']}` (a module name or a "
            f".py path), or Trainer.from_checkpoint(path, env_module="
            f"{source['module']!r}).") from None


def _plan_failed_earlier(error: BaseException, plan: Any) -> FlowError:
    """The error a `train()` call raises after an earlier one failed; names that failure."""
    first_line = (str(error).splitlines() or [""])[0]
    return FlowError(
        operator="Trainer.train",
        lineage=repr(plan),
        shard=None,
        original_type=type(error).__name__,
        original_message=(
            f"{first_line} -- raised by an earlier train() call; the plan stopped there and "
            f"cannot go on. Build a new Trainer (restore a checkpoint into it to resume)."),
        remote_traceback="".join(traceback.format_exception(error)),
    )


def _to_floats(stats: dict) -> dict:
    return {k: _to_floats(v) if isinstance(v, dict) else float(v) for k, v in stats.items()}


def _timer_summary(timer: Any) -> dict[str, float]:
    return {"mean_s": float(timer.mean), "count": int(timer.count)}


def build_plan_preview(algo: str, env: str, config: Mapping[str, Any] | None = None) -> Any:
    """Builds an algorithm's plan in local mode without running it (for `flowrl plan`)."""
    init(local_mode=True)
    trainer = Trainer(algo, env=env, config=config)
    return trainer.plan


def run(algo: str, env: str | type | Callable, config: Mapping[str, Any] | Any = None,
        stop: Mapping[str, float] | None = None, local_mode: bool = False,
        checkpoint_dir: str | None = None, verbose: int = 1, address: str | None = None,
        restore: str | None = None, plan: PlanFn | None = None, log_dir: str | None = None,
        checkpoint_freq: int = 10, keep_checkpoints_num: int = 3, viewer: bool = False,
        viewer_port: int | None = None, stop_on_divergence: bool = False,
        checkpoint_score_attr: str | None = None) -> dict[str, Any]:
    """Trains `algo` on `env` until a stop criterion is met; returns the last result.

    Every run writes its records (`flowrl.run_records`) into a run directory, printed at start
    and returned under the result key `log_dir`.

    Args:
        algo: a built-in algorithm name, e.g. "ppo".
        env: a gymnasium id or a registered env name; or a `gymnasium.Env` subclass
            (built with the run's `env_config`) or a function `env_config -> env`.
        config: overrides of the algorithm's config.
        stop: criteria, any of which ends training: `episode_reward_mean` (at least),
            `timesteps_total`, `training_iteration`, `time_total_s` (at least).
        local_mode: run in this process only (no Ray).
        checkpoint_dir: if given, a final checkpoint is saved there (also when training is
            interrupted with Ctrl-C) and its path returned under the result key `checkpoint`.
        verbose: 0 silent, 1 one progress line per iteration.
        address: a Ray cluster to join.
        restore: a checkpoint path to resume from.
        plan: your own plan function instead of the built-in one.
        log_dir: the run directory; default `results/<algo>_<env>_<timestamp>`.
        checkpoint_freq: save a checkpoint in the run directory every this many iterations
            (0 = never), keeping the `keep_checkpoints_num` most recent.
        checkpoint_score_attr: keep the `keep_checkpoints_num` best periodic checkpoints by
            this result key instead (e.g. "episode_reward_mean"; "min-<key>" keeps the
            lowest), and the latest; the best is returned under the result key
            `best_checkpoint`.
        viewer: serve the live plan viewer on 127.0.0.1 while training and print its URL
            (`Trainer.serve_viewer`); `viewer_port` picks its port (default: a free one).
        stop_on_divergence: end the run (with its final checkpoint) at the first iteration
            whose result reports divergence (exploding losses or gradients, collapsed entropy;
            `flowrl.reporting.DivergenceMonitor`); either way each finding is logged once.

    Everything checkable before training is checked before Ray starts: the config, the
    env's spaces against the algorithm, CPUs and GPUs, the restore checkpoint's algorithm,
    that `checkpoint_dir` and `log_dir` can be written and that `viewer_port` is free. A run
    that fails before its first iteration leaves no run directory behind. The run ends with
    a checkpoint: in `checkpoint_dir` if given, else in the run directory (when
    `checkpoint_freq` > 0), also for a run shorter than `checkpoint_freq` iterations.

    Raises:
        TrainingInterrupted: on Ctrl-C; its `checkpoint` is the checkpoint saved on the way
            out (in `checkpoint_dir`, else the run directory), or None when none was saved.
        RestoreError: when `restore` is not a checkpoint this algorithm can resume from.
        RunDirInUseError: when `log_dir` holds another run's records.
    """
    stop = validate_stop(stop)
    name = get_algorithm(algo).name
    restore_state = _read_restore_state(restore, name) if restore else None
    preflight.check_writable_dir(checkpoint_dir, "checkpoint_dir")
    preflight.check_writable_dir(log_dir or "results", "log_dir")
    preflight.check_port_free(viewer_port)
    for attempt in range(_DEFAULT_RUN_DIR_TRIES):
        run_dir = log_dir or default_run_dir(name, env_label(env))
        try:
            trainer = Trainer(algo, env=env, config=config, plan=plan, local_mode=local_mode,
                              address=address, log_dir=run_dir, checkpoint_freq=checkpoint_freq,
                              keep_checkpoints_num=keep_checkpoints_num,
                              checkpoint_score_attr=checkpoint_score_attr)
            break
        except RunDirInUseError:  # a default name another run took in the same second
            if log_dir is not None or attempt == _DEFAULT_RUN_DIR_TRIES - 1:
                raise
    log_dir = run_dir
    recorded = False
    try:
        if verbose:
            print(f"Run records (params, progress.csv, result.json, TensorBoard, checkpoints) "
                  f"in {log_dir}", flush=True)
        if viewer or viewer_port is not None:
            url = trainer.serve_viewer(viewer_port)
            print(f"Live plan viewer: {url} (open it in a browser; it updates every "
                  f"iteration)", flush=True)
        if restore_state is not None:
            _restore_for_run(trainer, restore_state, restore)
        start = time.perf_counter()
        with _save_on_interrupt(trainer, checkpoint_dir or log_dir):
            while True:
                result = trainer.train()
                recorded = True
                result["wall_time_s"] = time.perf_counter() - start
                result["log_dir"] = log_dir
                if verbose:
                    print(format_progress(result), flush=True)
                if should_stop(result, stop):
                    break
                if stop_on_divergence and result.get("divergence"):
                    if verbose:
                        print("Stopping: the run diverged (stop_on_divergence).", flush=True)
                    break
        _save_at_the_end(trainer, result, checkpoint_dir)
        return result
    except BaseException:
        if not recorded and trainer.recorder is not None:
            trainer.recorder.discard()  # nothing was recorded: leave no run directory behind
        raise
    finally:
        trainer.stop()


_DEFAULT_RUN_DIR_TRIES = 5
"""Default run directory names tried when runs started in the same second race for one."""


@contextlib.contextmanager
def _save_on_interrupt(trainer: Trainer, checkpoint_dir: str) -> Iterator[None]:
    """On Ctrl-C (or SIGTERM through the CLI) anywhere in the training loop: a checkpoint of
    the last finished iteration, then TrainingInterrupted naming it."""
    try:
        yield
    except KeyboardInterrupt as interrupt:
        saved = trainer.save(checkpoint_dir) if trainer.iteration > 0 else None
        raise TrainingInterrupted(saved) from interrupt


def _save_at_the_end(trainer: Trainer, result: dict[str, Any], checkpoint_dir: str | None
                     ) -> None:
    """The final checkpoint, under the result key `checkpoint`: into `checkpoint_dir`, else
    into the run directory unless periodic checkpoints are off or this iteration had one."""
    recorder = trainer.recorder
    if checkpoint_dir:
        result["checkpoint"] = trainer.save(checkpoint_dir)
    elif recorder is not None and recorder.checkpoint_freq:
        if trainer.iteration % recorder.checkpoint_freq or not recorder.checkpoints:
            recorder.save_checkpoint(trainer)
        result["checkpoint"] = recorder.checkpoints[-1]
    if recorder is not None and recorder.checkpoint_score_attr and recorder.checkpoints:
        result["best_checkpoint"] = recorder.best_checkpoint


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM through the CLI) stopped `run`; says whether a checkpoint was saved.

    Attributes:
        checkpoint: the path of the checkpoint saved on the way out, or None when none was
            (no iteration had finished, or saving was interrupted too).
    """

    def __init__(self, checkpoint: str | None) -> None:
        self.checkpoint = checkpoint
        saved = f"saved a checkpoint at {checkpoint}" if checkpoint else "no checkpoint was saved"
        super().__init__(f"Training interrupted; {saved}.")


class RestoreError(ValueError):
    """`run(restore=...)` named a checkpoint this run cannot resume from.

    Attributes:
        saved_algo: the algorithm the checkpoint was written by, when it is another one than
            the run's (None for any other reason).
    """

    def __init__(self, message: str, saved_algo: str | None = None) -> None:
        super().__init__(message)
        self.saved_algo = saved_algo


def _read_restore_state(path: str, algo_name: str) -> dict[str, Any]:
    """The checkpoint `run(restore=path)` resumes from, read and checked before anything
    starts."""
    try:
        state = _read_checkpoint(path)
    except (FileNotFoundError, ValueError) as error:
        raise RestoreError(str(error)) from None
    if state["algo"] != algo_name:
        raise RestoreError(
            f"Checkpoint {path!r} is for {state['algo']!r}, this run trains {algo_name!r}.",
            saved_algo=state["algo"])
    return state


def _restore_for_run(trainer: Trainer, state: dict[str, Any], path: str) -> None:
    try:
        trainer._restore_state(state, path)
    except (FileNotFoundError, ValueError) as error:
        raise RestoreError(str(error)) from None


def _check_plan_output(plan: Any, plan_fn: Any) -> None:
    """A plan function must return the plan's output iterator; says what it returned instead."""
    if hasattr(plan, "shared_metrics") and hasattr(plan, "__iter__"):
        return
    name = getattr(plan_fn, "__qualname__", repr(plan_fn))
    hint = " (did it forget a `return`?)" if plan is None else ""
    raise TypeError(
        f"The plan function {name} returned {plan!r} of type {type(plan).__name__}{hint}. A "
        f"plan is `plan(workers, config) -> LocalIterator`: it must return the iterator its "
        f"operators build, e.g. `return ParallelRollouts(workers).for_each(TrainOneStep(workers))`."
    )


__all__ = ["STOP_KEYS", "CheckpointTrustError", "RestoreError", "Trainer", "TrainingInterrupted",
           "build_plan_preview", "run"]
