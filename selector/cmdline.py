"""Command-line plumbing shared by every command, in the library and in ``training/``.

A config dataclass becomes a command line (jsonargparse, ``--config FILE.yaml``), and a command
body's user errors become one clear line and exit status 2. A field that is itself a dataclass (the
``relay: RelayConfig`` of infer, eval and the scripts) is a nested group: ``--relay.budget 0.5`` on
the command line, a ``relay:`` block in YAML; each field's docstring is its ``--help``. It lives in the core, not beside the
dispatcher (``selector.commands``), so ``training``'s commands use it without importing the
dispatcher that imports them: no cycle.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

__all__ = ["UsageError", "parse_config", "run_command"]


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def _normalize(argv: Sequence[str]) -> list[str]:
    out = []
    for arg in argv:
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + eq + value
        out.append(arg)
    return out


def _groups(cls) -> dict[str, set[str]]:
    """Nested dataclass fields of ``cls`` (not optional ones): group name -> its field names."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation it cannot resolve: no hints, jsonargparse decides
        return {}
    return {
        f.name: {g.name for g in fields(hints[f.name])}
        for f in fields(cls)
        if dataclasses.is_dataclass(hints.get(f.name))
    }


def _check_moved(cls, argv: Sequence[str]) -> None:
    """Options of a nested group given at the top level (a flat ``--gate`` or ``gate:`` in YAML, as
    before the group existed) get one line naming where they go, not jsonargparse's usage dump."""
    groups = _groups(cls)
    if not groups:
        return
    top = {f.name for f in fields(cls)} | {"config", "help", "print_config"}

    def home(key: str) -> str | None:
        if key in top:
            return None
        return next((g for g, names in groups.items() if key in names), None)

    for i, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        key = arg[2:].partition("=")[0]
        group = home(key)
        if group:
            raise UsageError(
                f"--{key} is a {group} option now: use --{group}.{key} (in YAML, inside a `{group}:` block)"
            )
        if key == "config":
            path = arg.partition("=")[2] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
            _check_yaml(path, home)


def _check_yaml(path: str, home: Callable[[str], str | None]) -> None:
    import yaml

    try:
        data = yaml.safe_load(Path(path).expanduser().read_text())
    except (OSError, yaml.YAMLError):
        return  # not a readable YAML file (or YAML text itself): jsonargparse says what is wrong
    for key in data if isinstance(data, dict) else ():
        group = home(str(key))
        if group:
            raise UsageError(
                f"{path}: `{key}:` is a {group} option now: move it into a `{group}:` block "
                f"(on the command line: --{group}.{key})"
            )


def _one_line(message: str) -> str:
    """jsonargparse's multi-line type errors as one line."""
    literal = re.search(
        r'key "([^"]+)":\s*Expected a typing\.Literal\[(.*)\]\. Got value: (.*)', message, re.S
    )
    if literal:
        key, choices, got = literal.groups()
        choices = choices.replace("'", "")
        return f"--{key}: expected one of {choices}, got {got.strip()!r}"
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


def parse_config(cls, argv: Sequence[str], prog: str, description: str | None = None):
    """Build a ``cls`` config dataclass from command-line options and an optional ``--config`` YAML."""
    from argparse import ArgumentError

    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    argv = _normalize(argv)
    _check_moved(cls, argv)
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(
        prog=prog, description=description or (cls.__doc__ or "").strip(), exit_on_error=False
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of these options.")
    parser.add_class_arguments(cls, None)
    try:
        namespace = parser.parse_args(argv)
    except ArgumentError as err:
        raise UsageError(f"{_one_line(str(err))} (see {prog} --help)") from err
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    try:
        built = instantiate(namespace)
        return cls(**{f.name: built[f.name] for f in fields(cls) if f.name in built})
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from err


def run_command(entry: Callable[[], object], prog: str) -> int:
    """Run a command body, turning user errors into one clear line and exit status 2."""
    try:
        entry()
    except (UsageError, ValueError, OSError, KeyError) as err:  # OSError: unreadable or unwritable paths too
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted(prog)
    except SystemExit as err:
        if isinstance(err.__context__, KeyboardInterrupt):  # Lightning turns Ctrl-C into exit(1)
            return _interrupted(prog)
        raise
    return 0


def _interrupted(prog: str) -> int:
    print(f"\n{prog}: interrupted; finished work is saved, run the same command to resume", file=sys.stderr)
    return 130
