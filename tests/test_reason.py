"""`tokenrelay reason`: traces written, resumed after interruption, bad input reported clearly."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from selector.cli import main
from selector.traces import load_traces

TRACE_FIELDS = {
    "id", "question", "answer", "images", "choices", "prompt", "reasoning", "reasoning_token_ids",
    "reasoning_logprobs", "small_answer", "small_correct", "finish_reason", "prompt_tokens", "new_tokens",
    "prefill_s", "decode_s", "model", "answer_line",
}  # fmt: skip


def _reason(data, model, out, *extra):
    return main(
        ["reason", "--data", str(data), "--model", str(model), "--out", str(out), "--device", "cpu", *extra]
    )


def test_reason_writes_traces_and_resumes(arithmetic_jsonl, tiny_lm_dir, tmp_path):
    out = tmp_path / "traces"
    # A first run stopped after 3 examples (as if killed), then the full run finishes the rest.
    assert (
        _reason(
            arithmetic_jsonl, tiny_lm_dir, out, "--limit", "3", "--batch-size", "2", "--max-new-tokens", "5"
        )
        == 0
    )
    first = load_traces(out)
    assert sorted(first["id"]) == ["q0", "q1", "q2"]
    with pytest.warns(UserWarning, match="hit max_new_tokens"):
        assert _reason(arithmetic_jsonl, tiny_lm_dir, out, "--batch-size", "2", "--max_new_tokens", "5") == 0
    traces = load_traces(out)
    assert sorted(traces["id"]) == [f"q{i}" for i in range(5)]
    assert set(traces.column_names) >= TRACE_FIELDS
    row = traces[0]
    # The final answer line (if any) moved to answer_line; new_tokens counts every generated token.
    assert len(row["reasoning_token_ids"]) == len(row["reasoning_logprobs"]) <= row["new_tokens"]
    assert row["finish_reason"] in {"stop", "length"}
    assert row["answer"] and row["prompt"].startswith("<|im_start|>user")
    # Unchanged traces: a third run writes nothing.
    before = sorted(p.name for p in out.glob("shard-*.parquet"))
    assert _reason(arithmetic_jsonl, tiny_lm_dir, out) == 0
    assert sorted(p.name for p in out.glob("shard-*.parquet")) == before


def test_reason_matches_uninterrupted_run(arithmetic_jsonl, tiny_lm_dir, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert _reason(arithmetic_jsonl, tiny_lm_dir, whole, "--max-new-tokens", "4") == 0
    assert _reason(arithmetic_jsonl, tiny_lm_dir, parts, "--max-new-tokens", "4", "--limit", "2") == 0
    assert _reason(arithmetic_jsonl, tiny_lm_dir, parts, "--max-new-tokens", "4") == 0
    a = {r["id"]: r["reasoning_token_ids"] for r in load_traces(whole)}
    b = {r["id"]: r["reasoning_token_ids"] for r in load_traces(parts)}
    assert a == b


def test_reason_stores_hidden_states(arithmetic_jsonl, tiny_lm_dir, tmp_path):
    out = tmp_path / "t"
    assert (
        _reason(
            arithmetic_jsonl, tiny_lm_dir, out, "--limit", "1", "--max-new-tokens", "3", "--hidden-layer", "1"
        )
        == 0
    )
    row = load_traces(out)[0]
    assert row["hidden_states"].shape == (len(row["reasoning_token_ids"]), 32)
    assert row["hidden_states"].dtype == "float32"  # stored as float32 arrays, read back as numpy


def test_reason_with_images(tiny_vlm_dir, tmp_path):
    Image.new("RGB", (20, 20), "red").save(tmp_path / "red.png")
    rows = [{"id": "v0", "question": "What color is it?", "answer": "red", "image": "red.png"}]
    (tmp_path / "vqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _reason(tmp_path / "vqa.jsonl", tiny_vlm_dir, tmp_path / "t", "--max-new-tokens", "3") == 0
    row = load_traces(tmp_path / "t")[0]
    assert row["images"][0].endswith("red.png")


def test_bad_input_is_reported_clearly(tmp_path, tiny_lm_dir, capsys):
    (tmp_path / "red.png").write_bytes(b"")
    rows = [{"id": "img-1", "question": "What color?", "answer": "red", "image": "red.png"}]
    (tmp_path / "img.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert _reason(tmp_path / "img.jsonl", tiny_lm_dir, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "img-1" in err and "text-only" in err

    (tmp_path / "noanswer.jsonl").write_text(json.dumps({"question": "q"}) + "\n")
    assert _reason(tmp_path / "noanswer.jsonl", tiny_lm_dir, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "answer" in err and "noanswer.jsonl" in err

    assert _reason(tmp_path / "img.jsonl", tmp_path / "no-model", tmp_path / "o") == 2
    assert "no-model" in capsys.readouterr().err

    assert _reason(tmp_path / "img.jsonl", tiny_lm_dir, tmp_path / "o", "--batch-size", "0") == 2
    assert "batch_size" in capsys.readouterr().err


def test_cli_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    assert "reason" in capsys.readouterr().out
    assert main(["reasno"]) == 2
    assert "did you mean 'reason'" in capsys.readouterr().err
