"""`tokenrelay label`: command line and YAML entry points of the labeling job."""

from __future__ import annotations

from collections.abc import Sequence

from selector.cli import parse_config, run_command

__all__ = ["label_config", "main"]

PROG = "tokenrelay label"


def label_config(path: str):
    """The LabelConfig a YAML file describes (built, not run)."""
    from .label_job import LabelConfig

    return parse_config(LabelConfig, ["--config", str(path)], PROG)


def main(argv: Sequence[str]) -> int:
    from .label_job import LabelConfig, run_label

    def body() -> None:
        config = parse_config(LabelConfig, argv, PROG)
        summary = run_label(config)
        print(
            f"{summary['labelled']} traces labelled ({config.method}, {config.units} units) into {config.out}; "
            f"{summary['already_done']} already there, {summary['skipped_no_reasoning']} skipped (no reasoning)"
        )

    return run_command(body, PROG)
