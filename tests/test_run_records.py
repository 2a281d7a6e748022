"""Run records: params.json, result.json, progress.csv, TensorBoard events, periodic checkpoints,
and that a run killed with SIGKILL keeps every completed iteration."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flowrl.run_records import RunRecorder, default_run_dir, flatten_result

TINY_PG = {"num_workers": 0, "train_batch_size": 64, "rollout_fragment_length": 32,
           "num_envs_per_worker": 2, "seed": 0}


class FakeTrainer:
    """Writes an empty checkpoint directory per save, as Trainer.save names them."""

    def __init__(self) -> None:
        self.iteration = 0

    def save(self, checkpoint_dir: str) -> str:
        path = os.path.join(checkpoint_dir, f"checkpoint_{self.iteration:06d}")
        os.makedirs(path, exist_ok=True)
        return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_flatten_result_joins_nested_keys_with_a_slash():
    flat = flatten_result({"a": 1, "info": {"learner": {"loss": 0.5}}, "hist": [1, 2]})
    assert flat == {"a": 1, "info/learner/loss": 0.5, "hist": [1, 2]}


def test_default_run_dir_names_algo_env_and_time(tmp_path):
    path = Path(default_run_dir("PPO", "ALE/Pong-v5", root=tmp_path))
    assert path.parent == tmp_path and path.name.startswith("PPO_ALE_Pong-v5_20")


def test_recorder_writes_params_results_csv_tensorboard_and_keeps_last_checkpoints(tmp_path):
    trainer = FakeTrainer()
    recorder = RunRecorder(tmp_path, {"lr": 0.001, "model": {"fcnet_hiddens": [8]}},
                           checkpoint_freq=2, keep_checkpoints_num=2)
    for iteration in range(1, 8):
        trainer.iteration = iteration
        result = {"training_iteration": iteration, "timesteps_total": 100 * iteration,
                  "episode_reward_mean": float(iteration), "time_total_s": 0.1 * iteration,
                  "info": {"learner": {"default": {"loss": 1.0 / iteration}}}}
        if iteration >= 5:  # a key that appears later gets its own column
            result["evaluation"] = {"episode_reward_mean": 9.0}
        recorder.record(result, trainer)
    recorder.close()

    assert json.loads((tmp_path / "params.json").read_text())["model"]["fcnet_hiddens"] == [8]
    lines = [json.loads(line) for line in (tmp_path / "result.json").read_text().splitlines()]
    assert [line["training_iteration"] for line in lines] == list(range(1, 8))
    assert lines[0]["info"]["learner"]["default"]["loss"] == 1.0

    rows = read_csv(tmp_path / "progress.csv")
    assert [int(row["training_iteration"]) for row in rows] == list(range(1, 8))
    assert float(rows[2]["info/learner/default/loss"]) == pytest.approx(1 / 3)
    assert rows[0]["evaluation/episode_reward_mean"] == ""  # earlier rows: empty cell
    assert float(rows[6]["evaluation/episode_reward_mean"]) == 9.0

    assert list(tmp_path.glob("events.out.tfevents.*"))
    kept = sorted(path.name for path in tmp_path.glob("checkpoint_*"))
    assert kept == ["checkpoint_000004", "checkpoint_000006"]


def read_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one tag, read from the TFRecord event files (length, crc, data, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    points = []
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            length = int.from_bytes(data[offset:offset + 8], "little")
            event = Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            points += [(event.step, value.simple_value) for value in event.summary.value
                       if value.tag == tag]
    return points


def test_tensorboard_events_hold_the_scalars(tmp_path):
    recorder = RunRecorder(tmp_path, {})
    for iteration in (1, 2):
        recorder.record({"training_iteration": iteration, "timesteps_total": 10 * iteration,
                         "episode_reward_mean": 3.0 * iteration})
    recorder.close()
    assert read_scalars(tmp_path, "episode_reward_mean") == [(10, 3.0), (20, 6.0)]


def test_bad_checkpoint_settings_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_freq must be >= 0"):
        RunRecorder(tmp_path, {}, checkpoint_freq=-1)
    with pytest.raises(ValueError, match="keep_checkpoints_num must be >= 1"):
        RunRecorder(tmp_path, {}, keep_checkpoints_num=0)


def test_trainer_with_log_dir_records_every_iteration(tmp_path, local_executor):
    import flowrl

    trainer = flowrl.Trainer("pg", env="CartPole-v1", config=TINY_PG, log_dir=str(tmp_path),
                             checkpoint_freq=2, keep_checkpoints_num=1)
    try:
        for _ in range(3):
            trainer.train()
    finally:
        trainer.stop()
    params = json.loads((tmp_path / "params.json").read_text())
    assert params == trainer.config.to_dict()
    lines = [json.loads(line) for line in (tmp_path / "result.json").read_text().splitlines()]
    assert [line["training_iteration"] for line in lines] == [1, 2, 3]
    for key in ("timesteps_total", "episode_reward_mean", "time_total_s", "timestamp"):
        assert key in lines[-1]
    assert len(read_csv(tmp_path / "progress.csv")) == 3
    assert [p.name for p in tmp_path.glob("checkpoint_*")] == ["checkpoint_000002"]


def test_periodic_evaluation_reaches_the_result_and_every_record(tmp_path, local_executor):
    import flowrl

    config = {**TINY_PG, "evaluation_interval": 2, "evaluation_num_episodes": 3}
    trainer = flowrl.Trainer("pg", env="CartPole-v1", config=config, log_dir=str(tmp_path))
    try:
        results = [trainer.train() for _ in range(4)]
    finally:
        trainer.stop()
    assert ["evaluation" in result for result in results] == [False, True, False, True]
    evaluation = results[1]["evaluation"]
    assert evaluation["episodes"] == 3 and evaluation["episode_reward_mean"] >= 8
    lines = [json.loads(line) for line in (tmp_path / "result.json").read_text().splitlines()]
    assert lines[3]["evaluation"]["episodes"] == 3 and "evaluation" not in lines[2]
    rows = read_csv(tmp_path / "progress.csv")
    assert rows[0]["evaluation/episode_reward_mean"] == ""  # before the first evaluation
    assert float(rows[1]["evaluation/episode_reward_mean"]) >= 8
    with pytest.raises(ValueError, match="evaluation_num_episodes >= 1"):
        flowrl.Trainer("pg", env="CartPole-v1",
                       config={**config, "evaluation_num_episodes": 0})


def test_run_writes_records_to_the_default_directory(tmp_path, monkeypatch, local_executor,
                                                     capsys):
    import flowrl

    monkeypatch.chdir(tmp_path)
    result = flowrl.run("pg", "CartPole-v1", config=TINY_PG, local_mode=True,
                        stop={"training_iteration": 1})
    run_dir = Path(result["log_dir"])
    assert run_dir.parent == Path("results") and run_dir.name.startswith("PG_CartPole-v1_")
    assert f"Run records (params, progress.csv, result.json, TensorBoard, checkpoints) in " \
           f"{run_dir}" in capsys.readouterr().out
    assert (tmp_path / run_dir / "result.json").read_text().count("\n") == 1


KILLED_RUN = textwrap.dedent("""
    import sys
    import flowrl

    flowrl.init(local_mode=True)
    trainer = flowrl.Trainer("pg", env="CartPole-v1", config={config!r}, log_dir=sys.argv[1])
    while True:
        result = trainer.train()
        print("done", result["training_iteration"], flush=True)
""")


def test_a_run_killed_with_sigkill_keeps_every_completed_iteration(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN.format(config=TINY_PG))
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, str(script), str(run_dir)],
                               stdout=subprocess.PIPE, text=True)
    completed = 0
    deadline = time.monotonic() + 120
    try:
        while completed < 3 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if line.startswith("done"):
                completed = int(line.split()[1])
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert completed >= 3, "the training subprocess did not finish three iterations"
    lines = (run_dir / "result.json").read_text().splitlines()
    iterations = [json.loads(line)["training_iteration"] for line in lines[:completed]]
    assert iterations == list(range(1, completed + 1))
    rows = read_csv(run_dir / "progress.csv")
    assert len(rows) >= completed
    assert all(None not in row for row in rows)  # no row has more cells than the header
