"""The inference library's public names resolve, and it never pulls in Lightning or training/."""

from __future__ import annotations

import subprocess
import sys


def test_public_names_resolve_without_training_imports():
    code = (
        "import sys, selector\n"
        "missing = [n for n in selector.__all__ if getattr(selector, n, None) is None]\n"
        "assert not missing, missing\n"
        "heavy = [m for m in ('lightning', 'training', 'pytorch_lightning') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_console_script_help_lists_every_command():
    from selector.cli import COMMANDS, main

    assert main(["--help"]) == 0
    assert {"reason", "label", "train", "infer", "demo", "eval", "profile"} <= set(COMMANDS)
