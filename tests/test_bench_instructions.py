"""scripts/bench_instructions on a tiny model: one row per instruction, per-question rows, a resume, refusals."""

from __future__ import annotations

import json

from scripts.bench_instructions import main


def test_bench_instructions_smoke_and_resume(tiny_lm_dir, arithmetic_jsonl, tmp_path, one_thread, capsys):
    out = tmp_path / "instr.json"
    args = ["--model", str(tiny_lm_dir), "--data", str(arithmetic_jsonl), "--limit", "3", "--max-new-tokens", "6",
            "--instruction", "brief=Answer briefly.", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads(out.read_text())
    assert (
        list(summary["rows"]) == ["default", "brief"]
        and summary["instructions"]["brief"] == "Answer briefly."
    )
    for row in summary["rows"].values():
        assert row["questions"] == 3 and 1 <= row["median_tokens"] <= 6 and 0 <= row["accuracy"] <= 1
    assert "| brief |" in printed and "| default |" in printed
    lines = out.with_suffix(".jsonl").read_text().splitlines()
    assert len(lines) == 6 and {json.loads(x)["instruction"] for x in lines} == {"default", "brief"}
    assert main(args) == 0  # resumed: every question read back, nothing generated again
    assert out.with_suffix(".jsonl").read_text().splitlines() == lines


def test_bench_instructions_refuses_bad_input(tiny_lm_dir, arithmetic_jsonl, tmp_path, capsys):
    base = ["--model", str(tiny_lm_dir), "--data", str(arithmetic_jsonl), "--out", str(tmp_path / "o.json")]
    assert main([*base, "--instruction", "no-equals-sign"]) == 2
    assert "NAME=TEXT" in capsys.readouterr().err
    assert main([*base, "--instruction", "default=Be short."]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main([*base, "--max-new-tokens", "0"]) == 2
    capsys.readouterr()
    assert main([*base, "--no-default"]) == 2
    assert "at least one --instruction" in capsys.readouterr().err
