"""Command-line flags for an algorithm's config, generated from its dataclass by tyro.

tyro reads the config class (field names, annotations, defaults and the docstring written under
each field) and builds one ``--<field>`` flag per field, with nested dataclasses as
``--model.<field>``; the help text is the field's docstring. flowrl adds three things on top:

* **one way to read a value**: every flag takes one token, parsed as JSON (``true``, ``null``,
  ``[64, 64]``, ``{"max_episode_steps": 200}``) or a Python literal; text fields take the text
  as is. Type checks and conversions are left to :func:`flowrl.config.from_dict`, so a flag and
  the same key in ``--config`` give the same value and the same error message;
* **defaults that include the other sources**: a flag's default is the value ``--config-file``
  and ``--config`` already set, so ``--help`` shows what a run would use;
* **flowrl's errors**: unknown flags get a did-you-mean suggestion and a missing value is named,
  in one paragraph (:class:`FlagError`), before tyro parses anything.

The result is the validated config instance, built once.

Examples:
    >>> from flowrl.config import AlgorithmConfig
    >>> config = parse_config_flags(AlgorithmConfig, ["--lr", "0.01", "--model.fcnet-hiddens",
    ...                                               "[32]"], overrides={"gamma": 0.9})
    >>> config.lr, config.gamma, config.model.fcnet_hiddens
    (0.01, 0.9, (32,))
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import difflib
import io
import json
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import tyro
from tyro.constructors import (
    ConstructorRegistry,
    PrimitiveConstructorSpec,
    PrimitiveTypeInfo,
    StructConstructorSpec,
    StructFieldSpec,
    StructTypeInfo,
)

from flowrl import config as config_lib

__all__ = ["FlagError", "config_flag_names", "config_help", "parse_config_flags"]

ConfigT = TypeVar("ConfigT")


class FlagError(ValueError):
    """A config flag that does not exist or lacks its value; the message is one paragraph."""


def parse_config_flags(
    config_class: type[ConfigT],
    flags: Sequence[str],
    overrides: Mapping[str, Any] | None = None,
    *,
    command: str = "flowrl train",
) -> ConfigT:
    """Builds ``config_class`` from ``overrides`` (file and JSON sources) and then ``flags``.

    Args:
        config_class: the algorithm's config dataclass.
        flags: tokens such as ``["--lr", "0.01", "--model.fcnet-hiddens=[32, 32]"]``.
        overrides: field -> value from sources of lower precedence (``--config-file``,
            ``--config``); a nested dict (``model``) is merged over that field's defaults.
        command: how the user invoked the command, for the messages.

    Raises:
        FlagError: for an unknown flag (naming the closest valid one) or a flag without value.
        ValueError, TypeError: from :func:`flowrl.config.from_dict` for a bad value.
    """
    _check_flags(config_class, flags, command)
    spelled = [_normalize_token(token) for token in flags]
    overrides = dict(overrides or {})
    values = _run_tyro(config_class, spelled, overrides, command, help=False)
    # tyro returns every field; an unknown key of --config stays in to get from_dict's message.
    return config_lib.from_dict(config_class, {**overrides, **values})


def config_help(
    config_class: type, overrides: Mapping[str, Any] | None = None, *, command: str
) -> str:
    """The ``--help`` text of the config flags: every field, its docstring and its default."""
    return _run_tyro(config_class, ["--help"], dict(overrides or {}), command, help=True)


def config_flag_names(config_class: type) -> list[str]:
    """Every config flag, e.g. ``["--framework", ..., "--model.fcnet-hiddens", ...]``."""
    names = []
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        if not field.init:
            continue
        flag = "--" + field.name.replace("_", "-")
        if _is_config_dataclass(hints[field.name]):
            names.extend(
                f"{flag}.{sub.removeprefix('--')}"
                for sub in config_flag_names(hints[field.name])
            )
        else:
            names.append(flag)
    return names


# =============================================================================================
# Checks before tyro parses: flowrl's messages for unknown flags and missing values
# =============================================================================================


def _check_flags(config_class: type, flags: Sequence[str], command: str) -> None:
    valid = config_flag_names(config_class)
    index = 0
    while index < len(flags):
        token = flags[index]
        if not token.startswith("--"):
            raise FlagError(
                f"Unexpected argument {token!r}: config flags come as --<field> VALUE pairs, "
                f"e.g. --lr 0.001. Quote a value that contains spaces: --model.fcnet-hiddens "
                f"'[64, 64]'."
            )
        name, has_value, _ = token.partition("=")
        flag = _normalize(name)
        if flag not in valid:
            raise FlagError(_unknown_flag_message(config_class, name, valid, command))
        if not has_value:
            if index + 1 >= len(flags) or flags[index + 1].startswith("--"):
                raise FlagError(
                    f"{name} needs a value, e.g. {name} {_example_value(config_class, flag)}. "
                    f"Values are JSON (true, null, [64, 64]) or text."
                )
            index += 1
        index += 1


def _normalize(name: str) -> str:
    """``--train_batch_size`` and ``--model.fcnet_hiddens`` are spelled with hyphens by tyro."""
    return "--" + name.removeprefix("--").replace("_", "-")


def _normalize_token(token: str) -> str:
    if not token.startswith("--"):
        return token  # a value
    name, separator, value = token.partition("=")
    return _normalize(name) + separator + value


def _unknown_flag_message(config_class: type, name: str, valid: list[str], command: str) -> str:
    flag = _normalize(name)
    field_name = flag.removeprefix("--").replace("-", "_")
    nested = [f for f in valid if f.startswith(flag + ".")]
    if nested:
        return (
            f"{name} is a group of settings, not one flag: set its fields one by one, e.g. "
            f"{nested[0]} VALUE ({', '.join(nested)}), or pass them together with --config "
            f"'{{\"{field_name}\": {{...}}}}'. See `{command} --help`."
        )
    close = difflib.get_close_matches(flag, valid, n=3, cutoff=0.6)
    alias = config_lib.OTHER_LIBRARY_NAMES.get(field_name)
    alias_flag = "--" + alias.replace("_", "-") if alias else None
    if alias_flag in valid and alias_flag not in close:
        close.insert(0, alias_flag)
    hint = f" Did you mean {close[0]}?" if close else ""
    more = f" Other close flags: {', '.join(close[1:])}." if len(close) > 1 else ""
    return (
        f"Unknown flag {name} for {config_class.__name__}.{hint}{more} "
        f"`{command} --help` lists every config flag with its meaning and default."
    )


def _example_value(config_class: type, flag: str) -> str:
    path = flag.removeprefix("--").replace("-", "_").split(".")
    return _value_text(_field_default_value(config_class, path))


def _field_default_value(config_class: type, path: list[str]) -> Any:
    klass: Any = config_class
    value: Any = None
    for name in path:
        field = next(f for f in dataclasses.fields(klass) if f.name == name)
        if field.default is not dataclasses.MISSING:
            value = field.default
        else:
            value = field.default_factory()  # type: ignore[misc]
        klass = type(value)
    return value


# =============================================================================================
# tyro: flags and help from the dataclass
# =============================================================================================


def _run_tyro(
    config_class: type, args: list[str], overrides: dict[str, Any], command: str, *, help: bool
) -> Any:
    """Runs tyro over ``args``; returns the nested dict of values, or the help text."""
    registry = _registry(config_class, overrides)
    description = (
        f"{config_class.__name__} fields. Each flag overrides the same key of --config and "
        f"--config-file (the defaults shown include those). Values are JSON (true, null, "
        f"[64, 64], {{...}}) or a Python literal; text fields take the text as is."
    )
    output = io.StringIO()
    with warnings.catch_warnings():
        # A default coming from --config is a plain list or dict where the field is a tuple or
        # a nested config; tyro warns about that, but the values go to from_dict, which
        # converts them.
        warnings.simplefilter("ignore")
        if not help:
            return tyro.cli(
                config_class,
                args=args,
                prog=command,
                description=description,
                registry=registry,
                config=(tyro.conf.FlagConversionOff,),
            )
        with contextlib.redirect_stdout(output), contextlib.suppress(SystemExit):
            tyro.cli(
                config_class,
                args=args,
                prog=command,
                description=description,
                registry=registry,
                config=(tyro.conf.FlagConversionOff,),
            )
    return output.getvalue()


def _registry(root_class: type, root_overrides: dict[str, Any]) -> ConstructorRegistry:
    """Rules that make tyro collect flag values into dicts for from_dict to validate."""
    registry = ConstructorRegistry()

    @registry.struct_rule
    def config_struct(info: StructTypeInfo) -> StructConstructorSpec | None:
        if not _is_config_dataclass(info.type):
            return None
        if info.type is root_class:
            given: Mapping[str, Any] = root_overrides
        elif isinstance(info.default, info.type):  # a nested config, e.g. the model settings
            given = {f.name: getattr(info.default, f.name) for f in dataclasses.fields(info.type)}
        else:
            given = {}
        docs = config_lib.field_docs(info.type)
        hints = typing.get_type_hints(info.type)
        fields = []
        for field in dataclasses.fields(info.type):
            if not field.init:
                continue
            annotation = hints[field.name]
            if _is_config_dataclass(annotation):
                # tyro only expands a nested config given an instance; --config's dict for it
                # becomes one (and is checked here, before the flags are read), merged over
                # this class's own default of the field (DQN's model is not ModelConfig()).
                default = _nested_default(info.type, field.name, annotation,
                                          given.get(field.name))
            elif field.name in given:
                default = given[field.name]
            else:
                default = _field_default_value(info.type, [field.name])
            fields.append(
                StructFieldSpec(
                    name=field.name,
                    type=annotation,
                    default=default,
                    helptext=docs.get(field.name) or None,
                )
            )
        return StructConstructorSpec(instantiate=_collect_values, fields=tuple(fields))

    @registry.primitive_rule
    def config_value(info: PrimitiveTypeInfo) -> PrimitiveConstructorSpec | None:
        if _is_config_dataclass(info.type):
            return None
        annotation = info.type
        return PrimitiveConstructorSpec(
            nargs=1,
            metavar=_metavar(annotation),
            instance_from_str=lambda tokens: parse_flag_value(tokens[0], annotation),
            is_instance=lambda value: True,
            str_from_instance=lambda value: [_value_text(value)],
        )

    return registry


def _nested_default(config_class: type, name: str, annotation: type, given: Any) -> Any:
    """The nested config `name` of `config_class` as flags start from: the class's default of
    that field, with `given` (a dict from --config, or an instance) over it."""
    base = _field_default_value(config_class, [name])
    if given is None:
        return base
    if isinstance(given, annotation):
        return given
    if isinstance(given, Mapping):
        given = {**{f.name: getattr(base, f.name) for f in dataclasses.fields(annotation)
                    if f.init}, **given}
    return config_lib.from_dict(annotation, given)


def _collect_values(**values: Any) -> dict[str, Any]:
    """What tyro "constructs" for a config: the field values, for from_dict to validate."""
    return values


def _is_config_dataclass(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def parse_flag_value(raw: str, annotation: Any) -> Any:
    """Reads one flag's text for a field: JSON (or a Python literal); text fields take text.

    Nothing is checked here: a value of the wrong type goes on to ``from_dict``, whose message
    names the field, the value and the fix.
    """
    options = [arg for arg in get_args(annotation) if arg is not type(None)]
    nullable = type(None) in get_args(annotation)
    if nullable and raw.strip().lower() in ("none", "null"):
        return None
    inner = options[0] if nullable and len(options) == 1 else annotation
    choices = get_args(inner) if get_origin(inner) is Literal else ()
    if inner is str or (choices and all(isinstance(choice, str) for choice in choices)):
        return raw
    if raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(raw)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return raw


def _metavar(annotation: Any) -> str:
    options = [arg for arg in get_args(annotation) if arg is not type(None)]
    nullable = type(None) in get_args(annotation)
    if get_origin(annotation) in (Union, types.UnionType) and len(options) == 1:
        annotation = options[0]
    if get_origin(annotation) is Literal:
        text = "{" + ",".join(str(choice) for choice in get_args(annotation)) + "}"
    else:
        text = {bool: "BOOL", int: "INT", float: "FLOAT", str: "TEXT"}.get(annotation, "JSON")
    return text + ("|null" if nullable else "")


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(_plain(value))


def _plain(value: Any) -> Any:
    """JSON-ready data: tuples become lists, nested configs dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value
