"""`tokenrelay demo` and its shipped checkpoints: they load, and a short run fills every row of the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selector.agents import Agent
from selector.cli import main
from selector.demo import DemoConfig, default_checkpoints
from selector.prompts import reasoning_prompt, transfer_prompt
from selector.synthetic import generate_problems

SHIPPED = default_checkpoints()
MAX_SHIPPED_BYTES = 20 * 1024 * 1024


def test_shipped_agents_load_and_speak_the_demo_world():
    small = Agent.from_pretrained(SHIPPED / "small", device="cpu")
    large = Agent.from_pretrained(SHIPPED / "large", device="cpu")
    assert small.uses_chat_template and large.uses_chat_template
    assert large.model.num_parameters() > small.model.num_parameters()
    q = generate_problems(1, seed=123)[0].question
    gen = small.generate([reasoning_prompt(small, q).text], max_new_tokens=12)[0]
    assert gen.new_tokens == 12 and gen.text.strip()
    answer = large.generate([transfer_prompt(large, q, None).text], max_new_tokens=4)[0]
    assert answer.finish_reason == "stop" and answer.text.strip()


def test_shipped_selector_loads_and_fits_the_small_agent():
    from selector.scorer import TokenSelector

    selector = TokenSelector.from_pretrained(SHIPPED / "selector")
    small = Agent.from_pretrained(SHIPPED / "small", device="cpu")
    selector.check_compatible(small_agent=small)
    assert selector.config.granularity == "sentence"


def test_shipped_checkpoints_are_small_and_documented():
    files = [p for p in SHIPPED.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= MAX_SHIPPED_BYTES
    for name in ("small", "large", "selector"):
        assert (SHIPPED / name / "README.md").is_file(), f"{name} has no model card"
        assert (SHIPPED / name / "model.safetensors").is_file()
    assert (SHIPPED / "README.md").is_file()
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]


def test_demo_fast_run_fills_every_condition(tmp_path):
    out = tmp_path / "demo"
    argv = ["demo", "--questions", "6", "--out", str(out), "--budgets", "[0.25, 0.5]", "--batch-size", "3"]
    assert main(argv) == 0
    result = json.loads((out / "demo_results.json").read_text())
    table = [ln for ln in (out / "demo_results.md").read_text().splitlines() if ln.startswith("| ")]
    assert len(table) == len(result["rows"]) + 2  # header, separator, one line per condition
    assert (out / "demo_accuracy_vs_tokens.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {r["condition"]: r for r in result["rows"]}
    baselines = ["random", "first", "last", "selfinfo", "oracle"]
    expected = {"large direct", "small with reasoning", "large + full reasoning"}
    expected |= {f"large + {s} @ {b}" for s in ["selector", *baselines] for b in ("25%", "50%")}
    expected |= {"gated relay (agreement, selector @ 25%)"}
    assert set(rows) == expected
    assert result["questions"] == 6
    for r in result["rows"]:
        assert 0 <= r["accuracy"] <= 1
        assert r["total_ms"] == pytest.approx(sum(r["stage_ms"].values()))
        assert all(v >= 0 for v in r["stage_ms"].values())
    assert rows["large direct"]["transferred_tokens"] == 0
    assert rows["large direct"]["stage_ms"]["large_direct"] > 0
    assert rows["small with reasoning"]["stage_ms"]["small_reasoning"] > 0
    full = rows["large + full reasoning"]
    assert full["transferred_share"] == pytest.approx(1.0)
    assert full["transferred_tokens"] == pytest.approx(result["reasoning_tokens"])
    for s in ["selector", *baselines]:
        quarter, half = rows[f"large + {s} @ 25%"], rows[f"large + {s} @ 50%"]
        assert quarter["transferred_share"] <= 0.25 + 1e-9 and half["transferred_share"] <= 0.5 + 1e-9
        assert quarter["stage_ms"]["large_prefill"] > 0 and quarter["leakage"] is not None
    gated = rows["gated relay (agreement, selector @ 25%)"]
    assert 0 <= gated["transferred_questions"] <= 1
    assert gated["stage_ms"]["large_direct"] > 0 and gated["stage_ms"]["small_reasoning"] > 0


def test_demo_reports_missing_checkpoints_clearly(tmp_path, capsys):
    assert (
        main(["demo", "--questions", "2", "--checkpoints", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    )
    err = capsys.readouterr().err
    assert "small, large, selector are missing" in err and "scripts.build_demo" in err


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"questions": 0}, "questions"),
        ({"budgets": []}, "at least one budget"),
        ({"budgets": [0.0]}, "ratios"),
        ({"baselines": ["full"]}, "unknown baseline"),
        ({"baselines": ["best"]}, "unknown baseline"),
        ({"gate": "sometimes"}, "gate"),
    ],
)
def test_bad_demo_config_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DemoConfig(**kwargs)


def test_shipped_checkpoints_default_is_the_repository_folder():
    assert default_checkpoints() == Path(__file__).resolve().parent.parent / "checkpoints" / "demo"
