"""`tokenrelay infer`: one question, a dataset (resumable JSONL), and bad input caught before models load."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from selector.cli import main


def _infer(small, large, *extra):
    return main(
        ["infer", "--relay.small", str(small), "--relay.large", str(large), "--relay.device", "cpu", *extra]
    )


FAST = ("--relay.reason-tokens", "8", "--relay.answer-tokens", "3", "--relay.granularity", "word")


def test_infer_one_question(tiny_lm_dir, capsys):
    assert (
        _infer(tiny_lm_dir, tiny_lm_dir, "--question", "What is 2 + 3?", "--relay.gate", "always", *FAST) == 0
    )
    out = capsys.readouterr().out
    assert "reasoning tokens" in out and "s]" in out


def test_infer_one_image_question(tiny_vlm_dir, tmp_path, capsys):
    path = tmp_path / "img.png"
    Image.new("RGB", (32, 32), (0, 255, 0)).save(path)
    assert _infer(tiny_vlm_dir, tiny_vlm_dir, "--question", "What color?", "--image", str(path), *FAST) == 0
    assert capsys.readouterr().out.strip()


def test_infer_dataset_writes_and_resumes(tiny_lm_dir, arithmetic_jsonl, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    args = (
        "--data",
        str(arithmetic_jsonl),
        "--out",
        str(out),
        "--relay.batch-size",
        "2",
        "--relay.gate",
        "agreement",
        *FAST,
    )
    assert _infer(tiny_lm_dir, tiny_lm_dir, *args, "--limit", "3") == 0
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["q0", "q1", "q2"]
    assert _infer(tiny_lm_dir, tiny_lm_dir, *args) == 0
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [f"q{i}" for i in range(5)]
    assert {"answer", "path", "transfer_text", "stages", "latency_s", "correct", "leaked"} <= set(records[0])
    assert "accuracy" in capsys.readouterr().out
    assert _infer(tiny_lm_dir, tiny_lm_dir, *args) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == 5


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--relay.budget", "0"), "ratio budget"),
        (("--relay.budget", "1.5"), "ratio budget"),
        (("--relay.budget-kind", "topk", "--relay.budget", "-2"), "k >= 0"),
        (("--relay.budget-kind", "threshold", "--relay.budget", "1.5"), "threshold"),
        (("--relay.budget-kind", "percent"), "expected one of ratio, tokens, topk, threshold"),
        (("--relay.gate", "sometimes"), "unknown gate"),
        (("--relay.selector", "magic"), "unknown selector 'magic'"),
        (("--relay.granularity", "paragraph"), "expected one of token, word, sentence, auto"),
        (("--gate", "always"), "use --relay.gate"),
        (("--image", "/no/such/picture.png"), "/no/such/picture.png"),
        (("--data", "x.jsonl"), "exactly one of"),
    ],
)
def test_bad_input_fails_before_any_model_loads(extra, message, capsys):
    # The model folders do not exist: the config error must come first.
    assert _infer("/no/small", "/no/large", "--question", "What?", *extra) == 2
    err = capsys.readouterr().err
    assert message in err and "/no/large" not in err


def test_missing_dataset_image_is_named(tiny_lm_dir, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "question": "q?", "answer": "1", "image": "gone.png"}) + "\n")
    assert _infer(tiny_lm_dir, tiny_lm_dir, "--data", str(data), "--out", str(tmp_path / "o.jsonl")) == 2
    assert "gone.png" in capsys.readouterr().err
