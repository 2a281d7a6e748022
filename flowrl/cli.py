"""The ``flowrl`` command: train an algorithm, list the algorithms, print a plan's graph.

Usage::

    flowrl train --run PPO --env CartPole-v1 --stop '{"episode_reward_mean": 450}'
    flowrl train --run PPO --help          # every PPOConfig field, its docstring and default
    flowrl list
    flowrl plan --run PPO --format dot --output ppo.dot

``flowrl train`` parses in two phases: it first reads ``--run`` and then builds its parser from
that algorithm's config class, with one ``--<field>`` flag per config field (the CLI never
mirrors a config by hand). Config sources are merged in this order, later ones winning:
``--config-file`` < ``--config`` JSON < per-field flags; the result is validated by
:func:`flowrl.config.from_dict` before anything starts.

This module is the only place in flowrl that changes process-wide state: the ``flowrl`` logger's
level (``--verbose``) and, while training, SIGTERM handling (turned into a Ctrl-C).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import difflib
import importlib
import json
import logging
import signal
import sys
import threading
import types
import typing
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Union, get_args, get_origin

from flowrl import config as config_lib

__all__ = ["CommandError", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

# Options of `flowrl train` itself; a config field with one of these names gets no flag of its
# own (set it with --config instead).
_TRAIN_OPTIONS = frozenset(
    {
        "run",
        "env",
        "config",
        "config_file",
        "stop",
        "local_mode",
        "address",
        "checkpoint_dir",
        "restore",
        "verbose",
        "help",
    }
)
_FIELD_DEST_PREFIX = "field__"


class CommandError(Exception):
    """Bad command-line input (or a missing component): printed without a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``flowrl`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Bad input (bad JSON, an unknown config key, algorithm or environment, a wrong value type)
    prints one paragraph to stderr and returns 2; ``--help`` returns 0.
    """
    argv = _normalize_flag_names(list(sys.argv[1:] if argv is None else argv))
    command = argv[0] if argv else ""
    try:
        spec = _peek_algorithm(argv[1:]) if command == "train" else None
        args = _build_parser(spec).parse_args(argv)
        if args.command is None:
            _build_parser(None).print_help(sys.stderr)
            return EXIT_USAGE
        handlers = {"train": _train, "list": _list, "plan": _plan, "rollout": _rollout}
        return handlers[args.command](args)
    except CommandError as error:
        print(f"flowrl {command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except SystemExit as exit_request:  # argparse: --help, --version, or a usage error
        code = exit_request.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_ERROR)


# =============================================================================================
# Parsers
# =============================================================================================


def _build_parser(spec: tuple[str, Any] | None) -> argparse.ArgumentParser:
    """The full parser; ``spec`` (key, AlgorithmSpec) adds that algorithm's config flags."""
    from flowrl import __version__

    parser = argparse.ArgumentParser(
        prog="flowrl",
        description="Distributed reinforcement learning where every algorithm is a dataflow plan.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"flowrl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train_parser(commands, spec)
    commands.add_parser(
        "list",
        help="List the built-in algorithms.",
        description="List the built-in algorithms with one-line descriptions.",
        allow_abbrev=False,
    )
    _add_plan_parser(commands)
    _add_rollout_parser(commands)
    return parser


def _add_train_parser(commands: Any, spec: tuple[str, Any] | None) -> None:
    train = commands.add_parser(
        "train",
        help="Train an algorithm on an environment.",
        description="Train an algorithm on an environment until the --stop criteria are met "
        "(or until Ctrl-C when none are given).",
        epilog=_train_epilog(spec),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    train.add_argument(
        "--run",
        required=True,
        metavar="ALGO",
        help="Algorithm name, case-insensitive (see `flowrl list`).",
    )
    train.add_argument(
        "--env",
        required=True,
        metavar="ENV",
        help="A name registered with flowrl.register_env or a gymnasium id, e.g. CartPole-v1.",
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
    train.add_argument("--checkpoint-dir", metavar="DIR", help="Directory to write checkpoints to.")
    train.add_argument("--restore", metavar="PATH", help="Checkpoint to restore before training.")
    train.add_argument(
        "--verbose",
        type=int,
        default=1,
        metavar="N",
        help="0: warnings only, 1: progress (default), 2: debug logging.",
    )
    if spec is not None:
        _add_field_options(train, spec)


def _add_plan_parser(commands: Any) -> None:
    plan = commands.add_parser(
        "plan",
        help="Print an algorithm's dataflow plan as a graph, without running it.",
        description="Build an algorithm's plan without running it and print its graph.",
        allow_abbrev=False,
    )
    plan.add_argument("--run", required=True, metavar="ALGO", help="Algorithm name.")
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


def _add_rollout_parser(commands: Any) -> None:
    rollout = commands.add_parser(
        "rollout",
        help="Run a checkpoint's policy for some episodes and print each return.",
        description="Rebuild the policy saved in CHECKPOINT (in this process, without Ray) and "
        "run it without exploration, printing each episode's return.",
        allow_abbrev=False,
    )
    rollout.add_argument("checkpoint", metavar="CHECKPOINT", help="A path Trainer.save returned.")
    rollout.add_argument("--episodes", type=int, default=10, metavar="N",
                         help="Episodes to run (default: 10).")


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


def _add_field_options(parser: argparse.ArgumentParser, spec: tuple[str, Any]) -> None:
    """One ``--<field>`` option per config field, help text from the field's docstring."""
    _, algorithm = spec
    config_class = algorithm.config_class
    docs = config_lib.field_docs(config_class)
    hints = typing.get_type_hints(config_class)
    group = parser.add_argument_group(
        f"{algorithm.name} config ({config_class.__name__})",
        "Each flag overrides the same key of --config and --config-file. Values are parsed as "
        "JSON (true, null, [64, 64], {...}); text fields take the text as is.",
    )
    for field in dataclasses.fields(config_class):
        if not field.init or field.name in _TRAIN_OPTIONS:
            continue
        annotation = hints[field.name]
        default = _field_default_text(field)
        doc = docs.get(field.name) or "(undocumented)"
        kind = "" if get_origin(annotation) is Literal else f"{config_lib.type_name(annotation)}; "
        help_text = f"{doc} [{kind}default: {default}]"
        group.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=_FIELD_DEST_PREFIX + field.name,
            metavar=_metavar(annotation),
            default=argparse.SUPPRESS,
            help=help_text.replace("%", "%%"),
        )


def _train_epilog(spec: tuple[str, Any] | None) -> str:
    if spec is None:
        return (
            "Add --run ALGO before --help to list that algorithm's config fields as flags, e.g.\n"
            "  flowrl train --run PPO --help\n"
            "Precedence: --config-file < --config < per-field flags."
        )
    _, algorithm = spec
    lines = ["Precedence: --config-file < --config < per-field flags.", ""]
    for field in dataclasses.fields(algorithm.config_class):
        nested = typing.get_type_hints(algorithm.config_class)[field.name]
        if isinstance(nested, type) and dataclasses.is_dataclass(nested):
            lines.append(
                f"{field.name} settings, given as --{field.name.replace('_', '-')} JSON or "
                f"--config '{{\"{field.name}\": {{...}}}}' (merged over the defaults):"
            )
            docs = config_lib.field_docs(nested)
            for sub in dataclasses.fields(nested):
                lines.append(f"  {sub.name} [default: {_field_default_text(sub)}]")
                lines.append(f"      {docs.get(sub.name, '')}")
            lines.append("")
    example = f"flowrl train --run {algorithm.name} --env CartPole-v1 --num-workers 2"
    lines.append(f"Example:\n  {example} --stop '{{\"training_iteration\": 10}}'")
    return "\n".join(lines)


def _field_default_text(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return f"the {type(value).__name__} defaults listed below"
    return value if isinstance(value, str) else json.dumps(value)


def _metavar(annotation: Any) -> str:
    options = [arg for arg in get_args(annotation) if arg is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType) and len(options) == 1:
        annotation = options[0]
    if get_origin(annotation) is Literal:
        return "{" + ",".join(str(choice) for choice in get_args(annotation)) + "}"
    simple = {bool: "BOOL", int: "INT", float: "FLOAT", str: "TEXT"}
    return simple.get(annotation, "JSON")


def _normalize_flag_names(argv: list[str]) -> list[str]:
    """Accepts ``--train_batch_size`` as well as ``--train-batch-size`` (values are untouched)."""
    normalized = []
    for token in argv:
        if token.startswith("--"):
            name, separator, value = token.partition("=")
            token = name.replace("_", "-") + separator + value
        normalized.append(token)
    return normalized


# =============================================================================================
# Commands
# =============================================================================================


def _train(args: argparse.Namespace) -> int:
    key, algorithm = _resolve_algorithm(args.run)
    overrides = _collect_overrides(args, algorithm.config_class)
    _validate_environment(args.env)
    stop = _parse_stop(args.stop)
    if args.restore is not None and not Path(args.restore).exists():
        raise CommandError(
            f"--restore names a checkpoint that does not exist: restore={args.restore!r}. "
            f"Pass the path of a checkpoint written with --checkpoint-dir."
        )
    _configure_logging(args.verbose)
    trainer = _trainer_module()
    if args.verbose >= 1:
        until = json.dumps(stop) if stop else "Ctrl-C (no --stop given)"
        print(f"Training {algorithm.name} on {args.env} until {until}.", flush=True)
    try:
        with _sigterm_as_keyboard_interrupt():
            result = trainer.run(
                key,
                args.env,
                config=overrides,
                stop=stop,
                local_mode=args.local_mode,
                checkpoint_dir=args.checkpoint_dir,
                verbose=args.verbose,
                address=args.address,
                restore=args.restore,
            )
    except KeyboardInterrupt:
        where = f" Checkpoints are in {args.checkpoint_dir}." if args.checkpoint_dir else ""
        print(f"\nTraining interrupted; stopped cleanly.{where}", file=sys.stderr)
        return EXIT_OK
    if args.verbose >= 1:
        _print_result(result)
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    del args
    algorithms = _load_algorithms()
    width = max((len(spec.name) for spec in algorithms.values()), default=0)
    for _, spec in sorted(algorithms.items()):
        print(f"{spec.name:<{width}}  {getattr(spec, 'description', '')}")
    print("\nRun `flowrl train --run ALGO --help` to see an algorithm's config fields.")
    return EXIT_OK


def _plan(args: argparse.Namespace) -> int:
    key, algorithm = _resolve_algorithm(args.run)
    overrides = _collect_overrides(args, algorithm.config_class)
    _validate_environment(args.env)
    plan = _trainer_module().build_plan_preview(key, args.env, config=overrides)
    if args.format == "text":
        rendered = repr(plan)
    else:
        rendered = _render_graph(plan, args.format)
    if args.output:
        Path(args.output).write_text(rendered + ("" if rendered.endswith("\n") else "\n"))
        print(f"Wrote the {algorithm.name} plan ({args.format}) to {args.output}", file=sys.stderr)
    else:
        print(rendered)
    return EXIT_OK


def _rollout(args: argparse.Namespace) -> int:
    if args.episodes < 1:
        raise CommandError(f"--episodes must be at least 1, got {args.episodes}.")
    try:
        trainer = _trainer_module().Trainer.from_checkpoint(
            args.checkpoint, local_mode=True, config={"num_workers": 0}
        )
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(str(error)) from None
    try:
        episodes = trainer.workers.local_worker().evaluate(args.episodes)
    finally:
        trainer.stop()
    for index, (episode_return, length) in enumerate(episodes, start=1):
        print(f"episode {index:3d}: return {episode_return:9.2f}  length {length}")
    mean = sum(r for r, _ in episodes) / len(episodes)
    print(f"mean return over {len(episodes)} episodes: {mean:.2f}")
    return EXIT_OK


def _render_graph(plan: Any, output_format: str) -> str:
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
    return renderer(plan.graph())


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


def _peek_algorithm(argv: Sequence[str]) -> tuple[str, Any] | None:
    """Phase one of `flowrl train`: finds ``--run`` so phase two can add its config flags."""
    peek = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    peek.add_argument("--run")
    known, _ = peek.parse_known_args(argv)
    return None if known.run is None else _resolve_algorithm(known.run)


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


def _collect_overrides(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """Merges --config-file < --config < per-field flags and validates the result."""
    overrides: dict[str, Any] = {}
    if args.config_file:
        try:
            file_overrides = config_lib.load_config_file(args.config_file)
        except (OSError, ValueError) as error:
            raise CommandError(f"--config-file: {error}") from None
        _merge_into(overrides, file_overrides)
    if args.config:
        _merge_into(overrides, _parse_json_object(args.config, "--config", '{"lr": 0.001}'))
    hints = typing.get_type_hints(config_class)
    for dest, raw in vars(args).items():
        if dest.startswith(_FIELD_DEST_PREFIX):
            name = dest.removeprefix(_FIELD_DEST_PREFIX)
            _merge_into(overrides, {name: _parse_flag_value(raw, hints[name])})
    try:
        with warnings.catch_warnings():  # shown once, when the trainer builds the config
            warnings.simplefilter("ignore")
            config_lib.from_dict(config_class, overrides)
    except (TypeError, ValueError) as error:
        raise CommandError(str(error)) from None
    return overrides


def _merge_into(overrides: dict[str, Any], new: Mapping[str, Any]) -> None:
    """Later sources win; two dicts for the same key (e.g. "model") merge one level deep."""
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(overrides.get(key), Mapping):
            overrides[key] = {**overrides[key], **value}
        else:
            overrides[key] = value


def _parse_flag_value(raw: str, annotation: Any) -> Any:
    """Parses one flag's text for a field: JSON (or a Python literal); text fields take text."""
    options = [arg for arg in get_args(annotation) if arg is not type(None)]
    nullable = type(None) in get_args(annotation)
    if nullable and raw.strip().lower() in ("none", "null"):
        return None
    inner = options[0] if nullable and len(options) == 1 else annotation
    choices = get_args(inner) if get_origin(inner) is Literal else ()
    if inner is str or (choices and all(isinstance(choice, str) for choice in choices)):
        return raw
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(raw)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    if raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    return raw  # from_dict reports the type mismatch with the field's name


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
    stop = _parse_json_object(text, "--stop", '{"episode_reward_mean": 450}')
    for metric, threshold in stop.items():
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise CommandError(
                f"--stop thresholds must be numbers; got {metric}={threshold!r}. "
                f'Example: --stop \'{{"episode_reward_mean": 450, "training_iteration": 100}}\'.'
            )
    return stop


def _validate_environment(name: str) -> None:
    from flowrl import env as env_lib

    try:
        env_lib.get_env_creator(name)
    except (TypeError, ValueError) as error:
        raise CommandError(str(error)) from None


def _configure_logging(verbose: int) -> None:
    """Process-wide: the CLI owns logging (library code never configures it)."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("flowrl").setLevel(level)


@contextlib.contextmanager
def _sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """While training, SIGTERM (e.g. from a job scheduler) stops it like Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        del signum, frame
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
