"""Every YAML in configs/ builds its command's config (first line: `# tokenrelay COMMAND ...`, or
`# python -m scripts.NAME ...` for a script with a ``config_from_yaml(path)``)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from selector.cli import check_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_instantiates(path):
    first = path.read_text().split("\n", 1)[0].split()
    if first[:3] == ["#", "python", "-m"] and first[3].startswith("scripts."):
        assert importlib.import_module(first[3]).config_from_yaml(path) is not None
    else:
        assert check_config(path) is not None


def test_there_are_configs():
    assert CONFIGS
