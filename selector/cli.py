"""The `tokenrelay` console script's entry point (``selector.cli:main``) and ``python -m selector.cli``.

The dispatcher and its commands live in ``selector.commands``; the shared plumbing in
``selector.cmdline``. This module keeps the installed script's target and the names people import
from here (``main``, ``COMMANDS``, ``parse_config``, ``run_command``, ``UsageError``) working.
"""

from __future__ import annotations

import sys

from .cmdline import UsageError, parse_config, run_command
from .commands import COMMANDS, check_config, main

__all__ = ["COMMANDS", "UsageError", "check_config", "main", "parse_config", "run_command"]

if __name__ == "__main__":  # `python -m selector.cli`: the error classes are the library's own (cmdline)
    sys.exit(main())
