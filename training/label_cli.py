"""`tokenrelay label`: command line and YAML entry points of the labeling job."""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from contextlib import contextmanager

from selector.cmdline import parse_config, run_command

__all__ = ["label_config", "main"]

PROG = "tokenrelay label"


def label_config(path: str):
    """The LabelConfig a YAML file describes (built, not run)."""
    from .label_job import LabelConfig

    return parse_config(LabelConfig, ["--config", str(path)], PROG)


@contextmanager
def _sigterm_interrupts():
    """SIGTERM stops the job like Ctrl-C, after the forward pass under way (seconds, not a whole batch):
    the traces already labelled are written and the same command resumes. Lightning's own SIGTERM
    handler runs first (it passes the signal on to DDP's other ranks)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str]) -> int:
    from .label_job import LabelConfig, run_label

    def body() -> None:
        config = parse_config(LabelConfig, argv, PROG)
        with _sigterm_interrupts():
            summary = run_label(config)
        print(
            f"{summary['labelled']} traces labelled ({config.method}, {config.units} units) into {config.out}; "
            f"{summary['already_done']} already there, {summary['skipped_no_reasoning']} skipped (no reasoning)"
        )

    return run_command(body, PROG)
