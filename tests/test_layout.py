"""The layout's promises: the core library loads neither Lightning nor matplotlib nor the application
code over it, and selector/ and training/ import each other in one direction only (no cycle, not
even by import string)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPLICATION = ("commands", "evaluation", "demo", "profiler", "serve")
"""selector's subpackages over the core: the dispatcher and commands, evaluation engine, demo, profiler, server."""


def core_modules() -> list[str]:
    """The core: every module and subpackage of selector/ but the application's (and the console
    script's shim over the dispatcher, selector/cli.py)."""
    folder = ROOT / "selector"
    modules = [p.stem for p in folder.glob("*.py") if p.stem != "cli"]
    packages = [p.parent.name for p in folder.glob("*/__init__.py") if p.parent.name not in APPLICATION]
    return sorted(f"selector.{name}" for name in modules + packages)


def loaded_after(imports: list[str]) -> set[str]:
    """Top-level and selector.* module names loaded by importing ``imports`` in a fresh interpreter."""
    code = (
        "import sys\n" + "".join(f"import {m}\n" for m in imports) + "print('\\n'.join(sorted(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_core_loads_no_lightning_matplotlib_or_application_code():
    modules = core_modules()
    assert {
        "selector.agents",
        "selector.scorer",
        "selector.relay",
        "selector.traces",
        "selector.cmdline",
    } <= set(modules)
    loaded = loaded_after(modules)
    heavy = {
        m for m in loaded if m.split(".")[0] in ("lightning", "pytorch_lightning", "matplotlib", "training")
    }
    assert not heavy, sorted(heavy)
    apps = {m for m in loaded if m.startswith("selector.") and m.split(".")[1] in APPLICATION}
    assert not apps, sorted(apps)


def test_training_never_loads_the_dispatcher_or_application_code():
    training = sorted(f"training.{p.stem}" for p in (ROOT / "training").glob("*.py") if p.stem != "__init__")
    assert {"training.label_cli", "training.train_cli", "training.label_job"} <= set(training)
    loaded = loaded_after(training)
    above = {
        m
        for m in loaded
        if m == "selector.cli" or (m.startswith("selector.") and m.split(".")[1] in APPLICATION)
    }
    assert not above, sorted(above)


def _imports_and_strings(path: Path) -> tuple[set[str], set[str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    imports, strings = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imports.add(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.add(node.value)
    return imports, strings


def test_one_direction_between_selector_and_training_even_by_string():
    """Only the dispatcher (selector.commands) names training; training never names what sits over it."""
    module_string = re.compile(r"^training(\.\w+)*(:\w+)?$")
    upward = re.compile(r"^selector\.(cli|" + "|".join(APPLICATION) + r")\b")
    problems = []
    for path in sorted((ROOT / "selector").rglob("*.py")):
        if "commands" in path.relative_to(ROOT / "selector").parts:
            continue
        imports, strings = _imports_and_strings(path)
        problems += [f"{path}: imports {m}" for m in imports if m.split(".")[0] == "training"]
        problems += [f"{path}: names {s!r}" for s in strings if module_string.match(s)]
    for path in sorted((ROOT / "training").rglob("*.py")):
        imports, strings = _imports_and_strings(path)
        problems += [f"{path}: imports {m}" for m in imports if upward.match(m)]
        problems += [f"{path}: names {s!r}" for s in strings if upward.match(s)]
    assert not problems, problems
