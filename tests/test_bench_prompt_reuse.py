"""The prompt-reuse benchmark on a tiny model: it times both variants and finds the answers equal."""

from __future__ import annotations

import json

import pytest

from scripts.bench_prompt_reuse import BenchPromptReuseConfig, main


def test_whole_and_resumed_prefill_give_one_answer_and_write_their_table(tiny_lm_dir, tmp_path, one_thread):
    data, records = tmp_path / "q.jsonl", tmp_path / "records.jsonl"
    questions = {"a": "Let x = 3. What is x + 4?", "b": "What is 2 times 5?", "c": "What is 1 + 1?"}
    data.write_text(
        "".join(json.dumps({"id": k, "question": q, "answer": "7"}) + "\n" for k, q in questions.items())
    )
    rows = [
        {"condition": "relay:sel@0.25:confidence", "id": "a", "transfer_text": "x = 3, so x + 4 = 7."},
        {"condition": "relay:sel@0.25:confidence", "id": "b", "transfer_text": "2 times 5 is 10."},
        {"condition": "relay:sel@0.25:confidence", "id": "c", "transfer_text": None},  # answered directly
        {"condition": "relay:sel@0.25:always", "id": "c", "transfer_text": "1 + 1 = 2."},
    ]
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    argv = ["--records", str(records), "--data", str(data), "--large", str(tiny_lm_dir), "--repeats", "2",
            "--answer_tokens", "3", "--threads", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "prompt_reuse.json").read_text())
    assert result["questions"] == 2 and result["same_answers"] == 2
    assert [r["id"] for r in result["rows"]] == ["a", "b"]
    for r in result["rows"]:
        assert 0 < r["cached_tokens"] < r["prompt_tokens"]
        assert r["whole_prefill_s"] > 0 and r["resumed_prefill_s"] > 0
    assert "resumed from the direct prompt" in (out / "prompt_reuse.md").read_text()


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"records": None}, "--records"), ({"repeats": 0}, "repeats"), ({"limit": 0}, "limit")],
)
def test_bad_settings_are_refused(kw, message):
    base = {"records": "r.jsonl", "data": "d.jsonl", "large": "m"}
    with pytest.raises(ValueError, match=message):
        BenchPromptReuseConfig(**{**base, **kw})
