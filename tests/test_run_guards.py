"""A run users can trust: mistakes found before anything starts, a stopped trainer says so,
run directories and checkpoints that are never shared, lost or half-written."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap

import pytest

import flowrl
from flowrl import cli, preflight
from flowrl.ops import ParallelRollouts, TrainResult
from flowrl.plans.apex import ApexConfig
from flowrl.plans.dqn import DQNConfig
from flowrl.reporting import DivergenceMonitor, format_progress
from flowrl.run_records import RunDirInUseError, RunRecorder
from flowrl.testing import CorridorEnv
from flowrl.trainer import CheckpointTrustError

TINY_PG = {"num_workers": 0, "train_batch_size": 20, "rollout_fragment_length": 10,
           "num_envs_per_worker": 2, "seed": 0, "model": {"fcnet_hiddens": [8]}}


@pytest.fixture(scope="module", autouse=True)
def corridor_registered():
    flowrl.register_env("guards_corridor", CorridorEnv)


# --- defect 2: a replay buffer too small to ever start training ----------------------------


@pytest.mark.parametrize("config_class", [DQNConfig, ApexConfig])
def test_buffer_smaller_than_learning_starts_names_both_numbers(config_class):
    with pytest.raises(ValueError, match=r"learning_starts=\d+.*buffer_size=500\b"):
        flowrl.config.from_dict(config_class, {"buffer_size": 500})


def test_apex_shards_that_could_never_reach_learning_starts_are_rejected():
    with pytest.raises(ValueError, match=r"buffer_size=2002, learning_starts=2001"):
        flowrl.config.from_dict(ApexConfig, {"buffer_size": 2002, "learning_starts": 2001,
                                             "num_replay_buffer_shards": 4})


def test_apex_without_remote_workers_is_a_config_error():
    with pytest.raises(ValueError, match=r"num_workers >= 1; got num_workers=0"):
        flowrl.config.from_dict(ApexConfig, {"num_workers": 0})


# --- defect 5: calls after stop() -----------------------------------------------------------


def test_a_stopped_trainer_says_it_is_stopped(local_executor, tmp_path):
    trainer = flowrl.Trainer("pg", env="guards_corridor", config=TINY_PG)
    trainer.train()
    trainer.stop()
    trainer.stop()  # idempotent
    for call in (trainer.train, trainer.evaluate, lambda: trainer.save(str(tmp_path)),
                 lambda: trainer.restore(str(tmp_path)), lambda: trainer.compute_single_action(0),
                 trainer.serve_viewer):
        with pytest.raises(RuntimeError, match=r"trainer was stopped.*new Trainer"):
            call()


# --- defect 10: what the config, the env's spaces and the machine tell, before Ray starts ----

BEFORE_RAY = textwrap.dedent("""
    import json, os, socket, sys
    import flowrl
    from flowrl.iter.executor import visible_gpu_count

    root = sys.argv[1]
    flowrl.init(local_mode=True)
    pg = flowrl.run("pg", "CartPole-v1", local_mode=True, verbose=0,
                    config={"num_workers": 0, "train_batch_size": 20,
                            "rollout_fragment_length": 10},
                    stop={"training_iteration": 1}, checkpoint_dir=os.path.join(root, "ckpt"),
                    log_dir=os.path.join(root, "pg_run"))
    flowrl.shutdown()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    open(os.path.join(root, "a_file"), "w").close()
    cases = {
        "dqn_box": dict(algo="dqn", env="Pendulum-v1"),
        "workers": dict(algo="ppo", env="CartPole-v1",
                        config={"num_workers": 64, "num_envs_per_worker": 1}),
        "apex_0": dict(algo="apex", env="CartPole-v1", config={"num_workers": 0}),
        "restore": dict(algo="ppo", env="CartPole-v1", restore=pg["checkpoint"]),
        "port": dict(algo="ppo", env="CartPole-v1", viewer_port=busy.getsockname()[1]),
        "ckpt_dir": dict(algo="ppo", env="CartPole-v1",
                         checkpoint_dir=os.path.join(root, "a_file", "ckpt")),
        "log_dir": dict(algo="ppo", env="CartPole-v1", log_dir=os.path.join(root, "a_file", "x")),
    }
    if visible_gpu_count() == 0:
        cases["gpu"] = dict(algo="ppo", env="CartPole-v1", config={"num_gpus": 1})
    messages = {}
    for name, kwargs in cases.items():
        kwargs.setdefault("log_dir", os.path.join(root, name))
        try:
            flowrl.run(**kwargs, stop={"training_iteration": 1}, verbose=0)
            messages[name] = None
        except Exception as error:
            messages[name] = f"{type(error).__name__}: {error}"
        messages[name + "/left_dir"] = os.path.exists(kwargs["log_dir"])
    ray = sys.modules.get("ray")
    messages["ray_started"] = bool(ray is not None and ray.is_initialized())
    print(json.dumps(messages))
""")


def test_mistakes_the_config_env_and_machine_show_are_found_before_ray_starts(tmp_path):
    script = tmp_path / "before_ray.py"
    script.write_text(BEFORE_RAY)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["ray_started"] is False
    expected = {
        "dqn_box": r"DQN cannot run on env 'Pendulum-v1'.*Discrete action space",
        "workers": r"num_workers=64 .* need 64 CPU, but this machine has \d+ CPU",
        "apex_0": r"num_workers >= 1; got num_workers=0",
        "restore": r"RestoreError: Checkpoint .* is for 'PG', this run trains 'PPO'",
        "port": r"ViewerPortError: .*Cannot serve the plan viewer on 127.0.0.1:\d+",
        "ckpt_dir": r"checkpoint_dir=.* cannot be a directory: .*a_file' is a file",
        "log_dir": r"log_dir=.* cannot be a directory",
        "gpu": r"num_gpus=1 asks for 1 GPU for the learner, but this machine has 0",
    }
    for name, pattern in expected.items():
        if name not in found:
            continue  # the GPU case on a machine with a GPU
        assert found[name] and re.search(pattern, found[name]), (name, found[name])
        assert found[name + "/left_dir"] is False, f"{name}: a failed start left its run dir"


def test_the_cli_prints_the_message_only_and_debug_shows_the_traceback(tmp_path):
    command = [sys.executable, "-m", "flowrl.cli", "train", "--run", "DQN", "--env",
               "Pendulum-v1", "--log-dir", str(tmp_path / "run"), "--local-mode"]
    plain = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 1
    assert "DQN cannot run on env 'Pendulum-v1'" in plain.stderr
    assert "Traceback" not in plain.stderr and "--debug" in plain.stderr
    assert not (tmp_path / "run").exists()
    debug = subprocess.run(command + ["--debug"], capture_output=True, text=True, timeout=300)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


# --- defect 8: directories that cannot be written --------------------------------------------


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_checkpoint_dir_is_found_before_training(tmp_path, local_executor):
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        with pytest.raises(ValueError, match=r"checkpoint_dir=.* is not writable"):
            flowrl.run("pg", "guards_corridor", config=TINY_PG, local_mode=True, verbose=0,
                       checkpoint_dir=str(read_only / "ckpt"), log_dir=str(tmp_path / "run"),
                       stop={"training_iteration": 1})
    finally:
        read_only.chmod(0o700)
    assert not (tmp_path / "run").exists()


def test_writable_dir_probe_creates_nothing(tmp_path):
    preflight.check_writable_dir(tmp_path / "a" / "b", "log_dir")
    assert list(tmp_path.iterdir()) == []


# --- defect 3: a run directory belongs to one run --------------------------------------------


def test_a_run_directory_holding_another_runs_records_is_refused(tmp_path, local_executor):
    first = RunRecorder(tmp_path, {"lr": 1.0})
    with pytest.raises(RunDirInUseError, match=r"already holds the records of another run"):
        RunRecorder(tmp_path, {"lr": 2.0})
    first.close()
    with pytest.raises(RunDirInUseError, match="Pass a new directory"):
        flowrl.run("pg", "guards_corridor", config=TINY_PG, local_mode=True, verbose=0,
                   log_dir=str(tmp_path), stop={"training_iteration": 1})
    assert json.loads((tmp_path / "params.json").read_text()) == {"lr": 1.0}


def tensorboard_tags(run_dir) -> set[str]:
    """Every scalar tag in a run directory's TFRecord event files (length, crc, data, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    tags = set()
    for path in run_dir.glob("events.out.tfevents.*"):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            length = int.from_bytes(data[offset:offset + 8], "little")
            event = Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_tensorboard_tags_are_result_keys_and_operator_names(tmp_path, local_executor):
    trainer = flowrl.Trainer("pg", env="guards_corridor", config=TINY_PG, log_dir=str(tmp_path))
    try:
        trainer.train()
    finally:
        trainer.stop()
    tags = tensorboard_tags(tmp_path)
    assert {"episode_len_mean", "ops/TrainOneStep/items_out"} <= tags, tags
    assert not [tag for tag in tags if tag.startswith("ray/tune/") or "/n1/" in tag]


# --- defect 12: staging directories of a killed save ------------------------------------------


def test_a_restore_removes_staging_dirs_a_killed_save_left(tmp_path, local_executor):
    trainer = flowrl.Trainer("pg", env="guards_corridor", config=TINY_PG)
    try:
        trainer.train()
        path = trainer.save(str(tmp_path))
        dead_pid = 4_000_000  # above Linux's pid_max: no process has it
        leftover = tmp_path / f".checkpoint_000001.staging-{dead_pid}-0123abcd"
        (leftover / "arrays.npz").parent.mkdir()
        (leftover / "arrays.npz").write_bytes(b"half")
        trainer.restore(path)
    finally:
        trainer.stop()
    assert not leftover.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_000001"]


# --- defect 13: a checkpoint names an env module ----------------------------------------------


def test_restoring_never_imports_a_module_the_checkpoint_names(tmp_path, local_executor,
                                                              monkeypatch, capsys):
    marker = tmp_path / "evil_ran"
    (tmp_path / "evilmod_guards.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    trainer = flowrl.Trainer("pg", env="CartPole-v1", config=TINY_PG)
    try:
        trainer.train()
        path = trainer.save(str(tmp_path / "ckpt"))
    finally:
        trainer.stop()
    state_file = os.path.join(path, "checkpoint.json")
    document = json.loads(open(state_file).read())
    document["state"]["env"] = "evilmod_guards:CartPole-v1"
    open(state_file, "w").write(json.dumps(document))
    with pytest.raises(CheckpointTrustError, match=r"import the module 'evilmod_guards'.*"
                                                   r"trust_checkpoint=True.*--trust-checkpoint"):
        flowrl.Trainer.from_checkpoint(path)
    assert cli.main(["rollout", path, "--episodes", "1"]) == 2
    assert "--trust-checkpoint" in capsys.readouterr().err
    assert not marker.exists()
    flowrl.Trainer.from_checkpoint(path, env="CartPole-v1").stop()  # the user names the env
    assert not marker.exists()
    flowrl.Trainer.from_checkpoint(path, trust_checkpoint=True).stop()
    assert marker.exists()
    # A model path (module:Class) in the checkpoint's config is refused the same way.
    document["state"]["env"] = "CartPole-v1"
    document["state"]["config"]["model"]["custom_model"] = "evilmod_model_guards:Net"
    open(state_file, "w").write(json.dumps(document))
    with pytest.raises(CheckpointTrustError,
                       match=r"model.custom_model='evilmod_model_guards:Net'.*import the module"):
        flowrl.Trainer.from_checkpoint(path)


# --- defect 15: always a final checkpoint; Tune's checkpoint directories ----------------------


def test_a_run_shorter_than_checkpoint_freq_ends_with_a_checkpoint(tmp_path, local_executor,
                                                                  capsys):
    result = flowrl.run("pg", "guards_corridor", config=TINY_PG, local_mode=True, verbose=0,
                        log_dir=str(tmp_path / "run"), checkpoint_freq=10,
                        stop={"training_iteration": 2})
    assert result["checkpoint"] == str((tmp_path / "run" / "checkpoint_000002").absolute())
    # A directory of checkpoints (a run directory, Tune's best.checkpoint) means its latest.
    assert cli.main(["rollout", str(tmp_path / "run"), "--episodes", "1"]) == 0
    assert "mean return over 1 episodes" in capsys.readouterr().out


# --- defect 9: SIGTERM saves a checkpoint like Ctrl-C ----------------------------------------


def test_the_cli_sigterm_handler_survives_the_executor_start(local_executor, monkeypatch):
    import flowrl.trainer as trainer_module

    real_init = trainer_module.init

    def init_like_ray(**kwargs):  # ray.init installs its own SIGTERM handler (sys.exit)
        signal.signal(signal.SIGTERM, lambda *args: sys.exit(15))
        real_init(local_mode=True)

    def ours(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, ours)
    monkeypatch.setattr(trainer_module, "init", init_like_ray)
    try:
        flowrl.Trainer("pg", env="guards_corridor", config=TINY_PG, local_mode=False).stop()
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_saves_a_checkpoint_says_where_and_exits_non_zero(tmp_path):
    command = [sys.executable, "-m", "flowrl.cli", "train", "--run", "PG", "--env",
               "CartPole-v1", "--local-mode", "--log-dir", str(tmp_path / "run"),
               "--checkpoint-freq", "0",
               "--config", json.dumps({k: v for k, v in TINY_PG.items() if k != "model"})]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        for line in process.stdout:
            if line.startswith("iter    2"):
                break
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "Training terminated (SIGTERM); saved a checkpoint at" in err
    assert list((tmp_path / "run").glob("checkpoint_*/checkpoint.json"))


# --- defect 14: a diverging run is reported once, and may stop --------------------------------


def exploding_value_loss_plan(workers, config):
    """Samples as PG does and reports a value loss that has exploded."""
    return ParallelRollouts(workers, mode="bulk_sync").for_each(
        lambda batch: TrainResult(learner_stats={"default_policy": {"vf_loss": 3e14,
                                                                    "entropy": 0.5}}))


def test_a_diverging_run_is_reported_once_naming_metric_value_and_iteration(
        local_executor, caplog):
    trainer = flowrl.Trainer("pg", env="guards_corridor", config=TINY_PG,
                             plan=exploding_value_loss_plan)
    try:
        with caplog.at_level("WARNING", logger="flowrl"):
            first, second = trainer.train(), trainer.train()
    finally:
        trainer.stop()
    [message] = first["divergence"]
    assert "default_policy vf_loss=3e+14 at iteration 1 (exploding" in message
    assert "divergence" not in second
    assert [r.getMessage() for r in caplog.records if "diverging" in r.getMessage()] == [message]


def test_stop_on_divergence_ends_the_run_with_a_checkpoint(local_executor, tmp_path):
    result = flowrl.run("pg", "guards_corridor", config=TINY_PG, local_mode=True, verbose=0,
                        plan=exploding_value_loss_plan, stop_on_divergence=True,
                        stop={"training_iteration": 5}, log_dir=str(tmp_path / "run"))
    assert result["training_iteration"] == 1 and result["divergence"]
    assert os.path.isdir(result["checkpoint"])


def test_collapsed_entropy_counts_for_discrete_actions_only():
    collapsed = {"training_iteration": 3,
                 "info": {"learner": {"default_policy": {"entropy": 1e-4}}}}
    [message] = DivergenceMonitor(discrete_actions=True).check(collapsed)
    assert "entropy=0.0001 at iteration 3 (collapsed entropy" in message
    assert DivergenceMonitor(discrete_actions=False).check(collapsed) == []


# --- defect 15: DQN reports epsilon ------------------------------------------------------------


def test_dqn_reports_its_epsilon(local_executor):
    config = {"num_workers": 0, "rollout_fragment_length": 10, "min_steps_per_iteration": 50,
              "learning_starts": 20, "train_batch_size": 8, "exploration_timesteps": 100,
              "exploration_final_eps": 0.1, "model": {"fcnet_hiddens": [8]}, "seed": 0}
    trainer = flowrl.Trainer("dqn", env="guards_corridor", config=config)
    try:
        first, second = trainer.train(), trainer.train()
    finally:
        trainer.stop()
    epsilons = [r["info"]["learner"]["default_policy"]["cur_epsilon"] for r in (first, second)]
    assert epsilons == pytest.approx([1.0 - 0.9 * 0.5, 0.1])
    assert "eps 0.100" in format_progress({**second, "episode_reward_mean": float("nan")})


# --- best checkpoints -------------------------------------------------------------------------


class DirectoryPerSave:
    """Stands in for a trainer: each save makes `checkpoint_<iteration>`."""

    def __init__(self) -> None:
        self.iteration = 0

    def save(self, checkpoint_dir: str) -> str:
        path = os.path.join(checkpoint_dir, f"checkpoint_{self.iteration:06d}")
        os.makedirs(path)
        return path


@pytest.mark.parametrize(("attr", "kept", "best"), [
    ("episode_reward_mean", [2, 4, 5], 2),
    ("min-episode_reward_mean", [1, 5], 5),
])
def test_keep_checkpoints_num_keeps_the_best_by_score_and_the_latest(tmp_path, attr, kept, best):
    recorder = RunRecorder(tmp_path, {}, checkpoint_freq=1, keep_checkpoints_num=2,
                           checkpoint_score_attr=attr, tensorboard=False)
    trainer = DirectoryPerSave()
    for iteration, reward in enumerate([1.0, 5.0, 2.0, 3.0, 0.0], start=1):
        trainer.iteration = iteration
        recorder.record({"training_iteration": iteration, "episode_reward_mean": reward},
                        trainer)
    recorder.close()
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*")) == [
        f"checkpoint_{i:06d}" for i in kept]
    assert recorder.best_checkpoint == str(tmp_path / f"checkpoint_{best:06d}")


# --- envs as objects ----------------------------------------------------------------------------


class ShortCorridor(CorridorEnv):
    """A corridor whose constructor takes the run's env_config as `config`."""

    def __init__(self, config=None):
        super().__init__(config or {})
        self.built_with = dict(config or {})


@pytest.mark.parametrize("env", [ShortCorridor, lambda env_config: ShortCorridor(env_config)],
                         ids=["class", "function"])
def test_an_env_class_or_creator_function_runs_like_a_name(env, local_executor, tmp_path):
    result = flowrl.run("pg", env, config={**TINY_PG, "env_config": {}}, local_mode=True,
                        verbose=0, stop={"training_iteration": 1},
                        log_dir=str(tmp_path / "run"))
    assert result["training_iteration"] == 1
    params = json.loads((tmp_path / "run" / "params.json").read_text())
    assert params["env_config"] == {}


def test_a_class_that_is_no_env_is_refused():
    with pytest.raises(TypeError, match=r"is a class but not a gymnasium.Env subclass"):
        flowrl.Trainer("pg", env=dict, config=TINY_PG, local_mode=True)


# --- defect 1: every documented training command ends ---------------------------------------

ROOT = pathlib.Path(__file__).resolve().parents[1]


def documented_commands(text: str) -> list[str]:
    """`flowrl train ...` shell commands (continuation lines joined) and `flowrl.run(...)`
    calls (until the parentheses close) in a Markdown page."""
    found, lines = [], text.splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("flowrl train ") and "--help" not in stripped:
            command = stripped
            while command.endswith("\\") and index + 1 < len(lines):
                index += 1
                command = command[:-1] + lines[index].strip()
            found.append(command)
        elif "flowrl.run(" in stripped and not stripped.startswith(("`", "-", "*")):
            call, depth = "", 0
            for part in lines[index:]:
                call += part.split("#")[0]
                depth = call.count("(") - call.count(")")
                if depth <= 0:
                    break
            found.append(call)
    return found


@pytest.mark.parametrize("page", ["README.md", "docs/configuration.md", "docs/plans/a2c.md",
                                  "docs/plans/apex.md", "docs/plans/pg.md", "docs/plans/ppo.md",
                                  "docs/plans/impala.md", "docs/plans/dqn.md",
                                  "docs/plans/r2d2.md"])
def test_every_documented_training_command_shows_a_stop(page):
    commands = documented_commands((ROOT / page).read_text())
    assert commands, f"{page} shows no training command"
    endless = [c for c in commands if "--stop" not in c and "stop=" not in c]
    assert not endless, f"{page}: these run forever: {endless}"


def test_runs_started_in_the_same_second_get_their_own_default_directories(
        tmp_path, local_executor, monkeypatch):
    import flowrl.trainer as trainer_module

    taken = tmp_path / "PG_guards_corridor_same-second"
    RunRecorder(taken, {"another": "run"}, tensorboard=False).close()
    names = iter([taken, tmp_path / "PG_guards_corridor_same-second_1"])
    monkeypatch.setattr(trainer_module, "default_run_dir", lambda algo, env: str(next(names)))
    result = flowrl.run("pg", "guards_corridor", config=TINY_PG, local_mode=True, verbose=0,
                        stop={"training_iteration": 1})
    assert result["log_dir"].endswith("same-second_1")
    assert json.loads((taken / "params.json").read_text()) == {"another": "run"}
