"""`tokenrelay label`: the Lightning predict job labels traces, skips empty ones, and resumes exactly."""

from __future__ import annotations

import json

import lightning as L
import pyarrow.parquet as pq
import pytest

from selector.agents import Agent
from selector.cli import main, run_command
from selector.shards import ShardWriter, read_records, shard_files
from training.label_job import LabelConfig, run_label

TRACE_FIELDS = {
    "id", "question", "answer", "images", "choices", "prompt", "reasoning", "reasoning_token_ids",
    "reasoning_logprobs", "small_answer", "small_correct", "finish_reason", "prompt_tokens", "new_tokens",
    "prefill_s", "decode_s", "model",
}  # fmt: skip
LABEL_FIELDS = {
    "granularity", "unit_starts", "unit_ends", "unit_token_counts", "labels", "f_all", "f_none",
    "label_method", "fit_r2", "label_forward_passes", "label_seconds", "labeler_model",
}  # fmt: skip
REASONINGS = [
    "First, 2 + 3 = 5. So the answer is 5.",
    "Let x = 3 and y = x + 4, so y is 7.\nTherefore z = y * 2 = 14. Answer: 14",
    "",  # no reasoning: skipped and counted
    "The sky is blue. Answer: blue",
    "0 1 2 3 4 5. What is 2 + 3? It is 5.",
    "Solve the problem step by step. Answer: 9",
]


def _trace(i: int, reasoning: str, answer: str = "5") -> dict:
    return {
        "id": f"q{i}",
        "question": f"What is {i} + {i + 1}?",
        "answer": answer,
        "images": [],
        "choices": None,
        "prompt": "p",
        "reasoning": reasoning,
        "reasoning_token_ids": [1, 2, 3],
        "reasoning_logprobs": [-0.1, -0.2, -0.3],
        "small_answer": "5",
        "small_correct": True,
        "finish_reason": "stop",
        "prompt_tokens": 10,
        "new_tokens": 3,
        "prefill_s": 0.1,
        "decode_s": 0.2,
        "model": "small",
    }


@pytest.fixture()
def traces_dir(tmp_path):
    out = tmp_path / "traces"
    writer = ShardWriter(out)
    records = [_trace(i, r) for i, r in enumerate(REASONINGS)]
    writer.write(records[:3])
    writer.write(records[3:])
    return out


@pytest.fixture(scope="module")
def lm(tiny_lm_dir):
    return Agent.from_pretrained(tiny_lm_dir, device="cpu")


def _config(traces, model, out, **kw) -> LabelConfig:
    base = {"accelerator": "cpu", "devices": 1, "progress_bar": False, "masks": 6, "batch_size": 2}
    return LabelConfig(traces=str(traces), model=str(model), out=str(out), **{**base, **kw})


@pytest.mark.parametrize(
    ("method", "units"), [("ablation", "sentence"), ("loo", "word"), ("gradient", "token")]
)
def test_label_command_writes_labelled_traces(traces_dir, tiny_lm_dir, tmp_path, method, units, capsys):
    out = tmp_path / "labels"
    argv = ["label", "--traces", str(traces_dir), "--model", str(tiny_lm_dir), "--out", str(out)]
    argv += ["--method", method, "--units", units, "--masks", "6", "--keep-prob", "0.4"]
    argv += ["--accelerator", "cpu", "--devices", "1", "--progress-bar", "false"]
    if units == "token":  # the traces' recorded model ("small") is no folder: name the small tokenizer
        argv += ["--unit-tokenizer", str(tiny_lm_dir)]
    assert main(argv) == 0
    assert "5 traces labelled" in capsys.readouterr().out
    records = read_records(out)
    assert sorted(records["id"]) == ["q0", "q1", "q3", "q4", "q5"]
    assert set(records.column_names) >= TRACE_FIELDS | LABEL_FIELDS
    for row in records:
        n = len(row["labels"])
        assert n == len(row["unit_starts"]) == len(row["unit_ends"]) == len(row["unit_token_counts"]) >= 1
        for s, e in zip(row["unit_starts"], row["unit_ends"]):
            assert row["reasoning"][s:e].strip() == row["reasoning"][s:e] != ""
        assert row["granularity"] == units and row["label_method"] == method
        assert row["f_all"] < 0 and row["f_none"] < 0 and row["label_forward_passes"] >= 1
        assert row["labeler_model"] == str(tiny_lm_dir)
        if method != "ablation":
            assert row["fit_r2"] is None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_no_reasoning"] == 1 and summary["skipped_ids"] == ["q2"]
    assert summary["labelled"] == 5 and summary["labeler"]["method"] == method
    # Run again: nothing to do, nothing written.
    before = shard_files(out)
    assert main(argv) == 0
    assert shard_files(out) == before


class KillAfterFirstShard(L.Callback):
    """Simulates a job killed right after its first shard was written."""

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        raise KeyboardInterrupt("killed")


def test_killed_job_resumes_to_the_uninterrupted_result(traces_dir, lm, tiny_lm_dir, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run_label(_config(traces_dir, tiny_lm_dir, whole), agent=lm)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        run_label(_config(traces_dir, tiny_lm_dir, parts), agent=lm, callbacks=[KillAfterFirstShard()])
    assert len(shard_files(parts)) == 1  # the first batch (2 traces) was written before the kill
    assert len(read_records(parts)) == 2
    summary = run_label(_config(traces_dir, tiny_lm_dir, parts), agent=lm)
    assert summary["already_done"] == 2 and summary["labelled"] == 3
    raw_ids = [
        i for f in shard_files(parts) for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()
    ]
    assert len(raw_ids) == len(set(raw_ids)) == 5  # no trace lost, none duplicated
    a = {r["id"]: r for r in read_records(whole)}
    b = {r["id"]: r for r in read_records(parts)}
    assert a.keys() == b.keys()
    for key in a:
        assert b[key]["labels"] == pytest.approx(a[key]["labels"], abs=1e-5)
        assert b[key]["f_all"] == pytest.approx(a[key]["f_all"], abs=1e-5)
        assert b[key]["unit_starts"] == a[key]["unit_starts"]


def test_ctrl_c_in_the_lightning_job_says_how_to_resume(traces_dir, lm, tiny_lm_dir, tmp_path, capsys):
    config = _config(traces_dir, tiny_lm_dir, tmp_path / "out")
    body = lambda: run_label(config, agent=lm, callbacks=[KillAfterFirstShard()])  # noqa: E731
    assert run_command(body, "tokenrelay label") == 130
    assert "run the same command to resume" in capsys.readouterr().err


def test_bad_traces_are_reported(tmp_path, tiny_lm_dir, capsys):
    traces = tmp_path / "traces"
    ShardWriter(traces).write([_trace(0, "2 + 3 = 5."), _trace(7, "so 5.", answer=" ")])
    out = tmp_path / "o"
    argv = [
        "label",
        "--traces",
        str(traces),
        "--model",
        str(tiny_lm_dir),
        "--out",
        str(out),
        "--accelerator",
        "cpu",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "q7" in err and "gold answer is empty" in err
    assert main([*argv[:-2], "--method", "shapley"]) == 2
    assert "method" in capsys.readouterr().err
    assert main(["label", "--traces", str(tmp_path / "none"), "--model", "x", "--out", str(out)]) == 2
    assert "none" in capsys.readouterr().err


def test_score_batch_size_defaults_to_one_prompt_at_a_time_on_cpu(tmp_path):
    auto = _config(tmp_path / "t", tmp_path / "m", tmp_path / "o", score_batch_size=None)
    assert auto.labeler("cpu").batch_size == 1  # the prefix-tree walk: fastest on a CPU
    assert auto.labeler("cuda").batch_size == 16
    fixed = _config(tmp_path / "t", tmp_path / "m", tmp_path / "o", score_batch_size=4)
    assert fixed.labeler("cpu").batch_size == fixed.labeler("cuda").batch_size == 4


def test_a_second_job_on_the_same_folder_fails_at_once(tmp_path):
    first = ShardWriter(tmp_path, exclusive=True)
    with pytest.raises(RuntimeError, match="another job is already writing"):
        ShardWriter(tmp_path, exclusive=True)
    ShardWriter(tmp_path, tag="r1", exclusive=True).close()  # another rank of the same job: its own lock
    assert ShardWriter(tmp_path).done == set()  # reading what is done needs no lock
    first.close()
    ShardWriter(tmp_path, exclusive=True).close()  # released: the folder can be resumed
