"""A wheel install (not editable) ships the demo's models: built from a copy of the source, installed
into a target folder, and imported from another directory, it finds and loads them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCE = ("pyproject.toml", "setup.py", "README.md", "selector", "training", "checkpoints")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """Build the wheel from a clean copy of the sources (no build files in the repository) and install it."""
    pytest.importorskip("setuptools")
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCE:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(root / "dist")],
                   check=True, cwd=root)  # fmt: skip
    (wheel,) = (root / "dist").glob("tokenrelay-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for part in ("small", "large", "selector"):
        assert f"selector/checkpoints/demo/{part}/model.safetensors" in names
    assert not [n for n in names if n.startswith("checkpoints/")]  # installed inside the package only
    target = root / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, cwd=root)
    return target


def _run(code: str, target: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)


def test_installed_wheel_finds_and_loads_the_demo_models(installed, tmp_path):
    code = (
        "import selector, selector.demo as d\n"
        "from selector.agents import Agent\n"
        "from selector.scorer import TokenSelector\n"
        "root = d.default_checkpoints()\n"
        "print(selector.__file__); print(root)\n"
        "small = Agent.from_pretrained(root / 'small', device='cpu')\n"
        "large = Agent.from_pretrained(root / 'large', device='cpu')\n"
        "TokenSelector.from_pretrained(root / 'selector').check_compatible(small_agent=small)\n"
        "print(large.model.num_parameters() > small.model.num_parameters())\n"
    )
    result = _run(code, installed, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    module, root, bigger = result.stdout.split()[-3:]
    assert Path(module).is_relative_to(installed) and Path(root) == installed / "selector/checkpoints/demo"
    assert bigger == "True"


def test_installed_demo_command_runs_from_another_directory(installed, tmp_path):
    code = (
        "import sys; from selector.cli import main\n"
        "sys.exit(main(['demo', '--questions', '2', '--batch-size', '2', '--out', 'demo_out', "
        "'--reason-tokens', '24', '--plot', 'false']))\n"
    )
    result = _run(code, installed, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| large reasoning |" in result.stdout and (tmp_path / "demo_out" / "results.json").is_file()
