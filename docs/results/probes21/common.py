"""Paths shared by this folder's scripts: the repository, and the work folder for features and scores
(``PROBES21_WORK``, default runs/probes21; the regenerated data lies in its ``data/``)."""

import glob
import gzip
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
WORK = Path(os.environ.get("PROBES21_WORK", REPO / "runs" / "probes21"))
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

ROOTS = {
    **{
        p.split("/")[-2]: p
        for p in glob.glob(str(REPO / "docs/results/selector_multitask5/*/records.jsonl.gz"))
    },
    **{p.split("/")[-2]: p for p in glob.glob(str(REPO / "docs/results/probes20/fresh/*/records.jsonl.gz"))},
    **{p.split("/")[-2]: p for p in glob.glob(str(REPO / "docs/results/probes20/extra/*/records.jsonl.gz"))},
}
"""Every committed evaluation with per-problem records: folder name -> records.jsonl.gz (30 tasks)."""


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_json(path, obj, **kw) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, **kw)


def read_records(path) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


RELEASE_CONDITIONS = (
    "relay:pointwise-fallback-nothing-300@0.25:{gate}",  # the 25 tasks' evaluations (the release, run from runs/)
    "relay:qwen2.5-coder-0.5b-to-1.5b-multitask-pointwise-fallback@0.25:{gate}",  # the fresh tasks' (checkpoints/)
)
"""The released selector's condition under each name the evaluations gave it."""


def records_by_id(folder: str) -> dict[str, dict[str, dict]]:
    """A committed evaluation's records as {problem id: {condition: record}} (records' order kept)."""
    by: dict[str, dict[str, dict]] = {}
    for r in read_records(ROOTS[folder]):
        by.setdefault(r["id"], {})[r["condition"]] = r
    return by


def release_key(conditions, gate: str) -> str | None:
    """The released selector's condition at ``gate`` among ``conditions`` (None when it was not evaluated)."""
    return next((k.format(gate=gate) for k in RELEASE_CONDITIONS if k.format(gate=gate) in conditions), None)


def fmt(c: dict) -> str:
    """A paired comparison as 'mean [low, high] wins/losses/ties'."""
    return f"{c['mean_diff']:+.2f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}] {c['wins']}/{c['losses']}/{c['ties']}"
