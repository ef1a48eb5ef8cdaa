"""Real-model checks (`-m slow`): the real small/large pair through the commands, when it is here.

    TOKENRELAY_SMALL=models/qwen2.5-coder-0.5b-instruct TOKENRELAY_LARGE=models/qwen2.5-coder-1.5b-instruct \\
        python -m pytest -q -m slow tests/test_reliability_slow.py

The folders come from ``python ../shared/tools/offline_models.py get NAME --out DIR`` (DESIGN.md);
without the variables (or with a missing folder) every test here is skipped, saying which.
A few minutes on 2 CPU cores (reasoning and answers are capped at a few dozen tokens).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from selector.cli import main as tokenrelay
from selector.shards import read_records

pytestmark = pytest.mark.slow

REAL_SELECTOR = Path(__file__).resolve().parents[1] / "checkpoints" / "qwen2.5-coder-0.5b-to-1.5b-simple-eq"


def _model(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        pytest.skip(f"{var} is not set: point it at the real model's folder to run the real-model checks")
    path = Path(value).expanduser()
    if not (path / "config.json").exists():
        pytest.skip(f"{var}={value!r} is not a model folder (no config.json)")
    return path


@pytest.fixture(scope="module")
def small() -> Path:
    return _model("TOKENRELAY_SMALL")


@pytest.fixture(scope="module")
def large() -> Path:
    return _model("TOKENRELAY_LARGE")


@pytest.fixture()
def problems(tmp_path) -> Path:
    rows = [
        {"id": "e1", "question": "Solve for x: 3*x + 4 = 19. Give the value of x.", "answer": "5"},
        {"id": "e2", "question": "Solve for y: 2*y - 7 = 11. Give the value of y.", "answer": "9"},
    ]
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_real_pair_reasons_and_labels_resumably(small, large, problems, tmp_path):
    traces, labels = tmp_path / "traces", tmp_path / "labels"
    reason = ["reason", "--data", str(problems), "--model", str(small), "--out", str(traces),
              "--max-new-tokens", "48", "--hidden-layer", "-1", "--relay.device", "cpu"]  # fmt: skip
    assert tokenrelay([*reason, "--limit", "1"]) == 0
    assert tokenrelay(reason) == 0  # resumes: only the second problem is reasoned
    written = read_records(traces)
    assert sorted(written["id"]) == ["e1", "e2"]
    label = ["label", "--traces", str(traces), "--model", str(large), "--out", str(labels),
             "--method", "loo", "--units", "sentence", "--accelerator", "cpu", "--progress-bar", "false"]  # fmt: skip
    assert tokenrelay(label) == 0
    rows = read_records(labels).to_list()
    reasoned = [r for r in written.to_list() if (r.get("reasoning") or "").strip()]
    assert len(rows) == len(reasoned)
    for row in rows:
        assert len(row["labels"]) == len(row["unit_starts"]) and all(math.isfinite(x) for x in row["labels"])
        assert math.isfinite(row["f_all"]) and math.isfinite(row["f_none"])
    summary = json.loads((labels / "summary.json").read_text())
    assert summary["labelled"] == len(rows)


def test_real_pair_relay_answers_a_question(small, large, capsys):
    args = ["infer", "--relay.small", str(small), "--relay.large", str(large), "--relay.device", "cpu", "--relay.gate", "always",
            "--relay.selector", "first", "--relay.budget", "0.5", "--relay.reason-tokens", "48", "--relay.answer-tokens", "8",
            "--question", "Solve for x: 3*x + 4 = 19. Give the value of x."]  # fmt: skip
    assert tokenrelay(args) == 0
    out = capsys.readouterr().out
    assert "reasoning tokens" in out  # answered from a transfer of the small model's reasoning


def test_shipped_real_selector_fits_the_real_small_model(small, large, capsys):
    """The released real-pair selector, on the pair it was trained for, relays a question."""
    width = json.loads((small / "config.json").read_text()).get("hidden_size")
    if width != 896:
        pytest.skip(
            f"TOKENRELAY_SMALL has hidden size {width}; the shipped selector needs Qwen2.5-Coder-0.5B (896)"
        )
    args = ["infer", "--relay.small", str(small), "--relay.large", str(large), "--relay.device", "cpu", "--relay.gate", "always",
            "--relay.selector", str(REAL_SELECTOR), "--relay.budget", "0.25", "--relay.reason-tokens", "48", "--relay.answer-tokens", "8",
            "--question", "Solve for x: 3*x + 4 = 19. Give the value of x."]  # fmt: skip
    assert tokenrelay(args) == 0
    assert "reasoning tokens" in capsys.readouterr().out
