"""`tokenrelay profile`: random-weight models are timed, cost models fitted, latency predicted."""

from __future__ import annotations

import json

import pytest

from selector.cli import main
from selector.profiler import (
    CostModel,
    ModelSpec,
    ProfileCommand,
    build_random_model,
    predict_large_reasoning,
    predict_relay,
    run_profile,
)


def test_profile_command_writes_costs_table_and_plot(tmp_path, tiny_lm_dir):
    yaml = tmp_path / "p.yaml"
    yaml.write_text(
        "small: {name: tiny, hidden_size: 32, num_layers: 1, num_heads: 4, num_kv_heads: 2, intermediate_size: 64, vocab_size: 100}\n"
        f"large: {{name: from-config, config: {tiny_lm_dir}}}\n"
        f"out: {tmp_path / 'out'}\n"
        "reasoning_tokens: [16, 64]\n"
        "profile: {prompt_lengths: [8, 16, 32], decode_tokens: 4, repeats: 1}\n"
    )
    assert main(["profile", "--config", str(yaml)]) == 0
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {
        "cost_small.json", "cost_large.json", "prediction.json", "prediction.md", "prediction.png",
    }  # fmt: skip
    cost = CostModel.load(out / "cost_large.json")
    assert cost.prefill_per_token_s >= 0 and cost.decode_per_token_s > 0
    rows = json.loads((out / "prediction.json").read_text())["rows"]
    assert [r["reasoning_tokens"] for r in rows] == [16, 64]


def test_predictions_follow_the_cost_model():
    small = CostModel("s", fixed_s=0.01, prefill_per_token_s=0.001, decode_per_token_s=0.01)
    large = CostModel("l", fixed_s=0.02, prefill_per_token_s=0.004, decode_per_token_s=0.05)
    alone = predict_large_reasoning(large, prompt_tokens=100, reasoning_tokens=200, answer_tokens=5)
    assert alone == pytest.approx(0.02 + 0.4 + 0.05 * 205)
    relay = predict_relay(small, large, prompt_tokens=100, reasoning_tokens=200, answer_tokens=5, budget=0.25)
    direct = 0.02 + 0.4 + 0.25
    reasoning = 0.01 + 0.1 + 2.0
    transfer = 0.02 + 0.004 * 150 + 0.25
    assert relay["end_to_end_s"] == pytest.approx(direct + reasoning + transfer)
    parallel = predict_relay(
        small, large, prompt_tokens=100, reasoning_tokens=200, answer_tokens=5, parallel=True
    )
    assert parallel["end_to_end_s"] == pytest.approx(max(direct, reasoning) + transfer)


def test_bad_specs_are_errors(tmp_path):
    missing = ModelSpec(name="x", config=str(tmp_path / "missing"))  # a YAML loads anywhere...
    with pytest.raises(FileNotFoundError, match="missing"):
        build_random_model(missing)  # ...and a run names the missing config
    with pytest.raises(FileNotFoundError, match="missing"):
        run_profile(ProfileCommand(small=ModelSpec(name="s"), large=missing, out=str(tmp_path / "p")))
    assert not (tmp_path / "p").exists()
    with pytest.raises(ValueError, match="divisible"):
        ModelSpec(name="x", hidden_size=30, num_heads=4)
