"""Packages: the library and training code, plus the top-level ``checkpoints/`` folder installed as
``selector/checkpoints`` (package data), so a wheel install finds the demo's models and the released
selectors. Everything else is in pyproject.toml; this file only adds what pyproject cannot say
(automatic package discovery together with a mapped folder)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["selector*", "training*"]), "selector.checkpoints"],
    package_dir={"selector.checkpoints": "checkpoints"},
)
