"""Tests for the `flowrl` command: parsing, help from config docstrings, error exit codes.

Most tests run against a fake algorithm registry and a fake trainer (so they do not depend on
the plans being importable); the tests at the end use the real `flowrl.plans` and skip, with
the import error as the reason, only while it cannot be imported.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
import types

import networkx as nx
import pytest

from flowrl import cli
from flowrl.config import AlgorithmConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class FakePPOConfig(AlgorithmConfig):
    num_workers: int = 0
    clip_param: float = 0.3
    """Surrogate clipping range; typically 0.1-0.3 (100% safe to tune)."""
    sgd_minibatch_size: int = 128
    """Minibatch size of each SGD step; typically 32-4096."""

    def _validate(self) -> None:
        super()._validate()
        if self.sgd_minibatch_size > self.train_batch_size:
            raise ValueError(
                f"sgd_minibatch_size must be <= train_batch_size; got "
                f"sgd_minibatch_size={self.sgd_minibatch_size}, "
                f"train_batch_size={self.train_batch_size}."
            )


@dataclasses.dataclass(frozen=True)
class FakeSpec:
    name: str
    config_class: type
    plan: object
    description: str


FAKE_ALGORITHMS = {
    "fakeppo": FakeSpec("FakePPO", FakePPOConfig, None, "A fake PPO for CLI tests."),
    "fakepg": FakeSpec("FakePG", AlgorithmConfig, None, "A fake policy gradient."),
}


class FakeGraph(nx.DiGraph):
    """A plan graph without side links, printed as "GRAPH"."""

    def __str__(self) -> str:
        return "GRAPH"


class FakePlan:
    def __repr__(self) -> str:
        return "from_actors[ParallelRollouts] => for_each(TrainOneStep)"

    def graph(self) -> FakeGraph:
        return FakeGraph()


@pytest.fixture
def fake_flowrl(monkeypatch):
    """Replaces the algorithm registry and the trainer; returns the recorded calls."""
    calls: list[tuple[str, tuple, dict]] = []

    def run(*args, **kwargs):
        calls.append(("run", args, kwargs))
        return {"training_iteration": 3, "episode_reward_mean": 21.5, "info": {}}

    def build_plan_preview(*args, **kwargs):
        calls.append(("build_plan_preview", args, kwargs))
        return FakePlan()

    trainer = types.SimpleNamespace(run=run, build_plan_preview=build_plan_preview)
    monkeypatch.setattr(cli, "_load_algorithms", lambda: FAKE_ALGORITHMS)
    monkeypatch.setattr(cli, "_trainer_module", lambda: trainer)
    return calls


def assert_usage_error(capsys, code: int, *fragments: str) -> str:
    """Exit code 2, one clean message on stderr (no traceback) containing every fragment."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    return err


# -- flowrl list ---------------------------------------------------------------------------------


def test_list_prints_names_and_descriptions(fake_flowrl, capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "FakePPO  A fake PPO for CLI tests." in out
    assert "FakePG   A fake policy gradient." in out


def test_no_command_prints_help_and_returns_2(capsys):
    assert cli.main([]) == 2
    assert "train" in capsys.readouterr().err


# -- flowrl train --help -------------------------------------------------------------------------


def help_text(capsys) -> str:
    """The help printed to stdout, with line wrapping undone."""
    return " ".join(capsys.readouterr().out.split())


def test_train_help_lists_every_field_with_docstring_and_default(fake_flowrl, capsys):
    assert cli.main(["train", "--run", "fakeppo", "--help"]) == 0
    out = help_text(capsys)
    assert "--checkpoint-dir DIR" in out and "--stop JSON" in out  # the command's own options
    assert "FakePPOConfig fields" in out
    for field in dataclasses.fields(FakePPOConfig):
        if field.name != "model":
            assert f"--{field.name.replace('_', '-')}" in out
    assert "Surrogate clipping range; typically 0.1-0.3 (100% safe to tune). (default: 0.3)" in out
    assert "--num-workers INT" in out and "(default: 0)" in out  # the subclass's default
    assert "Discount factor in (0, 1]" in out  # inherited docstring
    assert "--framework {torch,tf}" in out and "--seed INT|null" in out
    assert "--model.fcnet-hiddens JSON" in out  # nested settings get their own flags
    assert "(default: '[64, 64]')" in out  # shell-quoted, ready to paste


def test_help_defaults_include_config_file_and_json(fake_flowrl, capsys):
    code = cli.main(["train", "--run", "fakeppo", "--config", '{"clip_param": 0.15}', "--help"])
    assert code == 0
    assert "(default: 0.15)" in help_text(capsys)


def test_plan_help_lists_config_flags_too(fake_flowrl, capsys):
    assert cli.main(["plan", "--run", "fakeppo", "--help"]) == 0
    out = help_text(capsys)
    assert "--format {text,dot,html}" in out and "--clip-param FLOAT" in out


def test_train_help_without_run_explains_how_to_see_fields(fake_flowrl, capsys):
    assert cli.main(["train", "--help"]) == 0
    assert "flowrl train --run PPO --help" in capsys.readouterr().out


# -- flowrl train: running -----------------------------------------------------------------------


def test_train_passes_parsed_options_to_run(fake_flowrl, capsys, tmp_path):
    code = cli.main(
        ["train", "--run", "FAKEPPO", "--env", "CartPole-v1", "--stop",
         '{"training_iteration": 3}', "--local-mode", "--checkpoint-dir", str(tmp_path),
         "--verbose", "0"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    [(name, args, kwargs)] = fake_flowrl
    assert (name, args) == ("run", ("fakeppo", "CartPole-v1"))
    assert kwargs["stop"] == {"training_iteration": 3}
    assert kwargs["local_mode"] is True and kwargs["checkpoint_dir"] == str(tmp_path)
    assert kwargs["verbose"] == 0 and kwargs["address"] is None and kwargs["restore"] is None
    assert kwargs["log_dir"] is None and kwargs["checkpoint_freq"] == 10
    assert kwargs["keep_checkpoints_num"] == 3


def test_train_builds_the_typed_config_once_and_passes_the_instance(fake_flowrl, capsys):
    code = cli.main(["train", "--run", "fakeppo", "--env", "CartPole-v1", "--lr", "1"])
    assert code == 0, capsys.readouterr().err
    config = fake_flowrl[0][2]["config"]
    assert isinstance(config, FakePPOConfig)
    assert config.lr == 1.0 and isinstance(config.lr, float)  # converted as from_dict does


def test_config_precedence_file_then_json_then_flags(fake_flowrl, capsys, tmp_path):
    config_file = tmp_path / "ppo.yaml"
    config_file.write_text(
        "lr: 0.1\ngamma: 0.5\nclip_param: 0.1\nmodel:\n  fcnet_hiddens: [8]\n"
        "  fcnet_activation: relu\n"
    )
    code = cli.main(
        ["train", "--run", "fakeppo", "--env", "CartPole-v1", "--config-file", str(config_file),
         "--config", '{"gamma": 0.9, "clip_param": 0.2, "model": {"fcnet_hiddens": [16]}}',
         "--clip-param", "0.25", "--num_workers", "3", "--seed", "none", "--framework", "tf",
         "--recreate-failed-workers", "false", "--lr-schedule", "[[0, 0.1], [100, 0.01]]"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    config = fake_flowrl[0][2]["config"]
    assert config.lr == 0.1 and config.gamma == 0.9 and config.clip_param == 0.25
    assert config.model.fcnet_hiddens == (16,) and config.model.fcnet_activation == "relu"
    assert config.num_workers == 3 and config.seed is None and config.framework == "tf"
    assert config.recreate_failed_workers is False
    assert config.lr_schedule == ((0, 0.1), (100, 0.01))


def test_nested_flags_and_env_config_flag(fake_flowrl, capsys):
    code = cli.main(
        ["train", "--run", "fakeppo", "--env", "CartPole-v1", "--config",
         '{"model": {"fcnet_activation": "relu"}}', "--model.fcnet_hiddens=[8, 8]",
         "--env-config", '{"max_episode_steps": 20}']
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    config = fake_flowrl[0][2]["config"]
    assert config.model.fcnet_hiddens == (8, 8) and config.model.fcnet_activation == "relu"
    assert config.env_config == {"max_episode_steps": 20}


def test_flags_start_from_the_algorithms_own_nested_defaults():
    # DQN's model is 256x256 ReLU and R2D2's an LSTM, not ModelConfig()'s defaults.
    from flowrl.config_flags import parse_config_flags
    from flowrl.plans.dqn import DQNConfig
    from flowrl.plans.r2d2 import R2D2Config

    assert parse_config_flags(DQNConfig, []).model == DQNConfig().model
    config = parse_config_flags(R2D2Config, ["--model.max-seq-len", "10"],
                                {"model": {"lstm_cell_size": 32}})
    assert config.model == dataclasses.replace(R2D2Config().model, max_seq_len=10,
                                               lstm_cell_size=32)


def test_no_stop_trains_until_ctrl_c_and_exits_cleanly(fake_flowrl, monkeypatch, capsys):
    def interrupted_run(*args, **kwargs):
        assert kwargs["stop"] is None
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_trainer_module", lambda: types.SimpleNamespace(run=interrupted_run))
    code = cli.main(["train", "--run", "fakeppo", "--env", "CartPole-v1"])
    captured = capsys.readouterr()
    assert code == 0
    assert "until Ctrl-C (no --stop given)" in captured.out
    assert "Training interrupted; stopped cleanly (no checkpoint was saved)." in captured.err
    assert "saved a checkpoint" not in captured.err


@pytest.mark.parametrize("written", [True, False])
def test_ctrl_c_claims_a_checkpoint_only_when_one_exists(
    fake_flowrl, monkeypatch, capsys, tmp_path, written
):
    from flowrl.trainer import TrainingInterrupted

    checkpoint = tmp_path / "checkpoint_000003"
    if written:
        checkpoint.mkdir()

    def interrupted_run(*args, **kwargs):
        raise TrainingInterrupted(str(checkpoint))

    monkeypatch.setattr(cli, "_trainer_module", lambda: types.SimpleNamespace(run=interrupted_run))
    assert cli.main(["train", "--run", "fakeppo", "--env", "CartPole-v1"]) == 0
    err = capsys.readouterr().err
    assert ("saved a checkpoint at" in err) is written


def test_train_prints_the_last_result(fake_flowrl, capsys):
    assert cli.main(["train", "--run", "fakeppo", "--env", "CartPole-v1"]) == 0
    out = capsys.readouterr().out
    assert "Training finished." in out and "episode_reward_mean: 21.5" in out


# -- flowrl train: bad input gives exit code 2 and one clean message -------------------------------


def test_unknown_algorithm_lists_valid_names_and_the_closest(fake_flowrl, capsys):
    code = cli.main(["train", "--run", "fakepo", "--env", "CartPole-v1"])
    assert_usage_error(
        capsys, code, "Unknown algorithm 'fakepo'. Did you mean 'FakePPO'?", "FakePG, FakePPO"
    )


def test_bad_config_json(fake_flowrl, capsys):
    code = cli.main(["train", "--run", "fakeppo", "--env", "CartPole-v1", "--config", "{lr: 1}"])
    assert_usage_error(capsys, code, "--config is not valid JSON", "--config '{\"lr\": 0.001}'")


def test_config_json_must_be_an_object(fake_flowrl, capsys):
    code = cli.main(["train", "--run", "fakeppo", "--env", "CartPole-v1", "--config", "[1]"])
    assert_usage_error(capsys, code, "--config must be a JSON object; got config='[1]' (list)")


def test_unknown_config_key_suggests_the_closest(fake_flowrl, capsys):
    code = cli.main(
        ["train", "--run", "fakeppo", "--env", "CartPole-v1", "--config", '{"clip_parm": 0.1}']
    )
    assert_usage_error(
        capsys, code, "Unknown config key 'clip_parm'", "Did you mean 'clip_param'?",
        "flowrl train --run FakePPO --help",
    )  # fmt: skip


def test_misspelled_flag_suggests_the_closest(fake_flowrl, capsys):
    code = cli.main(["train", "--run", "fakeppo", "--env", "CartPole-v1", "--clip-parm", "0.1"])
    assert_usage_error(capsys, code, "Unknown flag --clip-parm", "Did you mean --clip-param?")
    code = cli.main(["train", "--run", "fakeppo", "--env", "CartPole-v1", "--learning_rate", "1"])
    assert_usage_error(capsys, code, "Did you mean --lr?")  # another library's name
    code = cli.main(["train", "--run", "fakeppo", "--env", "CartPole-v1", "--model", "{}"])
    assert_usage_error(capsys, code, "--model is a group of settings", "--model.fcnet-hiddens")
    code = cli.main(["train", "--run", "fakeppo", "--env", "CartPole-v1", "--lr"])
    assert_usage_error(capsys, code, "--lr needs a value")
    assert fake_flowrl == []


def test_wrong_flag_type_is_reported_with_the_value(fake_flowrl, capsys):
    code = cli.main(["train", "--run", "fakeppo", "--env", "CartPole-v1", "--num-workers", "a"])
    assert_usage_error(capsys, code, "num_workers expects int; got num_workers='a' (str)")


def test_literal_flag_lists_choices(fake_flowrl, capsys):
    code = cli.main(["train", "--run", "fakeppo", "--env", "CartPole-v1", "--framework", "jax"])
    assert_usage_error(capsys, code, "framework must be one of 'torch', 'tf'; got framework='jax'")


def test_cross_field_validation_error_shows_both_numbers(fake_flowrl, capsys):
    code = cli.main(
        [
            "train",
            "--run",
            "fakeppo",
            "--env",
            "CartPole-v1",
            "--train-batch-size",
            "100",
            "--rollout-fragment-length",
            "50",
        ]
    )
    assert_usage_error(capsys, code, "sgd_minibatch_size=128, train_batch_size=100")


def test_unknown_environment_suggests_the_closest(fake_flowrl, capsys):
    code = cli.main(["train", "--run", "fakeppo", "--env", "CartPol-v1"])
    assert_usage_error(
        capsys, code, "Unknown environment 'CartPol-v1'. Did you mean 'CartPole-v1'?"
    )
    assert fake_flowrl == []


def test_bad_stop_criteria(fake_flowrl, capsys):
    code = cli.main(["train", "--run", "fakeppo", "--env", "CartPole-v1", "--stop", '{"a": "x"}'])
    assert_usage_error(capsys, code, "--stop thresholds must be numbers; got a='x'")
    stop = '{"episode_reward_man": 450}'
    code = cli.main(["train", "--run", "fakeppo", "--env", "CartPole-v1", "--stop", stop])
    assert_usage_error(
        capsys, code, "Unknown stop criterion 'episode_reward_man'",
        "Did you mean 'episode_reward_mean'?",
    )  # fmt: skip
    assert fake_flowrl == []


def test_env_config_key_the_env_rejects(fake_flowrl, capsys):
    code = cli.main(
        ["train", "--run", "fakeppo", "--env", "CartPole-v1", "--env-config", '{"bogus": 1}']
    )
    assert_usage_error(
        capsys, code, "Environment 'CartPole-v1' rejected env_config={'bogus': 1}", "bogus"
    )
    assert fake_flowrl == []


def test_restore_of_another_algorithms_checkpoint(fake_flowrl, monkeypatch, capsys, tmp_path):
    from flowrl.trainer import RestoreError

    errors = [RestoreError("Checkpoint 'c' is for 'FakePG', this run trains 'FakePPO'.",
                           saved_algo="FakePG"),
              RestoreError("No flowrl checkpoint at 'c': expected the files ...")]

    def run(*args, **kwargs):
        raise errors.pop(0)

    trainer = types.SimpleNamespace(run=run, RestoreError=RestoreError)
    monkeypatch.setattr(cli, "_trainer_module", lambda: trainer)
    argv = ["train", "--run", "fakeppo", "--env", "CartPole-v1", "--restore", str(tmp_path)]
    assert_usage_error(capsys, cli.main(argv), "is for 'FakePG'",
                       "Pass --run FakePG (the checkpoint's algorithm)")
    # Any other restore error gets no hint about --run.
    assert "Pass --run" not in assert_usage_error(capsys, cli.main(argv), "No flowrl checkpoint")


def test_missing_config_file_and_restore_path(fake_flowrl, capsys, tmp_path):
    missing = str(tmp_path / "nope.yaml")
    code = cli.main(["train", "--run", "fakeppo", "--env", "CartPole-v1", "--config-file", missing])
    assert_usage_error(capsys, code, "--config-file:", "nope.yaml")
    code = cli.main(["train", "--run", "fakeppo", "--env", "CartPole-v1", "--restore", missing])
    assert_usage_error(capsys, code, "--restore names a checkpoint that does not exist")


def test_unknown_flag_and_missing_options_are_usage_errors(fake_flowrl, capsys):
    assert_usage_error(capsys, cli.main(["train", "--run", "fakeppo"]), "--env is required")
    assert_usage_error(capsys, cli.main(["train", "--env", "X"]), "--run is required")
    code = cli.main(["train", "--run", "fakeppo", "--env", "CartPole-v1", "--bogus", "1"])
    assert_usage_error(capsys, code, "Unknown flag --bogus for FakePPOConfig")
    assert_usage_error(capsys, cli.main(["list", "--bogus"]), "unrecognized arguments: --bogus")


# -- flowrl plan ---------------------------------------------------------------------------------


def test_plan_prints_the_lineage_without_training(fake_flowrl, capsys):
    code = cli.main(["plan", "--run", "FakePPO", "--config", '{"num_workers": 1}'])
    assert code == 0
    assert capsys.readouterr().out.strip() == repr(FakePlan())
    [(name, args, kwargs)] = fake_flowrl
    assert (name, args) == ("build_plan_preview", ("fakeppo", "CartPole-v1"))
    assert kwargs["config"] == FakePPOConfig(num_workers=1)


def test_plan_takes_config_flags(fake_flowrl, capsys):
    assert cli.main(["plan", "--run", "fakeppo", "--num-workers", "2"]) == 0
    assert fake_flowrl[0][2]["config"].num_workers == 2


def test_plan_dot_format_uses_viz_and_writes_the_output_file(
    fake_flowrl, monkeypatch, capsys, tmp_path
):
    viz = types.SimpleNamespace(to_dot=lambda graph: f"digraph {{ {graph} }}")
    monkeypatch.setitem(sys.modules, "flowrl.viz", viz)
    output = tmp_path / "plan.dot"
    code = cli.main(["plan", "--run", "fakeppo", "--format", "dot", "--output", str(output)])
    assert code == 0, capsys.readouterr().err
    assert output.read_text() == "digraph { GRAPH }\n"
    code = cli.main(["plan", "--run", "fakeppo", "--format", "html"])
    assert code == 1
    assert "needs flowrl.viz.to_html" in capsys.readouterr().err


# -- the installed command and the real algorithms -----------------------------------------------


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "flowrl.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "train" in result.stdout


def real_algorithms():
    try:
        return importlib.import_module("flowrl.plans").ALGORITHMS
    except ImportError as error:
        pytest.skip(f"flowrl.plans cannot be imported yet: {error}")


def test_list_shows_every_real_algorithm(capsys):
    algorithms = real_algorithms()
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for spec in algorithms.values():
        assert spec.name in out and spec.description in out


def test_help_of_every_real_algorithm_documents_every_field(capsys):
    for key, spec in real_algorithms().items():
        assert cli.main(["train", "--run", spec.name, "--help"]) == 0
        out = capsys.readouterr().out
        assert "(undocumented)" not in out, f"{spec.name} has a field without a docstring"
        for field in dataclasses.fields(spec.config_class):
            assert f"--{field.name.replace('_', '-')}" in out, (key, field.name)


def test_real_plan_preview_prints_text(capsys):
    real_algorithms()
    assert cli.main(["plan", "--run", "PPO", "--env", "CartPole-v1"]) == 0
    assert capsys.readouterr().out.strip()


def test_plan_reads_as_written_and_shows_the_internals_on_demand(capsys):
    real_algorithms()
    assert cli.main(["plan", "--run", "PPO"]) == 0
    plain = capsys.readouterr().out
    assert plain.startswith("ParallelRollouts(mode='bulk_sync').combine(ConcatBatches(")
    assert "batch_across_shards" not in plain and "operators:" not in plain
    assert cli.main(["plan", "--run", "PPO", "--internals"]) == 0
    internals = capsys.readouterr().out.split("operators:\n")[1]
    assert internals.splitlines() == [
        "  ParallelRollouts(mode='bulk_sync') = RolloutWorkers.batch_across_shards()"
        ".concat_samples.for_each(RecordSampledSteps())"]


def test_plan_text_lists_the_learner_thread_and_the_weights_going_back(capsys):
    real_algorithms()
    assert cli.main(["plan", "--run", "IMPALA"]) == 0
    lineage, links = capsys.readouterr().out.split("side links:\n")
    assert lineage.startswith("Concurrently(")
    assert links.splitlines() == [
        "  for_each(Enqueue(learner.inqueue)) --batches--> LearnerThread(policy default_policy)",
        "  for_each(BroadcastToSourceWorkers(broadcast_interval=1)) --weights--> "
        "ParallelRollouts(mode='async', num_async=2)",
        "  LearnerThread(policy default_policy) --results--> Dequeue(learner.outqueue)"]


def test_documented_a2c_microbatch_plan_command_works(capsys):
    """docs/writing_plans.md shows this command; it must run as printed there."""
    real_algorithms()
    code = cli.main(["plan", "--run", "A2C", "--config", '{"microbatch_size": 20}'])
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip()


def test_real_training_run_stops_after_one_iteration(capsys, tmp_path):
    real_algorithms()
    code = cli.main(
        ["train", "--run", "pg", "--env", "CartPole-v1", "--local-mode", "--verbose", "0",
         "--num-workers", "0", "--train-batch-size", "64", "--rollout-fragment-length", "32",
         "--num-envs-per-worker", "2", "--stop", json.dumps({"training_iteration": 1}),
         "--log-dir", str(tmp_path / "run")]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    lines = (tmp_path / "run" / "result.json").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["training_iteration"] == 1


def test_rollout_replays_a_checkpoint_and_prints_each_return(tmp_path, capsys, local_executor):
    import flowrl

    result = flowrl.run("pg", env="CartPole-v1", local_mode=True, verbose=0,
                        config={"num_workers": 0, "train_batch_size": 200,
                                "rollout_fragment_length": 50, "seed": 0},
                        stop={"training_iteration": 1}, checkpoint_dir=str(tmp_path))
    code = cli.main(["rollout", result["checkpoint"], "--episodes", "2",
                     "--out", str(tmp_path / "episodes.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("episode ") == 2 and "mean return over 2 episodes" in out
    written = json.loads((tmp_path / "episodes.json").read_text())
    assert written["env"] == "CartPole-v1" and len(written["episodes"]) == 2
    assert [e["episode"] for e in written["episodes"]] == [1, 2]
    assert written["mean_return"] == sum(e["return"] for e in written["episodes"]) / 2
    assert all(e["length"] == e["return"] for e in written["episodes"])  # +1 per step
    code = cli.main(["rollout", result["checkpoint"], "--out", str(tmp_path / "no" / "x.json")])
    assert_usage_error(capsys, code, "does not exist")


def test_rollout_records_each_episode_as_a_video(tmp_path, capsys, local_executor):
    import flowrl

    pytest.importorskip("moviepy", reason="pip install 'flowrl[video]' (make setup does)")
    result = flowrl.run("pg", env="CartPole-v1", local_mode=True, verbose=0,
                        config={"num_workers": 0, "train_batch_size": 200,
                                "rollout_fragment_length": 50, "seed": 0},
                        stop={"training_iteration": 1}, checkpoint_dir=str(tmp_path / "ckpt"))
    code = cli.main(["rollout", result["checkpoint"], "--episodes", "2",
                     "--video-dir", str(tmp_path / "videos"), "--out", str(tmp_path / "e.json")])
    out = capsys.readouterr().out
    assert code == 0 and "mean return over 2 episodes" in out
    videos = sorted(p.name for p in (tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 2 and all((tmp_path / "videos" / v).stat().st_size > 1000
                                    for v in videos)
    lengths = [e["length"] for e in json.loads((tmp_path / "e.json").read_text())["episodes"]]
    assert all(length >= 8 for length in lengths)


def test_rollout_of_a_missing_checkpoint_is_a_usage_error(tmp_path, capsys):
    code = cli.main(["rollout", str(tmp_path / "nope")])
    assert_usage_error(capsys, code, "No flowrl checkpoint", "Trainer.save()")
