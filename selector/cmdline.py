"""Command-line plumbing shared by every command, in the library and in ``training/``.

A config dataclass becomes a command line (jsonargparse, ``--config FILE.yaml``), and a command
body's user errors become one clear line and exit status 2. It lives in the core, not beside the
dispatcher (``selector.commands``), so ``training``'s commands use it without importing the
dispatcher that imports them: no cycle.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import fields

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


def parse_config(cls, argv: Sequence[str], prog: str, description: str | None = None):
    """Build a ``cls`` config dataclass from command-line options and an optional ``--config`` YAML."""
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog=prog, description=description or (cls.__doc__ or "").strip())
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of these options.")
    parser.add_class_arguments(cls, None)
    namespace = parser.parse_args(_normalize(argv))
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
    except (UsageError, ValueError, FileNotFoundError, KeyError) as err:
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
