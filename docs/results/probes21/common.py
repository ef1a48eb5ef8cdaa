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
