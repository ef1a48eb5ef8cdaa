"""The `tokenrelay` console script: one entry point, one subcommand per pipeline stage.

This package is the application layer, the top of the import graph: it reaches the library's
commands and ``training``'s (label, train) through plain imports inside small functions, so each
command's modules load only when it runs (`tokenrelay infer` never imports Lightning) and any
import-graph tool sees every edge. Nothing below imports this package back: commands share their
plumbing through the core's ``selector.cmdline``. Options come from each command's config
dataclass through jsonargparse: `--config FILE.yaml` reads them from YAML (see configs/), and
`--some-option` may be written `--some_option` too.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from ..cmdline import UsageError, parse_config, run_command

__all__ = ["COMMANDS", "Command", "UsageError", "check_config", "main", "parse_config", "run_command"]


class Command(NamedTuple):
    """One subcommand: how to run it, its one-line description, and how to build its config."""

    run: Callable[[Sequence[str]], int]
    """Runs the command on its arguments; returns the exit status."""
    about: str
    """One line for `tokenrelay --help`."""
    config: Callable[[str], object]
    """Builds the command's config from a YAML path without running it (tests, `check_config`)."""


def _reason(argv):
    from .reason import main

    return main(argv)


def _reason_config(path):
    from .reason import reason_config

    return reason_config(path)


def _label(argv):
    from training.label_cli import main

    return main(argv)


def _label_config(path):
    from training.label_cli import label_config

    return label_config(path)


def _train(argv):
    from training.train_cli import main

    return main(argv)


def _train_config(path):
    from training.train_cli import train_config

    return train_config(path)


def _infer(argv):
    from .infer import main

    return main(argv)


def _infer_config(path):
    from .infer import infer_config

    return infer_config(path)


def _eval(argv):
    from .evaluate import main

    return main(argv)


def _eval_config(path):
    from .evaluate import eval_config

    return eval_config(path)


def _demo(argv):
    from ..demo import main

    return main(argv)


def _demo_config(path):
    from ..demo import demo_config

    return demo_config(path)


def _calibrate(argv):
    from ..evaluation.calibrate import main

    return main(argv)


def _calibrate_config(path):
    from ..evaluation.calibrate import calibrate_config

    return calibrate_config(path)


def _profile(argv):
    from ..profiler import main

    return main(argv)


def _profile_config(path):
    from ..profiler import profile_config

    return profile_config(path)


def _serve(argv):
    from ..serve.cli import main

    return main(argv)


def _serve_config(path):
    from ..serve.cli import serve_config

    return serve_config(path)


COMMANDS: dict[str, Command] = {
    "reason": Command(_reason, "the small model writes reasoning traces for a dataset", _reason_config),
    "label": Command(
        _label, "the large model labels which reasoning units raise its gold-answer likelihood", _label_config
    ),
    "train": Command(
        _train, "train a selector on labelled traces (Lightning) and release its checkpoint", _train_config
    ),
    "infer": Command(
        _infer,
        "the relay: the large model answers, from the small model's key reasoning when necessary",
        _infer_config,
    ),
    "eval": Command(
        _eval,
        "evaluate a grid of conditions (baselines, selectors x budgets x gates) with cached model outputs",
        _eval_config,
    ),
    "demo": Command(
        _demo,
        "the relay beside the large model's own reasoning, offline on the embedded synthetic world (an eval preset)",
        _demo_config,
    ),
    "calibrate": Command(
        _calibrate,
        "choose the confidence gate's tau (and selector, budget) on a dev eval run; writes a relay config",
        _calibrate_config,
    ),
    "profile": Command(
        _profile,
        "fit per-model latency cost models on random weights and predict the relay's speedup",
        _profile_config,
    ),
    "serve": Command(
        _serve,
        "the relay as an OpenAI-compatible HTTP service (FastAPI + uvicorn; the serve extra)",
        _serve_config,
    ),
}


def check_config(path: str):
    """Build the config of the command named on a YAML's first line (``# tokenrelay NAME ...``)."""
    with open(path) as f:
        first = f.readline().split()
    if len(first) < 3 or first[:2] != ["#", "tokenrelay"] or first[2] not in COMMANDS:
        raise UsageError(f"{path}: the first line must be '# tokenrelay COMMAND ...' naming a command")
    return COMMANDS[first[2]].config(path)


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: tokenrelay COMMAND [options]   (tokenrelay COMMAND --help for its options)",
        "",
        "TokenRelay: a large model answers from a small model's key reasoning tokens.",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {command.about}" for name, command in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from importlib.metadata import version

        print(version("tokenrelay"))
        return 0
    name = argv[0]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"tokenrelay: unknown command {name!r}{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    return COMMANDS[name].run(argv[1:])
