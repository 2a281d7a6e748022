"""Trainer and run(): drive a plan, report results, evaluate, checkpoint.

The Trainer is the sink outside the plan: it pulls items from the plan's output iterator and
turns the shared metrics, the workers' finished episodes and the learner statistics into one
result dict per `train()` call. Plans stay composable because none of this lives in them.
"""

from __future__ import annotations

import collections
import importlib
import os
import pickle
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from flowrl.config import from_dict
from flowrl.env import get_env_creator
from flowrl.iter.executor import init
from flowrl.ops import (
    STEPS_SAMPLED_COUNTER,
    STEPS_TRAINED_COUNTER,
    TrainResult,
)
from flowrl.plans import get_algorithm, get_policy_class
from flowrl.reporting import STOP_KEYS, format_progress, should_stop, validate_stop
from flowrl.workers import WorkerSet
from flowrl.workers.worker_set import summarize_episodes

PlanFn = Callable[[WorkerSet, Any], Any]
_CHECKPOINT_FILE = "trainer_state.pkl"


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
        env: a gymnasium id or a name given to `flowrl.register_env`.
        config: overrides of the algorithm's config (dict; validated, unknown keys rejected),
            or an instance of the algorithm's config class.
        plan: your own plan `(workers, config) -> iterator`, replacing the built-in one.
        local_mode: run everything in this process (debuggable with pdb). None keeps the
            executor `flowrl.init` chose, or starts Ray if none was chosen.
        address: a Ray cluster to join (ignored in local mode).
    """

    def __init__(self, algo: str, env: str, config: Mapping[str, Any] | Any = None,
                 plan: PlanFn | None = None, *, local_mode: bool | None = None,
                 address: str | None = None) -> None:
        self.spec = get_algorithm(algo)
        if isinstance(config, self.spec.config_class):
            self.config = config
        else:
            self.config = from_dict(self.spec.config_class, config)
        self.env_name = env
        env_creator = get_env_creator(env)
        # Importing the framework (seconds) overlaps with Ray's start-up (seconds).
        preload = _preload_policy_class(self.spec.name, self.config.framework)
        if local_mode is not None:
            init(local_mode=local_mode, address=address)
        preload.join()
        policy_class = get_policy_class(self.spec.name, self.config.framework)
        self.workers = WorkerSet(env_creator=env_creator, policy_class=policy_class,
                                 config=self.config)
        self._plan_fn = plan or self.spec.plan
        self.plan = self._plan_fn(self.workers, self.config)
        self._plan_iter: Any = None
        self.iteration = 0
        self._time_total = 0.0
        self._episodes: collections.deque[tuple[float, int]] = collections.deque(
            maxlen=self.config.metrics_num_episodes_for_smoothing)
        self._last_steps_sampled = 0

    # --- training ---------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Runs the plan for one iteration and returns the result dict.

        One iteration pulls plan outputs until both `min_steps_per_iteration` env steps and
        `min_time_s_per_iteration` seconds have passed (at least one output).
        """
        start = time.perf_counter()
        counters = self.metrics.counters
        steps_at_start = counters[STEPS_SAMPLED_COUNTER]
        learner_stats: dict[str, dict[str, float]] = {}
        if self._plan_iter is None:
            self._plan_iter = iter(self.plan)
        while True:
            output = next(self._plan_iter)
            if isinstance(output, TrainResult):
                learner_stats.update(output.learner_stats)
            elapsed = time.perf_counter() - start
            stepped = counters[STEPS_SAMPLED_COUNTER] - steps_at_start
            if (stepped >= self.config.min_steps_per_iteration
                    and elapsed >= self.config.min_time_s_per_iteration):
                break
        self.iteration += 1
        self._time_total += time.perf_counter() - start
        return self._result(learner_stats, time.perf_counter() - start)

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
        return result

    # --- evaluation and acting --------------------------------------------------------------

    def evaluate(self) -> dict[str, Any]:
        """Runs `evaluation_num_episodes` episodes without exploration on the learner's policy."""
        episodes = self.workers.local_worker().evaluate(
            self.config.evaluation_num_episodes, seed=self.config.seed)
        stats = summarize_episodes(episodes)
        stats["episodes"] = len(episodes)
        return {"evaluation": stats}

    def compute_single_action(self, obs: Any, explore: bool = False) -> Any:
        """The learner policy's action for one raw observation."""
        action, _ = self.get_policy().compute_single_action(obs, explore=explore)
        return action

    def get_policy(self) -> Any:
        """The learner's policy (the local worker's)."""
        return self.workers.local_worker().policy

    def plan_graph(self) -> Any:
        """The plan as a networkx DiGraph, annotated with per-operator statistics."""
        return self.plan.graph()

    # --- checkpoints ------------------------------------------------------------------------

    def save(self, checkpoint_dir: str) -> str:
        """Writes a checkpoint under `checkpoint_dir` and returns its path.

        The checkpoint is written to a temporary directory and renamed into place, so it is
        either complete or absent, never torn.
        """
        os.makedirs(checkpoint_dir, exist_ok=True)
        final = os.path.join(checkpoint_dir, f"checkpoint_{self.iteration:06d}")
        state = {
            "algo": self.spec.name,
            "env": self.env_name,
            "config": self.config.to_dict(),
            "iteration": self.iteration,
            "time_total_s": self._time_total,
            "episodes": list(self._episodes),
            "last_steps_sampled": self._last_steps_sampled,
            "policy_state": self.get_policy().get_state(),
            "metrics": self.metrics.save(),
            "op_stats": self.plan.stats_state(),
        }
        staging = tempfile.mkdtemp(prefix=".checkpoint-", dir=checkpoint_dir)
        try:
            with open(os.path.join(staging, _CHECKPOINT_FILE), "wb") as f:
                pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
                f.flush()
                os.fsync(f.fileno())
            if os.path.exists(final):
                shutil.rmtree(final)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final

    @classmethod
    def from_checkpoint(cls, checkpoint_path: str, *, local_mode: bool | None = True,
                        config: Mapping[str, Any] | None = None) -> Trainer:
        """A trainer rebuilt from a checkpoint's algorithm, env and config, then restored.

        Args:
            checkpoint_path: a path returned by `save`.
            local_mode: where the rebuilt trainer runs (in-process by default).
            config: overrides on top of the saved config (e.g. `{"num_workers": 0}`).
        """
        state = _read_checkpoint(checkpoint_path)
        trainer = cls(state["algo"], env=state["env"], config={**state["config"], **(config or {})},
                      local_mode=local_mode)
        trainer.restore(checkpoint_path)
        return trainer

    def restore(self, checkpoint_path: str) -> None:
        """Loads a checkpoint written by `save` and sends the weights to every worker."""
        state = _read_checkpoint(checkpoint_path)
        if state["algo"] != self.spec.name:
            raise ValueError(f"Checkpoint is for {state['algo']!r}, this trainer runs "
                             f"{self.spec.name!r}.")
        self.get_policy().set_state(state["policy_state"])
        self.metrics.restore(state["metrics"])
        self.plan.restore_stats(state["op_stats"])
        self.iteration = state["iteration"]
        self._time_total = state["time_total_s"]
        self._episodes.clear()
        self._episodes.extend(state["episodes"])
        self._last_steps_sampled = state["last_steps_sampled"]
        self.workers.sync_weights()

    def stop(self) -> None:
        """Releases the workers (kills remote actors, closes envs)."""
        self.workers.stop()


def _preload_policy_class(algo: str, framework: str) -> threading.Thread:
    """Builds the policy class (importing its framework) in a background thread; join it
    before use. The class is cached, so the later `get_policy_class` call is free."""

    def preload() -> None:
        get_policy_class(algo, framework)
        if framework == "torch":
            # The first torch optimizer imports torch._dynamo (over a second); do it now.
            importlib.import_module("torch._dynamo")

    thread = threading.Thread(target=preload, daemon=True)
    thread.start()
    return thread


def _read_checkpoint(checkpoint_path: str) -> dict[str, Any]:
    path = os.path.join(checkpoint_path, _CHECKPOINT_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No flowrl checkpoint at {checkpoint_path!r}: expected the file {path!r}, as "
            "written by Trainer.save()."
        )
    with open(path, "rb") as f:
        return pickle.load(f)


def _to_floats(stats: dict) -> dict:
    return {k: _to_floats(v) if isinstance(v, dict) else float(v) for k, v in stats.items()}


def _timer_summary(timer: Any) -> dict[str, float]:
    return {"mean_s": float(timer.mean), "count": int(timer.count)}


def build_plan_preview(algo: str, env: str, config: Mapping[str, Any] | None = None) -> Any:
    """Builds an algorithm's plan in local mode without running it (for `flowrl plan`)."""
    init(local_mode=True)
    trainer = Trainer(algo, env=env, config=config)
    return trainer.plan


def run(algo: str, env: str, config: Mapping[str, Any] | Any = None,
        stop: Mapping[str, float] | None = None, local_mode: bool = False,
        checkpoint_dir: str | None = None, verbose: int = 1, address: str | None = None,
        restore: str | None = None, plan: PlanFn | None = None) -> dict[str, Any]:
    """Trains `algo` on `env` until a stop criterion is met; returns the last result.

    Args:
        algo: a built-in algorithm name, e.g. "ppo".
        env: a gymnasium id or a registered env name.
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
    """
    stop = validate_stop(stop)
    trainer = Trainer(algo, env=env, config=config, plan=plan, local_mode=local_mode,
                      address=address)
    start = time.perf_counter()
    try:
        if restore:
            trainer.restore(restore)
        while True:
            try:
                result = trainer.train()
            except KeyboardInterrupt:
                if checkpoint_dir and trainer.iteration > 0:
                    path = trainer.save(checkpoint_dir)
                    print(f"Interrupted; saved a checkpoint at {path}", flush=True)
                raise
            result["wall_time_s"] = time.perf_counter() - start
            if verbose:
                print(format_progress(result), flush=True)
            if should_stop(result, stop):
                break
        if checkpoint_dir:
            result["checkpoint"] = trainer.save(checkpoint_dir)
        return result
    finally:
        trainer.stop()


__all__ = ["STOP_KEYS", "Trainer", "build_plan_preview", "run"]
