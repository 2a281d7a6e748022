"""The ``flowrl`` command: train an algorithm, list the algorithms, print a plan's graph.

Usage::

    flowrl train --run PPO --env CartPole-v1 --stop '{"episode_reward_mean": 450}'
    flowrl train --run PPO --help          # every PPOConfig field, its docstring and default
    flowrl list
    flowrl plan --run PPO --format dot --output ppo.dot
    flowrl train --run PPO --env CartPole-v1 --viewer   # live plan viewer on 127.0.0.1
    flowrl view results/PPO_CartPole-v1_<timestamp>     # the same page over a run's records
    flowrl export checkpoints/checkpoint_000010 --out exported/   # TorchScript or SavedModel

The command's own options (``--run``, ``--env``, ``--stop``, ...) are parsed here with argparse;
every other ``--<field>`` flag of ``flowrl train`` and ``flowrl plan`` belongs to the algorithm's
config and is generated from its dataclass by tyro (:mod:`flowrl.config_flags`), help text from
the field docstrings. Config sources are merged in this order, later ones winning:
``--config-file`` < ``--config`` JSON < per-field flags; the typed config is built once, before
anything starts, and handed to the trainer as it is.

This module is the only place in flowrl that changes process-wide state: the ``flowrl`` logger's
level (``--verbose``) and, while training, SIGTERM handling (turned into a Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from flowrl import config as config_lib

__all__ = ["CommandError", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TERMINATED = 128 + signal.SIGTERM
"""Training stopped by SIGTERM (after saving a checkpoint), as a shell reports a SIGTERM."""

class CommandError(Exception):
    """Bad command-line input (or a missing component): printed without a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``flowrl`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Bad input (bad JSON, an unknown config key, algorithm or environment, a wrong value type)
    prints one paragraph to stderr and returns 2; ``--help`` returns 0. Any other error (one
    the run finds, e.g. a config that cannot run on the env) prints its message without a
    traceback and returns 1; ``--debug`` raises it with its traceback instead. SIGTERM while
    training saves a checkpoint like Ctrl-C and returns 143 (128 + SIGTERM).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else ""
    try:
        parser = _build_parser()
        args, config_flags = parser.parse_known_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        if config_flags and args.command not in ("train", "plan"):
            raise CommandError(f"unrecognized arguments: {' '.join(config_flags)}")
        args.config_flags = config_flags
        handlers = {"train": _train, "list": _list, "plan": _plan, "rollout": _rollout,
                    "view": _view, "export": _export}
        return handlers[args.command](args)
    except CommandError as error:
        print(f"flowrl {command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except Exception as error:  # noqa: BLE001 -- the message is the report; --debug re-raises
        if "--debug" in argv:
            raise
        print(f"flowrl {command}: error: {_error_text(error)}\n(Run again with --debug to see "
              f"the traceback.)", file=sys.stderr)
        return EXIT_ERROR
    except SystemExit as exit_request:  # argparse: --help, --version, or a usage error
        code = exit_request.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_ERROR)


# =============================================================================================
# Parsers
# =============================================================================================


def _build_parser() -> argparse.ArgumentParser:
    """The command's own options; config flags are left over for :mod:`flowrl.config_flags`."""
    from flowrl import __version__

    parser = argparse.ArgumentParser(
        prog="flowrl",
        description="Distributed reinforcement learning where every algorithm is a dataflow plan.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"flowrl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train_parser(commands)
    commands.add_parser(
        "list",
        help="List the built-in algorithms.",
        description="List the built-in algorithms with one-line descriptions.",
        allow_abbrev=False,
    )
    _add_plan_parser(commands)
    _add_rollout_parser(commands)
    _add_export_parser(commands)
    _add_view_parser(commands)
    return parser


def _add_train_parser(commands: Any) -> None:
    train = commands.add_parser(
        "train",
        help="Train an algorithm on an environment.",
        description="Train an algorithm on an environment until the --stop criteria are met "
        "(or until Ctrl-C when none are given). Every run writes a run directory (config, "
        "progress.csv, result.json, TensorBoard events, periodic checkpoints).",
        epilog="Config flags: add --run ALGO before --help to list that algorithm's config "
        "fields as flags (e.g. `flowrl train --run PPO --help`). Precedence: --config-file < "
        "--config < per-field flags.",
        add_help=False,
        allow_abbrev=False,
    )
    _add_help_option(train)
    train.add_argument(
        "--run",
        metavar="ALGO",
        help="Algorithm name, case-insensitive (see `flowrl list`). Required.",
    )
    train.add_argument(
        "--env",
        metavar="ENV",
        help="A name registered with flowrl.register_env or a gymnasium id, e.g. CartPole-v1. "
        "Required.",
    )
    _add_config_source_options(train)
    train.add_argument(
        "--stop",
        metavar="JSON",
        help='Stop criteria: metric -> threshold, e.g. {"episode_reward_mean": '
        "450}. Default: train until Ctrl-C.",
    )
    train.add_argument(
        "--local-mode",
        action="store_true",
        help="Run everything in this process (no Ray); pdb works.",
    )
    train.add_argument(
        "--address",
        metavar="ADDR",
        help="Join the Ray cluster at ADDR instead of starting a local one.",
    )
    train.add_argument(
        "--checkpoint-dir", metavar="DIR", help="Directory to write the final checkpoint to."
    )
    train.add_argument("--restore", metavar="PATH", help="Checkpoint to restore before training.")
    train.add_argument(
        "--log-dir",
        metavar="DIR",
        help="Run directory for the records (default: results/<algo>_<env>_<timestamp>).",
    )
    train.add_argument(
        "--checkpoint-freq",
        type=int,
        default=10,
        metavar="N",
        help="Save a checkpoint in the run directory every N iterations; 0 = never "
        "(default: 10).",
    )
    train.add_argument(
        "--keep-checkpoints-num",
        type=int,
        default=3,
        metavar="N",
        help="Keep only the N most recent periodic checkpoints (default: 3); with "
        "--checkpoint-score-attr, the N best and the latest.",
    )
    train.add_argument(
        "--checkpoint-score-attr",
        metavar="KEY",
        help="Rank the periodic checkpoints by this result key, highest best (e.g. "
        "episode_reward_mean; min-KEY: lowest best), and keep the best ones.",
    )
    train.add_argument(
        "--viewer",
        action="store_true",
        help="Serve the live plan viewer on 127.0.0.1 while training and print its URL.",
    )
    train.add_argument(
        "--viewer-port",
        type=int,
        metavar="N",
        help="Port of the live plan viewer (implies --viewer; default: a free port).",
    )
    train.add_argument(
        "--verbose",
        type=int,
        default=1,
        metavar="N",
        help="0: warnings only, 1: progress (default), 2: debug logging.",
    )
    train.add_argument(
        "--stop-on-divergence",
        action="store_true",
        help="End the run (with a checkpoint) when it diverges: a loss or gradient norm "
        "explodes, or a discrete policy's entropy collapses (reported once either way).",
    )
    _add_debug_option(train)


def _add_debug_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug", action="store_true",
        help="On an error, show its full traceback instead of the message only.")


def _error_text(error: BaseException) -> str:
    """An error's message for the terminal: an operator error without its original traceback
    (``--debug`` shows it); other types than ValueError/TypeError are named."""
    text = str(error)
    if getattr(error, "remote_traceback", None):
        text = text.split("\nOriginal traceback:", 1)[0]
    if isinstance(error, (ValueError, TypeError)):
        return text
    return f"{type(error).__name__}: {text}"


def _add_help_option(parser: argparse.ArgumentParser) -> None:
    """``-h/--help`` that the command handles: with ``--run`` it adds the config flags' help."""
    parser.set_defaults(parser=parser)
    parser.add_argument(
        "-h", "--help", action="store_true", help="Show this help (with --run: and the config "
        "flags of that algorithm) and exit."
    )


def _add_plan_parser(commands: Any) -> None:
    plan = commands.add_parser(
        "plan",
        help="Print an algorithm's dataflow plan as a graph, without running it.",
        description="Build an algorithm's plan without running it and print its graph. Config "
        "flags work as in `flowrl train` (`flowrl plan --run ALGO --help` lists them).",
        add_help=False,
        allow_abbrev=False,
    )
    _add_help_option(plan)
    plan.add_argument("--run", metavar="ALGO", help="Algorithm name. Required.")
    plan.add_argument(
        "--env",
        default="CartPole-v1",
        metavar="ENV",
        help="Environment the plan is built for (default: CartPole-v1).",
    )
    _add_config_source_options(plan)
    plan.add_argument(
        "--format",
        choices=("text", "dot", "html"),
        default="text",
        help="text: the plan's lineage; dot: Graphviz; html: the plan viewer.",
    )
    plan.add_argument("--output", metavar="PATH", help="Write to PATH instead of stdout.")
    plan.add_argument(
        "--internals",
        action="store_true",
        help="Also show the engine steps inside operators such as ParallelRollouts (which the "
        "plan otherwise shows as the calls it makes).",
    )
    _add_debug_option(plan)
    plan.add_argument(
        "--iterations",
        type=int,
        default=0,
        metavar="N",
        help="Train N iterations in this process first, so the graph shows each operator's "
        "items, time and items/s (default: 0, the plan is only built).",
    )


def _add_view_parser(commands: Any) -> None:
    view = commands.add_parser(
        "view",
        help="Open the plan viewer over a run directory's records.",
        description="Serve the live plan viewer's page over a run directory (its plan.json and "
        "result.json) on 127.0.0.1 until Ctrl-C; it follows a run that is still writing. "
        "With --output, write the page as one self-contained HTML file instead.",
        allow_abbrev=False,
    )
    view.add_argument("run_dir", metavar="RUN_DIR",
                      help="A run directory, e.g. results/PPO_CartPole-v1_<timestamp>.")
    view.add_argument("--port", type=int, metavar="N",
                      help="Port to serve on (default: a free port).")
    view.add_argument("--output", metavar="PATH",
                      help="Write a self-contained HTML page to PATH instead of serving.")
    _add_debug_option(view)


def _add_rollout_parser(commands: Any) -> None:
    rollout = commands.add_parser(
        "rollout",
        help="Run a checkpoint's policy for some episodes and print each return.",
        description="Rebuild the policy saved in CHECKPOINT (in this process, without Ray) and "
        "run it without exploration, printing each episode's return.",
        allow_abbrev=False,
    )
    rollout.add_argument("checkpoint", metavar="CHECKPOINT",
                         help="A path Trainer.save returned, or a directory of checkpoints (a "
                         "run directory, Ray Tune's best.checkpoint): its latest one.")
    rollout.add_argument("--episodes", type=int, default=10, metavar="N",
                         help="Episodes to run (default: 10).")
    rollout.add_argument("--env-module", metavar="MODULE",
                         help="For a custom env: a module name or .py path to import first, "
                         "whose flowrl.register_env call registers the checkpoint's env.")
    rollout.add_argument("--env", metavar="ENV",
                         help="Run the policy in ENV instead of the env the checkpoint names.")
    rollout.add_argument("--trust-checkpoint", action="store_true",
                         help="Allow the checkpoint's env name to import the module it names "
                         "('module:EnvId'); refused otherwise, so a checkpoint runs no code.")
    rollout.add_argument("--video-dir", metavar="DIR",
                         help="Record every episode as an mp4 into DIR (gymnasium's "
                         "RecordVideo; the env is made with render_mode='rgb_array').")
    rollout.add_argument("--render", action="store_true",
                         help="Show the episodes in a window (render_mode='human'; needs a "
                         "display).")
    rollout.add_argument("--out", metavar="PATH",
                         help="Also write the episodes (return and length of each, and the "
                         "checkpoint and env they came from) to PATH as JSON.")
    _add_debug_option(rollout)


def _add_export_parser(commands: Any) -> None:
    export = commands.add_parser(
        "export",
        help="Export a checkpoint's policy for serving without flowrl (TorchScript or a TF "
        "SavedModel).",
        description="Rebuild the policy saved in CHECKPOINT (in this process) and write its "
        "greedy actions as a standalone model: TorchScript (OUT/policy.pt) for torch, a "
        "SavedModel (OUT) for TF. The model takes preprocessed observation rows.",
        allow_abbrev=False,
    )
    export.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="A path Trainer.save returned, or a directory of checkpoints.")
    export.add_argument("--out", metavar="DIR", required=True,
                        help="Directory to write the exported model into.")
    export.add_argument("--policy-id", metavar="ID",
                        help="The policy to export, in a multi-agent checkpoint.")
    export.add_argument("--env-module", metavar="MODULE",
                        help="For a custom env: a module to import first (see rollout).")
    export.add_argument("--trust-checkpoint", action="store_true",
                        help="Allow the checkpoint's env name to import the module it names.")
    _add_debug_option(export)


def _add_config_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="JSON",
        help='Config overrides as a JSON object, e.g. \'{"lr": 0.001, "model": '
        '{"fcnet_hiddens": [32, 32]}}\'.',
    )
    parser.add_argument(
        "--config-file",
        metavar="PATH",
        help="Config overrides from a YAML or JSON file (lowest precedence).",
    )


# =============================================================================================
# Commands
# =============================================================================================


def _train(args: argparse.Namespace) -> int:
    if args.help:
        return _print_help(args)
    key, algorithm = _resolve_algorithm(_required(args.run, "--run", "--run PPO"))
    env = _required(args.env, "--env", "--env CartPole-v1")
    config = _build_config(args, algorithm)
    _validate_environment(env, config.env_config)
    stop = _parse_stop(args.stop)
    if args.restore is not None and not Path(args.restore).exists():
        raise CommandError(
            f"--restore names a checkpoint that does not exist: restore={args.restore!r}. "
            f"Pass the path of a checkpoint written with --checkpoint-dir."
        )
    for option, value in (("--checkpoint-freq", args.checkpoint_freq),
                          ("--keep-checkpoints-num", args.keep_checkpoints_num)):
        if value < 0:
            raise CommandError(f"{option} must be >= 0; got {value}. Use 0 to turn it off.")
    _check_port(args.viewer_port, "--viewer-port")
    _configure_logging(args.verbose)
    trainer = _trainer_module()
    if args.verbose >= 1:
        until = json.dumps(stop) if stop else "Ctrl-C (no --stop given)"
        print(f"Training {algorithm.name} on {env} until {until}.", flush=True)
    terminated: list[int] = []
    try:
        with _sigterm_as_keyboard_interrupt(terminated):
            result = trainer.run(
                key,
                env,
                config=config,
                stop=stop,
                local_mode=args.local_mode,
                checkpoint_dir=args.checkpoint_dir,
                verbose=args.verbose,
                address=args.address,
                restore=args.restore,
                log_dir=args.log_dir,
                checkpoint_freq=args.checkpoint_freq,
                keep_checkpoints_num=args.keep_checkpoints_num,
                checkpoint_score_attr=args.checkpoint_score_attr,
                viewer=args.viewer,
                viewer_port=args.viewer_port,
                stop_on_divergence=args.stop_on_divergence,
            )
    except KeyboardInterrupt as interrupt:
        _report_interrupt(interrupt, terminated=bool(terminated))
        return EXIT_TERMINATED if terminated else EXIT_OK
    except _viewer_port_error() as error:
        raise CommandError(f"--viewer-port {args.viewer_port}: {error.strerror}") from None
    except _restore_error_type(trainer) as error:
        saved_algo = getattr(error, "saved_algo", None)
        hint = (f" Pass --run {saved_algo} (the checkpoint's algorithm), or a checkpoint "
                f"written by {algorithm.name}." if saved_algo else "")
        raise CommandError(f"--restore {args.restore}: {error}{hint}") from None
    if args.verbose >= 1:
        _print_result(result)
    return EXIT_OK


def _report_interrupt(interrupt: KeyboardInterrupt, *, terminated: bool = False) -> None:
    """Says where the checkpoint is only when one was written (run() sets its path)."""
    checkpoint = getattr(interrupt, "checkpoint", None)
    what = "Training terminated (SIGTERM)" if terminated else "Training interrupted"
    if checkpoint and os.path.isdir(checkpoint):
        print(f"\n{what}; saved a checkpoint at {checkpoint}.", file=sys.stderr)
    else:
        print(f"\n{what}; stopped cleanly (no checkpoint was saved).", file=sys.stderr)


def _restore_error_type(trainer: ModuleType) -> type[BaseException] | tuple[()]:
    return getattr(trainer, "RestoreError", ())


def _list(args: argparse.Namespace) -> int:
    del args
    algorithms = _load_algorithms()
    width = max((len(spec.name) for spec in algorithms.values()), default=0)
    for _, spec in sorted(algorithms.items()):
        print(f"{spec.name:<{width}}  {getattr(spec, 'description', '')}")
    print("\nRun `flowrl train --run ALGO --help` to see an algorithm's config fields.")
    return EXIT_OK


def _plan(args: argparse.Namespace) -> int:
    if args.help:
        return _print_help(args)
    key, algorithm = _resolve_algorithm(_required(args.run, "--run", "--run PPO"))
    config = _build_config(args, algorithm)
    _validate_environment(args.env, config.env_config)
    if args.iterations < 0:
        raise CommandError(f"--iterations must be >= 0; got {args.iterations}. Use 0 to only "
                           f"build the plan.")
    if args.iterations:
        plan, graph = _run_plan(key, args.env, config, args.iterations, args.internals)
    else:
        plan = _trainer_module().build_plan_preview(key, args.env, config=config)
        graph = plan.graph(internals=True) if args.internals else None
    if args.format == "text":
        rendered = repr(plan) + _side_links_text(plan.graph())
        if args.internals:
            rendered += _internals_text(plan)
    else:
        rendered = _render_graph(plan, args.format, graph)
    if args.output:
        Path(args.output).write_text(rendered + ("" if rendered.endswith("\n") else "\n"))
        print(f"Wrote the {algorithm.name} plan ({args.format}) to {args.output}", file=sys.stderr)
    else:
        print(rendered)
    return EXIT_OK


def _rollout(args: argparse.Namespace) -> int:
    if args.episodes < 1:
        raise CommandError(f"--episodes must be at least 1, got {args.episodes}.")
    if args.out:
        _check_writable_output(args.out)
    trainer = _restored_in_process(args, env=args.env)
    try:
        if args.video_dir or args.render:
            episodes = _rendered_episodes(trainer, args.episodes, video_dir=args.video_dir)
        else:
            episodes = trainer.workers.local_worker().evaluate(args.episodes)
        env_name = trainer.env_name
    finally:
        trainer.stop()
    for index, (episode_return, length) in enumerate(episodes, start=1):
        print(f"episode {index:3d}: return {episode_return:9.2f}  length {length}")
    mean = sum(r for r, _ in episodes) / len(episodes)
    print(f"mean return over {len(episodes)} episodes: {mean:.2f}")
    if args.out:
        record = {"checkpoint": str(args.checkpoint), "env": str(env_name),
                  "mean_return": mean,
                  "episodes": [{"episode": index, "return": float(episode_return),
                                "length": int(length)}
                               for index, (episode_return, length) in enumerate(episodes, 1)]}
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
        print(f"Wrote {len(episodes)} episodes to {args.out}", file=sys.stderr)
    return EXIT_OK


def _restored_in_process(args: argparse.Namespace, env: str | None = None) -> Any:
    """The checkpoint's trainer, rebuilt in this process to act (no workers, no callbacks)."""
    try:
        return _trainer_module().Trainer.from_checkpoint(
            args.checkpoint, local_mode=True, config={"num_workers": 0, "callbacks": None},
            env_module=args.env_module, env=env, trust_checkpoint=args.trust_checkpoint)
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(str(error)) from None


def _export(args: argparse.Namespace) -> int:
    from flowrl.export import export_policy

    trainer = _restored_in_process(args)
    try:
        try:
            policy = trainer.get_policy(args.policy_id)
        except (KeyError, AttributeError) as error:
            raise CommandError(f"{error}; pass --policy-id with one of the checkpoint's "
                               f"policies.") from None
        try:
            path = export_policy(policy, args.out)
        except ValueError as error:
            raise CommandError(str(error)) from None
    finally:
        trainer.stop()
    print(f"Exported the {policy.framework} policy to {path}")
    return EXIT_OK


def _rendered_episodes(trainer: Any, episodes: int, *, video_dir: str | None
                       ) -> list[tuple[float, int]]:
    """Runs `episodes` greedy episodes on an env made to render: recorded into `video_dir`
    (RecordVideo) or shown in a window; returns (return, length) of each."""
    import gymnasium

    if trainer.workers.multi_agent:
        raise CommandError("--video-dir and --render run single-agent envs; this checkpoint's "
                           "env is multi-agent. Use flowrl rollout without them.")
    mode = "rgb_array" if video_dir else "human"
    env_config = {**trainer.config.env_config, "render_mode": mode}
    try:
        env = trainer.workers.env_creator(env_config)
    except TypeError as error:
        raise CommandError(
            f"--{'video-dir' if video_dir else 'render'} makes the env with render_mode={mode!r}, "
            f"which {trainer.env_name!r} does not accept ({error}); give its constructor a "
            f"render_mode parameter, as gymnasium's envs have.") from None
    if video_dir:
        try:
            env = gymnasium.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda _: True,
                                                 disable_logger=True)
        except gymnasium.error.DependencyNotInstalled as error:
            env.close()
            raise CommandError(f"--video-dir needs moviepy: {error}. Install it with "
                               f"pip install 'flowrl[video]'.") from None
    policy = trainer.get_policy()
    finished = []
    try:
        for episode in range(episodes):
            finished.append(_one_episode(env, policy, seed=episode))
    except gymnasium.error.DependencyNotInstalled as error:
        raise CommandError(f"rendering {trainer.env_name!r} needs a package that is not "
                           f"installed: {error}") from None
    finally:
        env.close()
    return finished


def _one_episode(env: Any, policy: Any, *, seed: int) -> tuple[float, int]:
    """One greedy episode of `policy` on `env`, carrying a recurrent policy's state."""
    import gymnasium
    import numpy as np

    obs, _ = env.reset(seed=seed)
    state, total, length, done = None, 0.0, 0, False
    action = reward = None  # the previous step's, for a model that reads them
    while not done:
        action, state, _ = policy.compute_single_action(obs, state, explore=False,
                                                        prev_action=action, prev_reward=reward)
        if isinstance(env.action_space, gymnasium.spaces.Box):
            action = np.clip(action, env.action_space.low, env.action_space.high)
        obs, reward, terminated, truncated, _ = env.step(action)
        total, length, done = total + float(reward), length + 1, terminated or truncated
    return total, length


def _check_writable_output(path: str) -> None:
    """Refuses an --out path whose directory is missing, before anything runs."""
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise CommandError(f"--out {path}: the directory {parent} does not exist; create it "
                           f"or pick a path in an existing directory.")


def _internals_text(plan: Any) -> str:
    """What each operator of the plan that built several engine steps is made of."""
    from flowrl.iter.groups import group_internals

    lines = [f"  {label} = {steps}" for label, steps in group_internals(plan._node)]
    return "\noperators:\n" + "\n".join(lines) if lines else ""


def _run_plan(key: str, env: str, config: Any, iterations: int,
              internals: bool = False) -> tuple[Any, Any]:
    """Trains ``iterations`` iterations in this process; the plan and its graph with rates."""
    from flowrl.iter.executor import init
    from flowrl.viz.live import annotate_rates

    init(local_mode=True)
    trainer = _trainer_module().Trainer(key, env=env, config=config)
    try:
        result = None
        for _ in range(iterations):
            result = trainer.train()
        return trainer.plan, annotate_rates(trainer.plan_graph(internals=internals), result)
    finally:
        trainer.stop()


def _check_port(port: int | None, option: str) -> None:
    if port is not None and not 0 <= port <= 65535:
        raise CommandError(f"{option} must be a port from 1 to 65535 (0 or none: a free one); "
                           f"got {port}.")


def _viewer_port_error() -> type[BaseException]:
    from flowrl.viz.live import ViewerPortError

    return ViewerPortError


def _view(args: argparse.Namespace) -> int:
    from flowrl.viz import live

    _check_port(args.port, "--port")
    try:
        if args.output:
            path = live.write_run_page(args.run_dir, args.output)
            print(f"Wrote the viewer page for {args.run_dir} to {path}")
            return EXIT_OK
        server = live.serve_run_dir(args.run_dir, port=args.port)
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(str(error)) from None
    except live.ViewerPortError as error:
        raise CommandError(f"--port {args.port}: {error.strerror}") from None
    print(f"Plan viewer for {args.run_dir}: {server.url} (Ctrl-C to stop)", flush=True)
    try:
        with _sigterm_as_keyboard_interrupt():
            _block_until_interrupted()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return EXIT_OK


def _block_until_interrupted() -> None:
    """Waits for Ctrl-C (or SIGTERM) while the viewer's server thread serves."""
    threading.Event().wait()


def _side_links_text(graph: Any) -> str:
    """The plan's side links (learner thread, replay memory, weights back to the workers),
    one per line under the lineage; empty for a plan without any."""
    lines = [f"  {graph.nodes[u]['label']} --{attrs.get('label') or ''}--> "
             f"{graph.nodes[v]['label']}"
             for u, v, attrs in graph.edges(data=True) if attrs.get("side")]
    return "\nside links:\n" + "\n".join(lines) if lines else ""


def _render_graph(plan: Any, output_format: str, graph: Any = None) -> str:
    try:
        viz = importlib.import_module("flowrl.viz")
    except ImportError as error:
        raise CommandError(
            f"--format {output_format} needs flowrl.viz, which cannot be imported ({error}). "
            f"Use --format text.",
            EXIT_ERROR,
        ) from None
    renderer = getattr(viz, f"to_{output_format}", None)
    if renderer is None:
        raise CommandError(
            f"--format {output_format} needs flowrl.viz.to_{output_format}, which this "
            f"installation does not have. Use --format dot or --format text.",
            EXIT_ERROR,
        )
    return renderer(plan.graph() if graph is None else graph)


# =============================================================================================
# Helpers
# =============================================================================================


def _load_algorithms() -> Mapping[str, Any]:
    """``flowrl.plans.ALGORITHMS``: lower-case name -> AlgorithmSpec."""
    try:
        plans = importlib.import_module("flowrl.plans")
    except ImportError as error:
        raise CommandError(
            f"Could not import flowrl.plans, where the algorithms are registered: {error}. "
            f"Run `python -c 'import flowrl.plans'` to see the full traceback.",
            EXIT_ERROR,
        ) from None
    return plans.ALGORITHMS


def _trainer_module() -> ModuleType:
    try:
        return importlib.import_module("flowrl.trainer")
    except ImportError as error:
        raise CommandError(
            f"Could not import flowrl.trainer: {error}. "
            f"Run `python -c 'import flowrl.trainer'` to see the full traceback.",
            EXIT_ERROR,
        ) from None


def _required(value: str | None, option: str, example: str) -> str:
    if not value:
        raise CommandError(f"{option} is required, e.g. {example}. Run with --help for the rest.")
    return value


def _print_help(args: argparse.Namespace) -> int:
    """The command's options, then (given --run) the algorithm's config flags from tyro."""
    print(args.parser.format_help())
    if args.run:
        _, algorithm = _resolve_algorithm(args.run)
        overrides = _collect_overrides(args)
        print(_config_flags().config_help(
            algorithm.config_class, overrides,
            command=f"flowrl {args.command} --run {algorithm.name}"))
    return EXIT_OK


def _config_flags() -> ModuleType:
    """flowrl.config_flags, imported on first use (tyro takes a moment to import)."""
    return importlib.import_module("flowrl.config_flags")


def _resolve_algorithm(name: str) -> tuple[str, Any]:
    algorithms = _load_algorithms()
    key = name.lower()
    if key in algorithms:
        return key, algorithms[key]
    display = {k: getattr(spec, "name", k) for k, spec in algorithms.items()}
    close = difflib.get_close_matches(key, list(algorithms), n=1, cutoff=0.5)
    hint = f" Did you mean {display[close[0]]!r}?" if close else ""
    valid = ", ".join(sorted(display.values())) or "none registered"
    raise CommandError(
        f"Unknown algorithm {name!r}.{hint} Valid algorithms (case-insensitive): {valid}. "
        f"Run `flowrl list` for their descriptions."
    )


def _collect_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Merges --config-file < --config (the per-field flags come on top, in _build_config)."""
    overrides: dict[str, Any] = {}
    if args.config_file:
        try:
            file_overrides = config_lib.load_config_file(args.config_file)
        except (OSError, ValueError) as error:
            raise CommandError(f"--config-file: {error}") from None
        _merge_into(overrides, file_overrides)
    if args.config:
        _merge_into(overrides, _parse_json_object(args.config, "--config", '{"lr": 0.001}'))
    return overrides


def _build_config(args: argparse.Namespace, algorithm: Any) -> Any:
    """The algorithm's typed config from every source, built once; errors become usage errors."""
    overrides = _collect_overrides(args)
    try:
        return _config_flags().parse_config_flags(
            algorithm.config_class, args.config_flags, overrides,
            command=f"flowrl {args.command} --run {algorithm.name}",
        )
    except (TypeError, ValueError) as error:
        raise CommandError(str(error)) from None


def _merge_into(overrides: dict[str, Any], new: Mapping[str, Any]) -> None:
    """Later sources win; two dicts for the same key (e.g. "model") merge one level deep."""
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(overrides.get(key), Mapping):
            overrides[key] = {**overrides[key], **value}
        else:
            overrides[key] = value


def _parse_json_object(text: str, option: str, example: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise CommandError(
            f"{option} is not valid JSON ({error.msg} at line {error.lineno} column "
            f"{error.colno}); got {option.lstrip('-')}={text!r}. Pass a JSON object in single "
            f"quotes, e.g. {option} '{example}'."
        ) from None
    if not isinstance(value, dict):
        raise CommandError(
            f"{option} must be a JSON object; got {option.lstrip('-')}={text!r} "
            f"({type(value).__name__}). Example: {option} '{example}'."
        )
    return value


def _parse_stop(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    from flowrl.reporting import validate_stop

    stop = _parse_json_object(text, "--stop", '{"episode_reward_mean": 450}')
    for metric, threshold in stop.items():
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise CommandError(
                f"--stop thresholds must be numbers; got {metric}={threshold!r}. "
                f'Example: --stop \'{{"episode_reward_mean": 450, "training_iteration": 100}}\'.'
            )
    try:
        return validate_stop(stop)
    except (TypeError, ValueError) as error:
        raise CommandError(f"--stop: {error}") from None


def _validate_environment(name: str, env_config: Mapping[str, Any]) -> None:
    """Resolves ``name`` and builds one env with ``env_config``, so a key the env rejects is a
    usage error here instead of a traceback from every rollout worker."""
    from flowrl import env as env_lib

    try:
        creator = env_lib.get_env_creator(name)
    except (TypeError, ValueError) as error:
        raise CommandError(str(error)) from None
    try:
        env = creator(dict(env_config))
    except TypeError as error:
        raise CommandError(
            f"Environment {name!r} rejected env_config={dict(env_config)!r}: {error}. "
            f"env_config holds the creator's keyword arguments (gymnasium.make's for a "
            f"gymnasium id, e.g. {{\"max_episode_steps\": 200}}); remove or rename the key."
        ) from None
    close = getattr(env, "close", None)
    if callable(close):
        close()


def _configure_logging(verbose: int) -> None:
    """Process-wide: the CLI owns logging (library code never configures it)."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("flowrl").setLevel(level)


@contextlib.contextmanager
def _sigterm_as_keyboard_interrupt(received: list[int] | None = None) -> Iterator[None]:
    """While training, SIGTERM (e.g. from a job scheduler) stops it like Ctrl-C does; the
    signal number is appended to ``received``. (The Trainer keeps this handler when Ray's start
    replaces it.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        del frame
        if received is not None:
            received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_result(result: Any) -> None:
    if not isinstance(result, Mapping):
        print(f"Training finished. Last result: {result!r}")
        return
    scalars = {
        key: value
        for key, value in result.items()
        if isinstance(value, (int, float, str)) and not isinstance(value, bool)
    }
    print("Training finished. Last result:")
    for key in sorted(scalars):
        print(f"  {key}: {scalars[key]}")


if __name__ == "__main__":
    sys.exit(main())
