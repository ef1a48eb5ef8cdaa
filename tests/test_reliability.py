"""Outputs are safe: one writer per output (refused at once, in one line, before any model loads),
release folders never silently replaced, no config writing into checkpoints/, torn JSONL lines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from selector.cli import main as tokenrelay
from selector.shards import OutputLock, OutputLockedError, ShardWriter, read_jsonl_output
from tests.selector_fixtures import make_tiny_bert, synthetic_records

REPO = Path(__file__).parent.parent
TRAIN_CONFIGS = sorted(
    p for p in (REPO / "configs").rglob("*.yaml") if p.read_text().startswith("# tokenrelay train ")
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _stderr(capsys) -> str:
    """What a command wrote to stderr, less the "--- Logging error ---" reports of Lightning's log
    handlers that still hold an earlier test's (closed) captured stderr: a test-harness artefact."""
    err = capsys.readouterr().err
    return re.sub(r"--- Logging error ---.*?\nArguments: [^\n]*\n", "", err, flags=re.DOTALL)


def _one_line_refusal(capsys, name: str) -> str:
    err = _stderr(capsys).strip()
    assert "another job is already writing" in err and name in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_a_lock_is_exclusive_and_leaves_no_file(tmp_path):
    out = tmp_path / "results.jsonl"
    with OutputLock(out), pytest.raises(OutputLockedError, match="results.jsonl"):
        OutputLock(out)
    assert list(tmp_path.iterdir()) == []  # released: the lock file is gone, the output untouched
    OutputLock(out).release()  # and it can be taken again


def test_infer_refuses_a_second_writer_before_loading_models(arithmetic_jsonl, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    args = [
        "infer",
        "--data",
        str(arithmetic_jsonl),
        "--out",
        str(out),
        "--relay.large",
        "/no/large",
        "--relay.gate",
        "never",
    ]
    with OutputLock(out):
        assert tokenrelay(args) == 2
    _one_line_refusal(capsys, str(out))  # the missing model was never reached
    assert not out.exists()
    assert tokenrelay(args) == 2  # the lock released: now it is the missing model that stops it
    assert "/no/large" in _stderr(capsys)


def test_eval_refuses_a_second_writer_before_loading_models(arithmetic_jsonl, tmp_path, capsys):
    out = tmp_path / "eval"
    args = [
        "eval",
        "--data",
        str(arithmetic_jsonl),
        "--relay.small",
        "/no/small",
        "--relay.large",
        "/no/large",
        "--out",
        str(out),
    ]
    with OutputLock(out):
        assert tokenrelay(args) == 2
    _one_line_refusal(capsys, str(out))


def test_label_refuses_a_second_writer_before_reading_or_loading(tmp_path, capsys):
    out = tmp_path / "labels"
    args = ["label", "--traces", str(tmp_path / "no-traces"), "--model", "/no/large", "--out", str(out)]
    with OutputLock(out):
        assert tokenrelay(args) == 2
    _one_line_refusal(capsys, str(out))


def test_reason_refusal_is_one_line(arithmetic_jsonl, tmp_path, capsys):
    out = tmp_path / "traces"
    writer = ShardWriter(out, exclusive=True)
    try:
        assert (
            tokenrelay(["reason", "--data", str(arithmetic_jsonl), "--model", "/no/small", "--out", str(out)])
            == 2
        )
    finally:
        writer.close()
    _one_line_refusal(capsys, str(out))


@pytest.fixture(scope="module")
def labels(tmp_path_factory, small_tok, tiny_lm_dir):
    path = tmp_path_factory.mktemp("reliability") / "labels"
    ShardWriter(path).write(synthetic_records(small_tok, 12, hidden=32, model=str(tiny_lm_dir)))
    return path


def _train(labels, small, root, *extra) -> list[str]:
    return [
        "train", "--config", str(REPO / "configs" / "train.yaml"),
        "--data.data", str(labels), "--data.small_model", str(small), "--data.batch_size", "4",
        "--trainer.default_root_dir", str(root), "--trainer.max_steps", "1", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", *extra,
    ]  # fmt: skip


def test_train_refuses_a_second_writer_on_its_run_or_release(tmp_path, labels, capsys):
    root, release = tmp_path / "run", tmp_path / "release"
    with OutputLock(root):
        assert tokenrelay(_train(labels, "/no/small", root)) == 2
    _one_line_refusal(capsys, str(root))  # before the (missing) small model is looked for
    with OutputLock(release):
        assert tokenrelay(_train(labels, "/no/small", root, "--release.dirpath", str(release))) == 2
    _one_line_refusal(capsys, str(release))
    assert not root.exists()


def test_an_existing_release_folder_is_replaced_only_with_overwrite(tmp_path, labels, tiny_lm_dir, capsys):
    release = tmp_path / "shipped"
    release.mkdir()
    (release / "config.json").write_text("{}")
    args = _train(labels, tiny_lm_dir, tmp_path / "run", "--release.dirpath", str(release))
    assert tokenrelay(args) == 2
    err = _stderr(capsys)
    assert "already exists" in err and "--release.overwrite true" in err and "Traceback" not in err
    assert (release / "config.json").read_text() == "{}"
    assert not (tmp_path / "run").exists()  # refused before anything was written
    assert tokenrelay([*args, "--release.overwrite", "true"]) == 0
    assert json.loads((release / "config.json").read_text())["scorer"]["hidden_size"] == 32


def test_resuming_with_a_changed_model_is_one_line(tmp_path, labels, tiny_lm_dir, capsys):
    root = tmp_path / "run"
    assert tokenrelay(_train(labels, tiny_lm_dir, root)) == 0
    capsys.readouterr()
    assert (
        tokenrelay(
            _train(labels, tiny_lm_dir, root, "--model.scorer.d_model", "16", "--trainer.max_steps", "2")
        )
        == 2
    )
    err = _stderr(capsys)
    assert "cannot resume from" in err and "new --trainer.default_root_dir" in err and "Traceback" not in err


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in path.rglob("*")
        if p.is_file()
    }


@pytest.mark.parametrize("config", TRAIN_CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_no_training_config_writes_into_checkpoints(config, labels, tiny_lm_dir, tmp_path, monkeypatch):
    """Each training config, as shipped, trained one step on tiny data: checkpoints/ stays as it is."""
    shipped = _tree(REPO / "checkpoints")
    monkeypatch.chdir(tmp_path)  # the config's relative folders resolve here
    extra = ["--model.scorer.small_model", "null"]
    if yaml.safe_load(config.read_text())["model"]["scorer"]["backbone"] == "encoder":
        extra = ["--model.scorer.encoder", str(make_tiny_bert(tmp_path / "encoder"))]
    args = [
        "train", "--config", str(config), "--data.data", str(labels), "--data.small_model", str(tiny_lm_dir),
        "--data.batch_size", "4", "--trainer.max_steps", "1", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", *extra,
    ]  # fmt: skip
    assert tokenrelay(args) == 0
    releases = [p.parent for p in tmp_path.rglob("model.safetensors") if (p.parent / "README.md").exists()]
    assert len(releases) == 1 and "checkpoints" not in releases[0].relative_to(tmp_path).parts
    assert _tree(REPO / "checkpoints") == shipped


def test_torn_last_jsonl_line_is_dropped_with_a_warning(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "answ')
    with pytest.warns(UserWarning, match=r"results.jsonl: dropped the unfinished last line 3"):
        assert [r["id"] for r in read_jsonl_output(path)] == ["a", "b"]
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'  # the next append starts on a clean line


def test_other_corrupt_jsonl_lines_are_errors_naming_file_and_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"id": "a"}\n{"id": \n{"id": "c"}\n')
    with pytest.raises(ValueError, match=r"results.jsonl, line 2: not valid JSON"):
        read_jsonl_output(path)
    path.write_text('{"id": "a"}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"line 2: expected a JSON object"):
        read_jsonl_output(path)


def test_infer_resumes_past_a_torn_line(tiny_lm_dir, arithmetic_jsonl, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    args = ["infer", "--data", str(arithmetic_jsonl), "--out", str(out), "--relay.large", str(tiny_lm_dir),
            "--relay.gate", "never", "--relay.answer-tokens", "2", "--relay.device", "cpu", "--limit", "2"]  # fmt: skip
    assert tokenrelay(args) == 0
    whole = out.read_text()
    out.write_text(whole + whole.splitlines()[0][:20])  # a kill mid-write of a third record
    with pytest.warns(UserWarning, match="line 3"):
        assert tokenrelay(args[:-2]) == 0
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == [f"q{i}" for i in range(5)]
    out.write_text(whole.replace("}\n", "}}\n", 1) + whole)
    assert tokenrelay(args) == 2
    err = _stderr(capsys)
    assert f"{out}, line 1: not valid JSON" in err and "Traceback" not in err


def test_train_help_is_short_and_about_tokenrelay(capsys):
    assert tokenrelay(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tokenrelay train") and "selector" in out.splitlines()[2]
    assert len(out.splitlines()) < 40 and "--help-all" in out and "fit" not in out.split()
    assert tokenrelay(["train"]) == 2  # no arguments: the short help, not "required: fit.data.data"
    assert capsys.readouterr().err.startswith("usage: tokenrelay train")
    with pytest.raises(SystemExit) as exit_:
        tokenrelay(["train", "--help-all"])
    assert exit_.value.code == 0
    full = capsys.readouterr().out
    assert full.startswith("usage: tokenrelay train") and "--trainer.max_epochs" in full
    assert "--release.overwrite" in full and "--ckpt_path" in full


def test_a_missing_column_is_named_in_command_line_terms(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "problem": "1+1?", "answer": "2"}) + "\n")
    args = [
        "infer",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "r.jsonl"),
        "--relay.large",
        "/no/large",
        "--relay.gate",
        "never",
    ]
    assert tokenrelay(args) == 2
    err = _stderr(capsys)
    assert "--columns.question COLUMN" in err and "'problem'" in err


def test_an_unsafe_checkpoint_is_refused_in_one_line(tmp_path, labels, tiny_lm_dir, capsys):
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "note": Path("x")}, bad)  # a pickled object beyond tensors
    assert tokenrelay(_train(labels, tiny_lm_dir, tmp_path / "run", "--ckpt_path", str(bad))) == 2
    err = _stderr(capsys)
    assert f"refusing to load {bad}" in err and "Traceback" not in err
