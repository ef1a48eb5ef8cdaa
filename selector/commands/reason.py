"""`tokenrelay reason`: the small model writes reasoning traces for a dataset."""

from __future__ import annotations

from collections.abc import Sequence

from ..cmdline import parse_config, run_command
from ..traces import ReasonConfig, run_reason

__all__ = ["main", "reason_config"]

PROG = "tokenrelay reason"


def reason_config(path: str) -> ReasonConfig:
    """The ReasonConfig a YAML file describes (built, not run)."""
    return parse_config(ReasonConfig, ["--config", str(path)], PROG)


def main(argv: Sequence[str]) -> int:
    def body() -> None:
        config = parse_config(ReasonConfig, argv, PROG)
        summary = run_reason(config)
        print(
            f"{summary['written']} traces written to {config.out} "
            f"({summary['already_done']} already there, {summary['truncated']} cut at max_new_tokens)"
        )

    return run_command(body, PROG)
