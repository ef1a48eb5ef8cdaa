"""scripts.bench_relay: makes its data, then runs the real-pair eval config (here on tiny models)."""

from __future__ import annotations

import json

from scripts.bench_relay import main


def test_bench_relay_makes_data_and_runs_the_eval_config(tiny_lm_dir, tiny_plain_lm_dir, tmp_path):
    data, out = tmp_path / "data" / "eq.jsonl", tmp_path / "eval"
    args = ["--data", str(data), "--small", str(tiny_lm_dir), "--large", str(tiny_plain_lm_dir), "--out", str(out),
            "--limit", "2", "--relay.reason-tokens", "6", "--relay.answer-tokens", "3", "--large-reason-tokens", "4"]  # fmt: skip
    assert main(args) == 0
    problems = [json.loads(line) for line in data.read_text().splitlines()]
    assert len(problems) == 16 and problems[0]["id"] == "simple_equations-1-0"
    rows = {r["condition"] for r in json.loads((out / "results.json").read_text())["rows"]}
    assert {"large_direct", "large_reasoning", "small_reasoning", "relay:selfinfo@0.25:agreement"} <= rows
    assert (out / "results.md").exists() and (out / "accuracy_vs_latency.png").exists()
