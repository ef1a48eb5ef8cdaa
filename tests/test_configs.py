"""Every YAML in configs/ builds its command's config (first line: `# tokenrelay COMMAND ...`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from selector.cli import check_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_instantiates(path):
    assert check_config(path) is not None


def test_there_are_configs():
    assert CONFIGS
