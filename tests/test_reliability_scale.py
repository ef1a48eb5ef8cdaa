"""Scale-out and stopping: `label` and `train` on two CPU processes (DDP over gloo), and a SIGTERM'd
label job that stops after the forward pass under way, keeping what it finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import training.label_job as label_job
from selector.cli import main as tokenrelay
from selector.shards import ShardWriter, read_records, shard_files
from tests.selector_fixtures import synthetic_records

REPO = Path(__file__).parent.parent
TOKENRELAY = str(Path(sys.executable).parent / "tokenrelay")
SENTENCES = ["First, 2 + 3 = 5.", "So y is 7.", "The sky is blue.", "It is 5.", "Then z = 14."]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def traces(tmp_path) -> Path:
    base = {"images": [], "choices": None, "prompt": "p", "reasoning_token_ids": [1, 2, 3], "model": "small",
            "reasoning_logprobs": [-0.1, -0.2, -0.3], "small_answer": "5", "small_correct": True,
            "finish_reason": "stop", "prompt_tokens": 10, "new_tokens": 3, "prefill_s": 0.1, "decode_s": 0.2}  # fmt: skip
    rows = [
        {
            **base,
            "id": f"q{i}",
            "question": f"What is {i} + {i + 1}?",
            "answer": str(2 * i + 1),
            "reasoning": " ".join(SENTENCES[: 2 + i % 4]),
        }
        for i in range(8)
    ]
    ShardWriter(tmp_path / "traces").write(rows)
    return tmp_path / "traces"


def _label(traces: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return ["label", "--traces", str(traces), "--model", str(model), "--out", str(out), "--masks", "4",
            "--accelerator", "cpu", "--progress-bar", "false", *extra]  # fmt: skip


def _labels(out: Path) -> dict[str, list[float]]:
    return {r["id"]: r["labels"] for r in read_records(out).to_list()}


def test_sigterm_stops_a_label_job_mid_batch_keeping_finished_traces(
    traces, tiny_lm_dir, tmp_path, monkeypatch
):
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert tokenrelay(_label(traces, tiny_lm_dir, whole, "--batch-size", "8")) == 0

    real, calls = label_job.label_record, []

    def label_then_sigterm_on_the_third(*args, **kwargs):
        calls.append(args[2]["id"])
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` would, mid-batch
        return real(*args, **kwargs)

    monkeypatch.setattr(label_job, "label_record", label_then_sigterm_on_the_third)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        assert tokenrelay(_label(traces, tiny_lm_dir, stopped, "--batch-size", "8")) == 130
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning ignores Ctrl-C once it has handled one
    assert len(calls) == 3  # stopped inside the third trace, not at the end of the 8-trace batch
    assert sorted(_labels(stopped)) == sorted(calls[:2])  # the two finished traces were written
    monkeypatch.setattr(label_job, "label_record", real)
    assert (
        tokenrelay(_label(traces, tiny_lm_dir, stopped, "--batch-size", "8")) == 0
    )  # the same command resumes
    assert _labels(stopped) == _labels(whole)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([TOKENRELAY, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_label_on_two_processes_equals_one_process(traces, tiny_lm_dir, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert tokenrelay(_label(traces, tiny_lm_dir, one, "--batch-size", "2")) == 0
    done = _run(
        _label(traces, tiny_lm_dir, two, "--batch-size", "2", "--devices", "2", "--strategy", "ddp"), REPO
    )
    assert done.returncode == 0, done.stderr[-3000:]
    tags = {p.name.split("-")[2] for p in shard_files(two)}
    assert tags == {"r0", "r1"}  # both ranks labelled a share
    rows = read_records(two).to_list()
    assert len(rows) == len({r["id"] for r in rows}) == 8  # nothing lost, nothing twice
    expected = _labels(one)
    for row in rows:
        assert row["labels"] == pytest.approx(expected[row["id"]], abs=1e-5), row["id"]
    summary = json.loads((two / "summary.json").read_text())
    assert summary["labelled"] == 8 and summary["already_done"] == 0  # rank 0 counted every rank's shards


def test_train_on_two_processes_releases_one_selector(tmp_path, small_tok, tiny_lm_dir):
    data = tmp_path / "labels"
    ShardWriter(data).write(synthetic_records(small_tok, 16, hidden=32, model=str(tiny_lm_dir)))
    root = tmp_path / "run"
    args = [
        "train", "--config", str(REPO / "configs" / "train.yaml"), "--data.data", str(data),
        "--data.small_model", str(tiny_lm_dir), "--data.batch_size", "4", "--trainer.default_root_dir", str(root),
        "--trainer.max_epochs", "2", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.strategy", "ddp", "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    done = _run(args, REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.loads((root / "selector" / "config.json").read_text())["card"]
    assert card["steps"] > 0 and "spearman" in card["metrics"]
    assert (root / "checkpoints" / "last.ckpt").is_file()
