"""scripts.validate_profile: cost-model predictions set beside measured stage times."""

from __future__ import annotations

import json

import pytest

from scripts.validate_profile import compare, main, predict_stage
from selector.profiler import CostModel

COSTS = {
    "small": CostModel("small", fixed_s=0.1, prefill_per_token_s=0.01, decode_per_token_s=0.2),
    "large": CostModel("large", fixed_s=0.2, prefill_per_token_s=0.03, decode_per_token_s=0.5),
}


def _stage(seconds, prompt_tokens, new_tokens):
    return {"seconds": seconds, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens}


def _records(scale: float) -> list[dict]:
    """A relay record and a large-direct record whose times are ``scale`` x the cost models'."""
    direct = _stage(scale * (0.2 + 0.03 * 50 + 0.5 * 3), 50, 3)  # 3 tokens + end-of-sequence
    relay_stages = {
        "large_direct": direct,
        "small_reasoning": _stage(scale * (0.1 + 0.01 * 40 + 0.2 * 100), 40, 100),
        "selection": _stage(0.004, 0, 0),  # the selector's time: not predicted
        "large_prefill": _stage(scale * (0.2 + 0.03 * 80), 80, 1),
        "large_decode": _stage(scale * 0.5 * 5, 0, 4),
    }
    return [
        {"id": "q1", "condition": "large_direct", "stages": {"large_direct": direct}},
        {"id": "q1", "condition": "relay:selfinfo@0.25:always", "stages": relay_stages},
    ]


def test_exact_cost_models_predict_exactly():
    result = compare(_records(1.0), COSTS)
    for group in ("stages", "conditions"):
        for row in result[group].values():
            assert row["ratio"] == pytest.approx(1.0) and row["within_20pct"] == 1.0
    assert set(result["stages"]) == {"large_direct", "small_reasoning", "large_prefill", "large_decode"}
    assert result["stages"]["large_direct"]["n"] == 1  # shared by two conditions, counted once
    assert predict_stage("large_decode", _stage(0, 0, 4), COSTS) == pytest.approx(2.5)


def test_slower_measurements_fall_outside_the_tolerance():
    result = compare(_records(1.5), COSTS)
    assert result["conditions"]["large_direct"]["ratio"] == pytest.approx(1 / 1.5)
    assert result["conditions"]["large_direct"]["within_20pct"] == 0.0


def test_cli_writes_the_comparison(tmp_path, capsys):
    profile, run = tmp_path / "profile", tmp_path / "eval"
    profile.mkdir()
    run.mkdir()
    for role, cost in COSTS.items():
        cost.save(profile / f"cost_{role}.json")
    (run / "records.jsonl").write_text("\n".join(json.dumps(r) for r in _records(1.1)) + "\n")
    assert main(["--profile", str(profile), "--eval", str(run)]) == 0
    written = json.loads((profile / "validation.json").read_text())
    assert written["conditions"]["large_direct"]["ratio"] == pytest.approx(1 / 1.1)
    assert "| condition large_direct | 1 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--profile", str(tmp_path / "none"), "--eval", str(run)])
