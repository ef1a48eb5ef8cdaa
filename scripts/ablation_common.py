"""What every ablation script shares: config parsing, resumable per-variant results, tables, plots.

An ablation runs a list of variants; each finished variant is saved at once as
``OUT/variants/NAME.json`` (atomically), so a killed run loses at most the variant in progress and a
rerun skips the finished ones. The summary goes to ``OUT/STEM.json`` (everything), ``STEM.csv``
(the table), ``STEM.md`` (the Markdown table, also printed) and, where it helps, ``STEM.png``.
Results are tied to the settings that produced them (``check_settings``): a rerun with other
settings in the same folder is refused instead of silently mixing the two.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from selector.cmdline import parse_config, run_command
from selector.io import write_json_atomic

__all__ = [
    "Column",
    "VariantStore",
    "check_settings",
    "config_from_argv",
    "fmt",
    "main_for",
    "markdown_table",
    "quiet_lightning",
    "safe_name",
    "write_json",
    "write_outputs",
]

Column = tuple[str, str, str]
"""(key in a row, column header, format spec: '.3f', '.1%', 'd', or '' for str())."""


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a reader sees the old file or the new one, never half of one)."""
    write_json_atomic(path, data, default=str)


def safe_name(name: str) -> str:
    """A file-name-safe version of a variant name."""
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in str(name))


class VariantStore:
    """Finished variants as ``OUT/variants/NAME.json``: saved as each finishes, skipped on rerun."""

    def __init__(self, out: str | os.PathLike):
        self.dir = Path(out) / "variants"

    def path(self, name: str) -> Path:
        return self.dir / f"{safe_name(name)}.json"

    def load(self, name: str) -> dict | None:
        path = self.path(name)
        return json.loads(path.read_text()) if path.exists() else None

    def save(self, name: str, result: dict) -> None:
        write_json(self.path(name), result)


def check_settings(out: str | os.PathLike, settings: dict) -> None:
    """Record the settings that shape the results in ``OUT/settings.json``; refuse different ones.

    Cached results made with another model or data set would otherwise be reused silently.
    """
    path = Path(out) / "settings.json"
    settings = json.loads(json.dumps(settings, default=str))
    if path.exists():
        before = json.loads(path.read_text())
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            detail = "; ".join(f"{k}: {before.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise ValueError(
                f"{out} holds results made with other settings ({detail}): choose another out folder, "
                "or delete that one to start over"
            )
        return
    write_json(path, settings)


def fmt(value: Any, spec: str = ".3f") -> str:
    """One table cell: '-' for missing or NaN values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if not spec:
        return str(value)
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[Column]) -> str:
    lines = [
        "| " + " | ".join(header for _, header, _ in columns) + " |",
        "|" + " --- |" * len(columns),
    ]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(key), spec) for key, _, spec in columns) + " |")
    return "\n".join(lines)


def write_outputs(
    out: str | os.PathLike,
    stem: str,
    result: dict,
    rows: Sequence[dict],
    columns: Sequence[Column],
    intro: str = "",
    plot: Callable[[Path], None] | None = None,
) -> dict[str, Path]:
    """Write STEM.json (``result``), STEM.csv and STEM.md (``rows``), STEM.png (``plot``); print the table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "csv": out / f"{stem}.csv", "markdown": out / f"{stem}.md"}
    write_json(paths["json"], result)
    keys = [key for key, _, _ in columns]
    with paths["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(keys)
        for row in rows:
            writer.writerow(["" if row.get(k) is None else row.get(k) for k in keys])
    table = markdown_table(rows, columns)
    paths["markdown"].write_text((intro + "\n\n" if intro else "") + table + "\n")
    print(table)
    if plot is not None:
        paths["plot"] = out / f"{stem}.png"
        plot(paths["plot"])
    print(f"written {', '.join(str(p) for p in paths.values())}")
    return paths


def quiet_lightning() -> None:
    """Lightning's per-Trainer banner lines ('GPU available...') once per variant are noise here."""
    import logging
    import warnings

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*number of training batches.*")
    warnings.filterwarnings("ignore", message=r".*args parameter is intended to run from within Python.*")
    warnings.filterwarnings("ignore", message=r".*overridden `on_before_batch_transfer`.*")


def config_from_argv(cls, argv: Sequence[str], prog: str):
    """The config dataclass from ``--config FILE.yaml`` and options (``--help`` lists every field)."""
    return parse_config(cls, list(argv), prog)


def main_for(cls, run: Callable[[Any], object], prog: str, argv: Sequence[str] | None = None) -> int:
    """A script's ``main``: parse the config, run it; user errors become one line and status 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command(lambda: run(config_from_argv(cls, argv, prog)), prog)
