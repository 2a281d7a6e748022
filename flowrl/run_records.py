"""Run records: what a training run leaves on disk, iteration by iteration.

A run directory holds

* ``params.json`` -- the full resolved config (``config.to_dict()``), written at start;
* ``result.json`` -- one JSON line per iteration, with the key names Ray Tune writes
  (``training_iteration``, ``timesteps_total``, ``episode_reward_mean``, ``time_total_s``, ...);
* ``progress.csv`` -- the same results, nested dicts flattened with ``/`` (``info/learner/...``);
* TensorBoard event files (tensorboardX), one scalar per numeric key, tagged with the key
  (``episode_reward_mean``, ``info/learner/default_policy/total_loss``; operator statistics as
  ``ops/<operator name>/throughput``), stepped by ``timesteps_total``;
* ``plan.json`` -- the plan graph with its per-operator statistics (``flowrl.viz.to_json``),
  replaced after every iteration; ``flowrl view RUN_DIR`` draws it with the records;
* ``checkpoint_<iteration>/`` -- every ``checkpoint_freq`` iterations (``Trainer.save``), keeping
  the ``keep_checkpoints_num`` most recent.

Each iteration's lines are flushed and fsynced before ``record`` returns, so a process killed
with ``kill -9`` leaves every completed iteration on disk.

**CSV columns.** The header is the set of keys seen so far. When an iteration brings a key not
in the header (an evaluation, a learner statistic that appears later), the file is rewritten
with the extended header into a temporary file that atomically replaces ``progress.csv``; earlier
rows get empty cells for the new columns. The file is therefore always a well-formed CSV whose
every row has exactly the header's columns.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

__all__ = ["RunDirInUseError", "RunRecorder", "default_run_dir", "flatten_result",
           "operator_tag_names"]

PARAMS_FILE = "params.json"
RESULT_FILE = "result.json"
PROGRESS_FILE = "progress.csv"
PLAN_FILE = "plan.json"


class RunDirInUseError(ValueError):
    """The run directory already holds another run's records: a run never shares its files."""


class Checkpointable(Protocol):
    """What the recorder needs from a trainer to write periodic checkpoints."""

    def save(self, checkpoint_dir: str) -> str:
        """Writes a checkpoint under checkpoint_dir and returns its path."""
        ...


def default_run_dir(algo: str, env: str, root: str | os.PathLike = "results") -> str:
    """``results/<algo>_<env>_<timestamp>``; characters unsafe in a file name become ``_``."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{algo}_{env}")
    path = Path(root) / f"{name}_{stamp}"
    suffix = 1
    while path.exists():  # two runs started in the same second
        path = Path(root) / f"{name}_{stamp}_{suffix}"
        suffix += 1
    return str(path)


def flatten_result(result: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become ``outer/inner`` keys; lists and other values stay as they are."""
    flat: dict[str, Any] = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_result(value, prefix=f"{name}/"))
        else:
            flat[name] = value
    return flat


class RunRecorder:
    """Writes one run's records into ``run_dir`` (see the module docstring for the layout).

    ```python
    recorder = RunRecorder("results/my_run", config.to_dict(), checkpoint_freq=10)
    for _ in range(100):
        recorder.record(trainer.train(), trainer)
    recorder.close()
    ```

    Args:
        run_dir: the directory to write to; created if missing. A directory that holds
            another run's records (its ``params.json``) is refused with `RunDirInUseError`, so
            two runs never interleave rows in one file; resume into a new directory.
        params: the resolved config, written as ``params.json``.
        checkpoint_freq: save a checkpoint every this many iterations; 0 turns them off.
        keep_checkpoints_num: how many of the most recent periodic checkpoints to keep (>= 1);
            with ``checkpoint_score_attr``, how many of the best, the latest kept as well.
        checkpoint_score_attr: a result key (nested keys joined with ``/``) that ranks the
            checkpoints, highest best, e.g. ``episode_reward_mean``; ``min-<key>`` ranks the
            lowest best. None keeps the most recent ones.
        tensorboard: write TensorBoard event files.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        params: Mapping[str, Any],
        *,
        checkpoint_freq: int = 0,
        keep_checkpoints_num: int = 3,
        checkpoint_score_attr: str | None = None,
        tensorboard: bool = True,
    ) -> None:
        if checkpoint_freq < 0:
            raise ValueError(
                f"checkpoint_freq must be >= 0 (0 = no periodic checkpoints); got "
                f"checkpoint_freq={checkpoint_freq}."
            )
        if keep_checkpoints_num < 1:
            raise ValueError(
                f"keep_checkpoints_num must be >= 1; got keep_checkpoints_num="
                f"{keep_checkpoints_num}. Use checkpoint_freq=0 to save no periodic checkpoints."
            )
        if checkpoint_score_attr is not None and (
                not isinstance(checkpoint_score_attr, str) or not checkpoint_score_attr):
            raise TypeError(
                f"checkpoint_score_attr must be a result key such as 'episode_reward_mean' (or "
                f"'min-<key>' to keep the lowest); got {checkpoint_score_attr=}.")
        self.run_dir = str(run_dir)
        self.checkpoint_freq = checkpoint_freq
        self.keep_checkpoints_num = keep_checkpoints_num
        self.checkpoint_score_attr = checkpoint_score_attr
        self._scores: dict[str, float] = {}
        self._last_flat: dict[str, Any] = {}
        self._created_dir = not os.path.isdir(self.run_dir)
        os.makedirs(self.run_dir, exist_ok=True)
        self._entries_before = set(os.listdir(self.run_dir))
        _claim(self.run_dir, json.dumps(_json_ready(params), indent=2, sort_keys=True) + "\n")
        self._result_file = open(os.path.join(self.run_dir, RESULT_FILE), "a", encoding="utf-8")
        self._csv_path = os.path.join(self.run_dir, PROGRESS_FILE)
        self._csv_columns = _read_csv_header(self._csv_path)
        self._checkpoints: list[str] = []
        self._tensorboard: Any = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tensorboard = SummaryWriter(logdir=self.run_dir, flush_secs=5)

    def record(self, result: Mapping[str, Any], trainer: Checkpointable | None = None) -> None:
        """Appends one iteration's result to every record; checkpoints ``trainer`` when due.

        Returns once the JSON line and the CSV row are on disk (flushed and fsynced).
        """
        row = {"timestamp": int(time.time()), **_json_ready(result)}
        self._result_file.write(json.dumps(row) + "\n")
        self._result_file.flush()
        os.fsync(self._result_file.fileno())
        flat = {key: _csv_cell(value) for key, value in flatten_result(row).items()}
        self._last_flat = flat
        self._append_csv_row(flat)
        if self._tensorboard is not None:
            self._write_scalars(flat, step=int(result.get("timesteps_total", 0) or 0),
                                ops=result.get("ops"))
        plan_graph = getattr(trainer, "plan_graph", None)
        if callable(plan_graph):
            self._write_plan(plan_graph())
        iteration = int(result.get("training_iteration", 0) or 0)
        due = self.checkpoint_freq and iteration and iteration % self.checkpoint_freq == 0
        if due and trainer is not None:
            self.save_checkpoint(trainer)

    def _write_plan(self, graph: Any) -> None:
        """Replaces ``plan.json`` atomically (a reader never sees half a file)."""
        from flowrl.viz import to_json

        path = os.path.join(self.run_dir, PLAN_FILE)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(to_json(graph, title=os.path.basename(os.path.normpath(self.run_dir))))
        os.replace(path + ".tmp", path)

    def save_checkpoint(self, trainer: Checkpointable) -> str:
        """Saves ``trainer`` into the run directory and drops the checkpoints not kept: the
        oldest, or (with ``checkpoint_score_attr``) all but the best and the latest. The score
        is the last recorded result's."""
        path = trainer.save(self.run_dir)
        if path in self._checkpoints:
            self._checkpoints.remove(path)
        self._checkpoints.append(path)
        self._scores[path] = self._score(self._last_flat)
        if self.checkpoint_score_attr is None:
            kept = set(self._checkpoints[-self.keep_checkpoints_num:])
        else:
            ranked = sorted(self._checkpoints, key=self._scores.__getitem__, reverse=True)
            kept = set(ranked[:self.keep_checkpoints_num]) | {path}
        for dropped in [p for p in self._checkpoints if p not in kept]:
            shutil.rmtree(dropped, ignore_errors=True)
            self._checkpoints.remove(dropped)
            self._scores.pop(dropped, None)
        return path

    def _score(self, flat: Mapping[str, Any]) -> float:
        """The rank of a checkpoint saved after the result ``flat``: higher is better; a
        missing or non-numeric score ranks last."""
        attr = self.checkpoint_score_attr
        if attr is None:
            return 0.0
        sign, key = (-1.0, attr.removeprefix("min-")) if attr.startswith("min-") else (1.0, attr)
        value = flat.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return -math.inf
        return sign * float(value)

    @property
    def checkpoints(self) -> list[str]:
        """The periodic checkpoints this recorder keeps, oldest first."""
        return list(self._checkpoints)

    @property
    def best_checkpoint(self) -> str | None:
        """The kept checkpoint with the best ``checkpoint_score_attr`` (the latest without
        one, or when scores tie); None before the first."""
        if not self._checkpoints:
            return None
        return max(reversed(self._checkpoints), key=self._scores.__getitem__)

    def discard(self) -> None:
        """Closes the files and removes what this recorder made: the run directory if it
        created it, else the files it added (for a run that failed to start)."""
        self.close()
        if self._created_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        for name in set(os.listdir(self.run_dir)) - self._entries_before:
            path = os.path.join(self.run_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)

    def close(self) -> None:
        """Flushes and closes the files. Idempotent."""
        if not self._result_file.closed:
            self._result_file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    # --- CSV ------------------------------------------------------------------------------

    def _append_csv_row(self, row: dict[str, Any]) -> None:
        new_columns = [key for key in row if key not in self._csv_columns]
        if new_columns or not os.path.exists(self._csv_path):
            self._csv_columns = self._csv_columns + new_columns
            self._rewrite_csv(extra_row=row)
            return
        with open(self._csv_path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self._csv_columns).writerow(row)
            f.flush()
            os.fsync(f.fileno())

    def _rewrite_csv(self, extra_row: dict[str, Any]) -> None:
        """Rewrites progress.csv with the current header; atomic (temporary file + rename)."""
        rows: list[dict[str, Any]] = []
        if os.path.exists(self._csv_path):
            with open(self._csv_path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        rows.append(extra_row)
        staging = self._csv_path + ".tmp"
        with open(staging, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self._csv_columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staging, self._csv_path)
        _fsync_directory(self.run_dir)

    # --- TensorBoard ----------------------------------------------------------------------

    def _write_scalars(self, flat: Mapping[str, Any], step: int,
                       ops: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """One scalar per numeric result key, tagged with the key itself; operator statistics
        (``ops/<node id>/...`` in the CSV) are tagged ``ops/<operator name>/...``."""
        names = operator_tag_names(ops or {})
        for key, value in flat.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if key in ("timestamp", "training_iteration") or math.isnan(value):
                continue
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "ops" and parts[1] in names:
                key = f"ops/{names[parts[1]]}/{parts[2]}"
            self._tensorboard.add_scalar(key, value, global_step=step)
        self._tensorboard.flush()


def operator_tag_names(ops: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Node id -> a readable, unique name for each operator of ``result["ops"]``: the operator
    inside ``for_each(...)``/``combine(...)``, else the label's first word; repeats get
    ``_2``, ``_3``.

    Examples:
        >>> operator_tag_names({"n0": {"label": "ParallelRollouts[bulk_sync]"},
        ...                     "n1": {"label": "for_each(TrainOneStep(num_sgd_iter=1))"},
        ...                     "n2": {"label": "for_each(TrainOneStep(num_sgd_iter=2))"}})
        {'n0': 'ParallelRollouts', 'n1': 'TrainOneStep', 'n2': 'TrainOneStep_2'}
    """
    names: dict[str, str] = {}
    seen: dict[str, int] = {}
    for node_id, stats in ops.items():
        label = str(stats.get("label", node_id))
        wrapped = re.match(r"^[a-z_]+\(([A-Za-z_]\w*)", label)
        first = re.match(r"^[A-Za-z_][\w.]*", label)
        name = wrapped.group(1) if wrapped else first.group(0) if first else str(node_id)
        seen[name] = seen.get(name, 0) + 1
        names[node_id] = name if seen[name] == 1 else f"{name}_{seen[name]}"
    return names


def _claim(run_dir: str, params_text: str) -> None:
    """Writes ``params.json`` only if no run wrote one there before (atomic: of two runs
    started on one directory at once, exactly one gets it)."""
    path = os.path.join(run_dir, PARAMS_FILE)
    try:
        with open(path, "x", encoding="utf-8") as f:
            f.write(params_text)
            f.flush()
            os.fsync(f.fileno())
    except FileExistsError:
        raise RunDirInUseError(
            f"log_dir={run_dir!r} already holds the records of another run ({PARAMS_FILE}, "
            f"{RESULT_FILE}, {PROGRESS_FILE}); a run never appends to another run's files. Pass "
            f"a new directory, or leave log_dir unset for a fresh "
            f"results/<algo>_<env>_<timestamp>. To resume, restore the old run's checkpoint "
            f"into a new directory.") from None


def _read_csv_header(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), [])


def _fsync_directory(path: str) -> None:
    """Makes a rename inside ``path`` durable (POSIX); a no-op where directories cannot be
    opened (Windows)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _json_ready(value: Any) -> Any:
    """Plain JSON data: numpy scalars and arrays become numbers and lists, tuples lists."""
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return _json_ready(tolist())
    return repr(value)


def _csv_cell(value: Any) -> Any:
    """Lists go into one cell as JSON, so a row keeps one cell per column."""
    return json.dumps(value) if isinstance(value, list) else value
