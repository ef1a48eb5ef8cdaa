"""Stop labels measured through the relay (scripts/label_stop_enough.py) and a stop head trained on them:
the walk from the end labels exactly the boundaries from which the answer is settled, the command runs the
real relay on tiny models, resumes and shards, and train_stop_head reads its labels (and refuses foreign ones)."""

from __future__ import annotations

import json

import pytest
import torch

from scripts.label_stop_enough import label_trace, main, prefix_generation
from selector.stop_head import unit_boundaries
from tests.test_stop_head import _planted_traces


class Chars:
    """A tokenizer whose tokens are characters."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


TEXT = "We add. So x is 4. No wait. So x is 5. Done."


def _trace(text: str = TEXT) -> dict:
    ids = [ord(c) for c in text]
    return {"id": "toy-1-0", "question": "q", "answer": "5", "reasoning_token_ids": ids,
            "reasoning_logprobs": [0.0] * len(ids), "hidden_states": torch.zeros(len(ids), 3).numpy(),
            "finish_reason": "stop", "prompt_tokens": 3}  # fmt: skip


class Planted:
    """Answers what the reasoning so far says last ('x is N'), as a planted relay would."""

    def __init__(self):
        self.asked: list[int] = []

    def __call__(self, ex, gen):
        text = Chars().decode(gen.token_ids)
        self.asked.append(len(gen.token_ids))
        said = [w.strip(".") for w in text.split("is ")[1:]]
        return (said[-1][0] if said else None), text


def test_labels_are_the_settled_suffix_and_the_walk_stops_at_the_first_change():
    trace = _trace()
    points = unit_boundaries(Chars(), trace["reasoning_token_ids"])
    assert len(points) == 4  # after each complete sentence but the last
    answerer = Planted()
    record = label_trace(answerer, trace, Chars())
    # the answers from the prefixes: None, 4, 4, 5; the whole trace: 5 -> settled from the 4th boundary
    assert record["points"] == points and record["full_answer"] == "5"
    assert record["labels"] == [False, False, False, True]
    # the walk asked the whole trace, then the boundaries from the end until the first change
    assert answerer.asked == [len(trace["reasoning_token_ids"]), points[3], points[2]]
    assert set(record["answers"]) == {str(points[3]), str(points[2])}


def test_a_trace_without_an_answer_is_never_settled():
    trace = _trace("We add. Then we think. And think more. Done.")
    record = label_trace(Planted(), trace, Chars())
    assert record["full_answer"] is None and not any(record["labels"])


def test_prefix_generation_cuts_every_tensor():
    trace = _trace()
    gen = prefix_generation(trace, 7)
    assert gen.token_ids == trace["reasoning_token_ids"][:7] and len(gen.logprobs) == 7
    assert gen.hidden_states.shape == (7, 3) and gen.finish_reason == "early_stop"
    assert prefix_generation(trace, None).finish_reason == "stop"


def test_the_command_runs_the_relay_resumes_and_shards(tiny_lm_dir, small_tok, tmp_path, capsys, one_thread):
    _planted_traces(tmp_path / "traces", small_tok, n=3)
    base = ["--traces", str(tmp_path / "traces"), "--small", str(tiny_lm_dir), "--large", str(tiny_lm_dir),
            "--selector", "last", "--dtype", "float32", "--answer-tokens", "4", "--quiet"]  # fmt: skip
    first = tmp_path / "labels_0.jsonl"
    assert main([*base, "--shard", "0/2", "--out", str(first)]) == 0
    rows = [json.loads(line) for line in first.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["toy-1-0", "toy-1-2"]
    for r in rows:
        assert len(r["labels"]) == len(r["points"]) > 0
        assert r["labels"] == sorted(r["labels"])  # a settled suffix: never done, then not done
    assert main([*base, "--shard", "0/2", "--out", str(first)]) == 0  # resumed: nothing new
    assert (
        len(first.read_text().splitlines()) == 2 and "labelled 0 traces (2 already" in capsys.readouterr().out
    )
    assert main([*base, "--shard", "1/2", "--out", str(tmp_path / "labels_1.jsonl")]) == 0
    assert [json.loads(x)["id"] for x in (tmp_path / "labels_1.jsonl").read_text().splitlines()] == [
        "toy-1-1"
    ]
    assert main([*base, "--shard", "2/2", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "need 0 <= I < N" in capsys.readouterr().err


def _labels_for(folder, tokenizer, path, flip: bool = False) -> None:
    """Measured labels for _planted_traces: done from the boundary where the planted state says so."""
    from selector.traces import load_traces

    with open(path, "w") as sink:
        for t in load_traces(folder):
            ids = list(t["reasoning_token_ids"])
            points = unit_boundaries(tokenizer, ids)
            labels = [bool(t["hidden_states"][k - 1][0] > 0) != flip for k in points]
            if t["id"].endswith("-0"):
                labels = [True] * len(points)  # never needed its reasoning: left out of the fit
            sink.write(json.dumps({"id": t["id"], "points": points, "labels": labels}) + "\n")


def test_train_stop_head_reads_measured_labels(tiny_lm_dir, small_tok, tmp_path, capsys):
    from scripts.train_stop_head import main as train

    _planted_traces(tmp_path / "traces", small_tok)
    labels = tmp_path / "labels.jsonl"
    _labels_for(tmp_path / "traces", small_tok, labels, flip=True)  # the opposite of the default label
    out = tmp_path / "head"
    argv = ["--traces", str(tmp_path / "traces"), "--small-model", str(tiny_lm_dir), "--labels", str(labels),
            "--out", str(out), "--quiet", "--val-fraction", "0.3"]  # fmt: skip
    assert train(argv) == 0
    row = json.loads((out / "validation.json").read_text())[-1]
    assert row["auroc"] > 0.95 and row["at_0.9"]["premature"] == 0.0
    card = (out / "README.md").read_text()
    assert "measured: labels.jsonl" in card and "trained on: 39 traces" in card
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "toy-1-0", "points": [1, 2], "labels": [False, True]}) + "\n")
    capsys.readouterr()
    assert train([*argv[:-5], "--labels", str(bad), "--out", str(tmp_path / "h2"), "--quiet"]) == 2
    assert "not this tokenizer's" in capsys.readouterr().err
    bad.write_text("{not json\n")
    assert train([*argv[:-5], "--labels", str(bad), "--out", str(tmp_path / "h3"), "--quiet"]) == 2
    assert "not a stop-label record" in capsys.readouterr().err


@pytest.mark.parametrize("shard", ["x", "1", "0/0"])
def test_bad_shards_are_refused(shard, capsys):
    argv = ["--traces", "t", "--small", "s", "--large", "l", "--selector", "last", "--out", "o",
            "--shard", shard]  # fmt: skip
    assert main(argv) == 2
    assert "--shard" in capsys.readouterr().err
