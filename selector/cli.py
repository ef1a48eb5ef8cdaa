"""The `tokenrelay` console script: one entry point, one subcommand per pipeline stage.

Each subcommand lives in its own module and is imported only when it runs, so `tokenrelay infer`
never imports Lightning. Options come from the command's config dataclass through jsonargparse:
`--config FILE.yaml` reads them from YAML (see configs/), and `--some-option` may be written
`--some_option` too.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields

__all__ = ["COMMANDS", "check_config", "main", "parse_config", "run_command"]

# name: (module:function running it on argv, one-line description,
#        module:function building its config from a YAML path without running it, for tests)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "reason": (
        "selector.cli:reason_main",
        "the small model writes reasoning traces for a dataset",
        "selector.cli:reason_config",
    ),
    "label": (
        "training.label_cli:main",
        "the large model labels which reasoning units raise its gold-answer likelihood",
        "training.label_cli:label_config",
    ),
    "train": (
        "training.train_cli:main",
        "train a selector on labelled traces (Lightning) and release its checkpoint",
        "training.train_cli:train_config",
    ),
    "infer": (
        "selector.infer_cli:main",
        "the relay: the large model answers, from the small model's key reasoning when necessary",
        "selector.infer_cli:infer_config",
    ),
    "eval": (
        "selector.eval_cli:main",
        "evaluate a grid of conditions (baselines, selectors x budgets x gates) with cached model outputs",
        "selector.eval_cli:eval_config",
    ),
    "demo": (
        "selector.demo:main",
        "the relay beside the large model's own reasoning, offline on the embedded synthetic world (an eval preset)",
        "selector.demo:demo_config",
    ),
    "calibrate": (
        "selector.calibrate:main",
        "choose the confidence gate's tau (and selector, budget) on a dev eval run; writes a relay config",
        "selector.calibrate:calibrate_config",
    ),
    "profile": (
        "selector.profiler:main",
        "fit per-model latency cost models on random weights and predict the relay's speedup",
        "selector.profiler:profile_config",
    ),
    "serve": (
        "selector.serve.cli:main",
        "the relay as an OpenAI-compatible HTTP service (FastAPI + uvicorn; the serve extra)",
        "selector.serve.cli:serve_config",
    ),
}


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


def reason_config(path: str):
    from .traces import ReasonConfig

    return parse_config(ReasonConfig, ["--config", str(path)], "tokenrelay reason")


def check_config(path: str):
    """Build the config of the command named on a YAML's first line (``# tokenrelay NAME ...``)."""
    with open(path) as f:
        first = f.readline().split()
    if len(first) < 3 or first[:2] != ["#", "tokenrelay"] or first[2] not in COMMANDS:
        raise UsageError(f"{path}: the first line must be '# tokenrelay COMMAND ...' naming a command")
    module, func = COMMANDS[first[2]][2].split(":")
    return getattr(importlib.import_module(module), func)(path)


def reason_main(argv: Sequence[str]) -> int:
    from .traces import ReasonConfig, run_reason

    prog = "tokenrelay reason"

    def body() -> None:
        config = parse_config(ReasonConfig, argv, prog)
        summary = run_reason(config)
        print(
            f"{summary['written']} traces written to {config.out} "
            f"({summary['already_done']} already there, {summary['truncated']} cut at max_new_tokens)"
        )

    return run_command(body, prog)


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: tokenrelay COMMAND [options]   (tokenrelay COMMAND --help for its options)",
        "",
        "TokenRelay: a large model answers from a small model's key reasoning tokens.",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, text, _) in COMMANDS.items()]
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
    module, func = COMMANDS[name][0].split(":")
    return getattr(importlib.import_module(module), func)(argv[1:])


if __name__ == "__main__":  # `python -m selector.cli`: run the imported module, so that its error
    from selector.cli import main as _main  # classes (UsageError...) are the ones commands raise

    sys.exit(_main())
