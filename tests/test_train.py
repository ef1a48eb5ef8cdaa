"""Selector training: data module, losses, a learning test, and the `tokenrelay train` CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file
from torchmetrics.functional import spearman_corrcoef

from selector.baselines import select_transfer
from selector.cli import main as tokenrelay
from selector.data import DataError
from selector.reasoning import view_from_trace
from selector.scorer import ScorerConfig, TokenSelector
from selector.selection import Budget
from selector.shards import ShardWriter
from tests.selector_fixtures import synthetic_records
from training.datamodule import TraceDataModule, load_sources, split_of
from training.module import (
    SelectorModule,
    bce_top_q_loss,
    listwise_loss,
    pairwise_loss,
    pointwise_loss,
    top_q_targets,
)
from training.train_cli import ReleaseCheckpoint

CONFIGS = Path(__file__).parent.parent / "configs"


pytestmark = pytest.mark.usefixtures("one_thread")


def _write(path: Path, records: list[dict]) -> Path:
    ShardWriter(path).write(records)
    return path


def _quiet_trainer(**kw) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kw,
    )


@pytest.mark.parametrize("loss_fn", [listwise_loss, pairwise_loss, bce_top_q_loss, pointwise_loss])
def test_losses_prefer_the_label_order(loss_fn):
    labels = torch.tensor([[3.0, 1.0, 2.0, 0.0, 0.0], [0.0, 2.0, 1.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, True, False], [True, True, True, False, False]])
    good, bad = labels * 3, -labels * 3
    assert loss_fn(good, labels, mask) < loss_fn(bad, labels, mask)
    garbage = torch.where(mask, good, torch.full_like(good, 1e4))  # padding never counts
    assert torch.isclose(loss_fn(garbage, labels, mask), loss_fn(good, labels, mask))


def test_pointwise_loss_is_zero_at_the_labels_and_keeps_their_scale():
    labels = torch.tensor([[-8.0, 0.5, 1.0], [2.0, -0.5, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    assert float(pointwise_loss(labels, labels, mask)) == 0.0
    # a ranking loss cannot tell a shifted copy of the labels from the labels; the pointwise one does
    assert float(pointwise_loss(labels + 5, labels, mask)) > 1.0
    assert torch.isclose(listwise_loss(labels + 5, labels, mask), listwise_loss(labels, labels, mask))


def test_pointwise_selector_sends_only_units_predicted_to_help(tmp_path, small_tok, tiny_lm_dir):
    """Labels shifted so a third of units hurt: with the pointwise loss and a floor of 0 the kept units
    are the helpful ones (the ranking losses' scores carry no sign to do this)."""
    L.seed_everything(0, verbose=False)
    train = synthetic_records(small_tok, 64, hidden=32, model=str(tiny_lm_dir), seed=0)
    held_out = synthetic_records(small_tok, 24, hidden=32, model=str(tiny_lm_dir), seed=1)
    for r in train + held_out:
        r["labels"] = [4 * (y - 0.5) for y in r["labels"]]
    dm = TraceDataModule(str(_write(tmp_path / "labels", train)), small_model=str(tiny_lm_dir), batch_size=8)
    config = ScorerConfig(hidden_layer=-1, d_model=32, head="mlp", dropout=0.0, min_score=0.0)
    module = SelectorModule(config, loss="pointwise", lr=3e-3)
    _quiet_trainer(max_epochs=10).fit(module, datamodule=dm)
    out = module.selector.save_pretrained(tmp_path / "release")
    selector = TokenSelector.from_pretrained(out)
    assert selector.min_score == 0.0 and "| score floor | 0:" in (out / "README.md").read_text()
    right = total = sent_harm = 0
    for r in held_out:
        view = view_from_trace(r, tokenizer=small_tok)
        counts = [1] * len(view.units)
        mask = select_transfer(selector, view, counts, Budget.ratio(1.0)).mask
        right += sum(k == (y > 0) for k, y in zip(mask, r["labels"]))
        sent_harm += sum(k and y < 0 for k, y in zip(mask, r["labels"]))
        total += len(mask)
    assert right / total > 0.85, right / total
    assert sent_harm / total < 0.1


def test_top_q_targets():
    labels = torch.tensor([[0.1, 0.9, 0.5, 0.2, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True] * 4 + [False] * 4])
    assert top_q_targets(labels, mask, 0.25).tolist() == [[0, 1, 0, 0, 0, 0, 0, 0]]
    assert top_q_targets(labels, mask, 0.5).tolist() == [[0, 1, 1, 0, 0, 0, 0, 0]]


def test_datamodule_skips_constant_labels_and_splits_by_id(tmp_path, small_tok, tiny_lm_dir):
    records = synthetic_records(small_tok, 30, hidden=32, model=str(tiny_lm_dir))
    records[0]["labels"] = [0.0] * len(records[0]["labels"])
    records[1]["labels"] = [2.5] * len(records[1]["labels"])
    dm = TraceDataModule(
        str(_write(tmp_path / "labels", records)), val_fraction=0.2
    )  # tokenizer from `model`
    with pytest.warns(UserWarning, match="skipped 2 of 30"):
        dm.setup("fit")
    assert dm.stats["skipped_constant_labels"] == 2 and dm.stats["train"] + dm.stats["val"] == 28
    assert {t.id for t in dm.val_items} == {r["id"] for r in records[2:] if split_of(r["id"], 0.2) == "val"}
    assert dm.info["hidden_size"] == 32 and dm.info["granularity"] == "sentence"
    assert dm.info["label_method"] == "synthetic" and dm.info["small_vocab_size"] == len(small_tok)
    item = dm.train_items[0]
    assert item.view.token_spans is not None and len(item.labels) == len(item.view.units)
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == 8 and len({len(t.labels) for t in batch}) > 1  # ragged traces


def test_sources_with_a_column_null_in_one_of_them_merge(tmp_path):
    """A label folder where no trace drew the reference labeler has an all-null reliability column
    (Arrow type null); it must still merge with one that has values."""
    import datasets

    rows = [{"id": "a-1-0", "labels": [0.5, -1.0], "label_reliability": None}]
    typed = [{"id": "b-1-0", "labels": [2.0, 0.0], "label_reliability": 0.25}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "a"))
    datasets.Dataset.from_list(typed).save_to_disk(str(tmp_path / "b"))
    merged = load_sources([str(tmp_path / "a"), str(tmp_path / "b")])
    assert merged["label_reliability"] == [None, 0.25]
    assert merged["labels"] == [[0.5, -1.0], [2.0, 0.0]]


def test_unlabelled_traces_are_refused(tmp_path, small_tok, tiny_lm_dir):
    records = synthetic_records(small_tok, 3, hidden=32, model=str(tiny_lm_dir))
    for r in records:
        del r["labels"]
    dm = TraceDataModule(str(_write(tmp_path / "traces", records)))
    with pytest.raises(DataError, match="not labelled"):
        dm.setup("fit")


def test_selector_learns_a_feature_dependent_importance(tmp_path, small_tok, tiny_lm_dir):
    """Labels depend on a hidden-state direction and on digits: held-out Spearman > 0.8."""
    L.seed_everything(0, verbose=False)
    train = synthetic_records(small_tok, 64, hidden=32, model=str(tiny_lm_dir), seed=0)
    held_out = synthetic_records(small_tok, 24, hidden=32, model=str(tiny_lm_dir), seed=1)
    dm = TraceDataModule(str(_write(tmp_path / "labels", train)), small_model=str(tiny_lm_dir), batch_size=8)
    config = ScorerConfig(hidden_layer=-1, d_model=32, head="mlp", head_layers=1, dropout=0.0)
    module = SelectorModule(config, lr=3e-3)
    _quiet_trainer(max_epochs=10).fit(module, datamodule=dm)
    views = [view_from_trace(r, tokenizer=small_tok) for r in held_out]
    scores = module.selector.score_views(views)
    rho = [
        float(spearman_corrcoef(torch.tensor(s), torch.tensor(r["labels"]))) for s, r in zip(scores, held_out)
    ]
    assert sum(rho) / len(rho) > 0.8, rho


def test_cli_writes_release_and_resumes(tmp_path, small_tok, tiny_lm_dir):
    records = synthetic_records(small_tok, 24, hidden=32, model=str(tiny_lm_dir))
    records[5]["labels"] = [1.0] * len(records[5]["labels"])
    data = _write(tmp_path / "labels", records)
    root = tmp_path / "run"
    common = [
        "--config", str(CONFIGS / "train.yaml"),
        "--data.data", str(data),
        "--data.small_model", str(tiny_lm_dir),
        "--data.batch_size", "8",
        "--model.scorer.d_model", "32",
        "--trainer.default_root_dir", str(root),
        "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
    assert tokenrelay(["train", *common, "--trainer.max_steps", "3"]) == 0
    written = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert written == [
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "config.yaml",
        "lightning_logs/version_0/hparams.yaml",
        "lightning_logs/version_0/metrics.csv",
        "selector/README.md",
        "selector/config.json",
        "selector/model.safetensors",
    ]
    release = json.loads((root / "selector" / "config.json").read_text())
    assert release["scorer"]["hidden_size"] == 32 and release["scorer"]["small_model"] == str(tiny_lm_dir)
    assert release["card"]["steps"] == 3 and release["card"]["skipped"] == 1
    assert "spearman" in release["card"]["metrics"]
    assert release["card"]["command"].startswith("tokenrelay train --config ")  # the card says how to redo it
    assert "--trainer.max_steps 3" in (root / "selector" / "README.md").read_text()
    assert "max_steps: 3" in (root / "config.yaml").read_text()
    first = load_file(root / "selector" / "model.safetensors")
    selector = TokenSelector.from_pretrained(root / "selector")
    assert selector.config.hidden_layer == -1

    last = root / "checkpoints" / "last.ckpt"
    # the last weights, to see that training went on (the best epoch may be an earlier one)
    resumed = ["--trainer.max_steps", "5", "--ckpt_path", str(last), "--release.weights", "last"]
    assert tokenrelay(["train", *common, *resumed]) == 0
    release = json.loads((root / "selector" / "config.json").read_text())
    assert release["card"]["steps"] == 5  # continued from step 3, not restarted
    second = load_file(root / "selector" / "model.safetensors")
    assert any(not torch.equal(first[k], second[k]) for k in first)
    assert "max_steps: 5" in (root / "config.yaml").read_text()


def test_cli_reports_bad_data(tmp_path, capsys):
    rc = tokenrelay(["train", "--config", str(CONFIGS / "train.yaml"), "--data.data", str(tmp_path / "none"),
                     "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.accelerator", "cpu"])  # fmt: skip
    assert rc == 2
    assert "do not exist" in capsys.readouterr().err


def test_task_of_reads_prepare_data_ids():
    from training.datamodule import task_of

    assert task_of("simple_equations-1-104") == "simple_equations"
    assert task_of("simple_equations_t2v100-1-7") == "simple_equations_t2v100"
    assert task_of("17") is None and task_of("a-b") is None


def test_cli_trains_on_a_task_mixture_and_reports_each_task(tmp_path, small_tok, tiny_lm_dir):
    """Two label folders (two tasks) train one selector; the card holds validation figures per task."""
    sources = []
    for task, seed in (("taska", 0), ("taskb", 1)):
        records = synthetic_records(small_tok, 16, hidden=32, model=str(tiny_lm_dir), seed=seed)
        for k, r in enumerate(records):
            r["id"] = f"{task}-0-{k}"
        sources.append(str(_write(tmp_path / task, records)))
    root = tmp_path / "run"
    args = [
        "train", "--config", str(CONFIGS / "train.yaml"),
        "--data.data", f"[{sources[0]}, {sources[1]}]",
        "--data.small_model", str(tiny_lm_dir),
        "--data.val_fraction", "0.4",
        "--model.scorer.d_model", "32",
        "--trainer.default_root_dir", str(root),
        "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.max_steps", "2",
    ]  # fmt: skip
    assert tokenrelay(args) == 0
    card = json.loads((root / "selector" / "config.json").read_text())["card"]
    assert card["tasks"] == {"taska": 16, "taskb": 16} and card["data"] == sources
    for task in ("taska", "taskb"):
        assert card["metrics"][f"task/{task}/n"] >= 1
        assert -1 <= card["metrics"][f"task/{task}/spearman"] <= 1
    assert "task/taskb/spearman" in (root / "selector" / "README.md").read_text()

    # the same trace twice (one folder given twice) is refused with a clear message
    bad = ["train", *args[1:4], f"[{sources[0]}, {sources[0]}]", *args[5:]]
    bad[bad.index("--trainer.default_root_dir") + 1] = str(tmp_path / "run2")
    assert tokenrelay(bad) == 2


@pytest.mark.parametrize("weights", ["best", "last"])
def test_release_ships_the_best_validation_epoch(tmp_path, small_tok, tiny_lm_dir, weights):
    """The release holds best.ckpt's weights (the card says which epoch), or last.ckpt's on request."""
    records = synthetic_records(small_tok, 24, hidden=32, model=str(tiny_lm_dir))
    data = _write(tmp_path / "labels", records)
    root = tmp_path / "run"
    args = [
        "train", "--config", str(CONFIGS / "train.yaml"),
        "--data.data", str(data), "--data.small_model", str(tiny_lm_dir), "--data.batch_size", "8",
        "--model.scorer.d_model", "32", "--model.lr", "0.05",
        "--trainer.default_root_dir", str(root), "--trainer.accelerator", "cpu", "--trainer.max_epochs", "4",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--release.weights", weights,
    ]  # fmt: skip
    assert tokenrelay(args) == 0
    shipped = load_file(root / "selector" / "model.safetensors")
    source = torch.load(root / "checkpoints" / f"{weights}.ckpt", map_location="cpu", weights_only=False)
    assert shipped and all(torch.equal(v, source["state_dict"][f"net.{k}"]) for k, v in shipped.items())
    card = json.loads((root / "selector" / "config.json").read_text())["card"]
    assert card["steps"] == source["global_step"]
    last = torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 12  # last.ckpt follows every epoch, improved or not (resume)
    if weights == "best":
        assert card["released_weights"].startswith(f"best epoch {source['epoch']} by val/spearman")
        metrics = list(csv.DictReader((root / "lightning_logs/version_0/metrics.csv").open()))
        logged = [float(r["val/spearman"]) for r in metrics if r.get("val/spearman")]
        assert card["metrics"]["spearman"] == pytest.approx(max(logged), abs=1e-6)
    else:
        assert card["released_weights"].startswith("last epoch")
    assert "released weights" in (root / "selector" / "README.md").read_text()


def test_release_weights_must_be_best_or_last():
    with pytest.raises(ValueError, match="best' or 'last"):
        ReleaseCheckpoint(weights="final")
