"""Command-line options from config dataclasses, and YAML/JSON config files."""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rlhf_env.extras import require


def _none_or(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names it in errors
    return parse


def _converter(hint: Any) -> tuple[Callable[[str], Any] | None, bool]:
    """``(type for argparse, is_bool)`` of a field's type hint (``X | None`` takes "none")."""
    arguments = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in arguments:
        (inner,) = [a for a in arguments if a is not type(None)]
        convert, is_bool = _converter(inner)
        return (_none_or(convert) if convert else None), is_bool
    if hint is bool:
        return None, True
    return hint, False


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | Any,
    config_class: type,
    skip: Iterable[str] = (),
    suppress_defaults: bool = False,
) -> None:
    """One ``--field-name`` option per field of a config dataclass (those with ``cli`` in their
    metadata, see :func:`rlhf_env.config.option`), with its help, default and choices.

    With ``suppress_defaults`` an option left out is absent from the parsed namespace (so a
    preset or a config file decides), else it holds the dataclass default.
    """
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        if field.name in skip or not field.metadata.get("cli", True):
            continue
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        help_text = f"{field.metadata.get('help', '')} (default: {default})".replace("%", "%%")
        convert, is_bool = _converter(hints[field.name])
        options: dict[str, Any] = {
            "help": help_text,
            "default": argparse.SUPPRESS if suppress_defaults else default,
        }
        if is_bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **options)
        elif "choices" in field.metadata:
            parser.add_argument(flag, type=convert, choices=field.metadata["choices"], **options)
        else:
            parser.add_argument(flag, type=convert, metavar=field.name.upper(), **options)


def dataclass_values(config_class: type, args: argparse.Namespace) -> dict[str, Any]:
    """The parsed values of a config dataclass's fields (those present in ``args``)."""
    return {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(config_class)
        if hasattr(args, field.name)
    }


def dataclass_from_args(config_class: type, args: argparse.Namespace) -> Any:
    """Build the config dataclass from parsed options (its ``__post_init__`` validates them)."""
    return config_class(**dataclass_values(config_class, args))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The settings in a YAML (``.yaml``/``.yml``) or JSON file: a mapping of option names
    (``learning_rate`` or ``learning-rate``) to values."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise FileNotFoundError(f"cannot read the config file {path}: {error}") from error
    if path.suffix in (".yaml", ".yml"):
        yaml = require("yaml", "demo", f"reading the YAML config file {path}")

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"{path} is not valid YAML: {error}") from error
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of option names to values")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def apply_config_file(
    parser: argparse.ArgumentParser,
    command_parser: argparse.ArgumentParser,
    path: str | Path,
    argv: list[str] | None,
) -> argparse.Namespace:
    """Parse ``argv`` again with a config file's values as the command's defaults: options on
    the command line override the file. Unknown names raise, listing the known ones."""
    values = read_config_file(path)
    actions = {
        action.dest: action
        for action in command_parser._actions
        if action.dest not in ("help", "config", argparse.SUPPRESS)
    }
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise ValueError(
            f"{path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(actions))}"
        )
    for name, value in values.items():
        action = actions[name]
        if isinstance(value, str) and callable(action.type):
            try:
                values[name] = value = action.type(value)
            except (TypeError, ValueError) as error:
                raise ValueError(f"{path}: {name}: {error}") from error
        if action.choices is not None and value not in action.choices:
            raise ValueError(f"{path}: {name} must be one of {list(action.choices)}, got {value!r}")
    command_parser.set_defaults(**values)
    return parser.parse_args(argv)
