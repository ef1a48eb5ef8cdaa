"""The novelty fallback: a selector notices traces unlike its training data and sends nothing from them,
or scores them from the scalar features alone; turning it on changes nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file, save_file

from selector.baselines import select_transfer
from selector.cli import main as tokenrelay
from selector.reasoning import view_from_trace
from selector.scorer import CheckpointError, ScorerConfig, TokenSelector
from selector.scorer.novelty import TraceNovelty
from selector.selection import Budget
from selector.shards import ShardWriter
from tests.selector_fixtures import synthetic_records
from training.datamodule import TraceDataModule
from training.module import SelectorModule

CONFIGS = Path(__file__).parent.parent / "configs"

pytestmark = pytest.mark.usefixtures("one_thread")


def _gaussian(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=torch.Generator().manual_seed(7)) / d**0.5  # correlated features
    return torch.randn(n, d, generator=g) @ mix + shift


def test_novelty_flags_a_shifted_distribution_and_few_of_the_training_one():
    novelty = TraceNovelty(in_dim=24, components=4)
    assert not novelty.fitted
    assert not novelty.novel(_gaussian(5, 24, 0)[:, None], torch.ones(5, 1, dtype=torch.bool)).any()
    info = novelty.fit(_gaussian(300, 24, 1), _gaussian(100, 24, 2), quantile=0.95)
    assert novelty.fitted and info["components"] == 4 and info["calibration_share_novel"] <= 0.05 + 1e-6
    fresh = novelty.score(_gaussian(400, 24, 3))
    assert (fresh > novelty.threshold).float().mean() < 0.15
    shifted = novelty.score(_gaussian(100, 24, 4, shift=1.5))
    assert bool((shifted > novelty.threshold).all())


def test_novelty_of_a_trace_ignores_its_padding():
    novelty = TraceNovelty(in_dim=8, components=2)
    novelty.fit(_gaussian(50, 8, 0), _gaussian(20, 8, 1), quantile=1.0)
    units = _gaussian(6, 8, 2)[None]
    mask = torch.tensor([[True] * 4 + [False] * 2])
    padded = units.clone()
    padded[0, 4:] = 1e3
    assert torch.equal(TraceNovelty.trace_vectors(units, mask), TraceNovelty.trace_vectors(padded, mask))


def test_novelty_settings_are_checked():
    base = {"hidden_layer": -1}
    with pytest.raises(ValueError, match="unknown novelty_fallback"):
        ScorerConfig(**base, novelty_fallback="maybe")
    with pytest.raises(ValueError, match="needs min_score"):
        ScorerConfig(**base, novelty_fallback="nothing")
    with pytest.raises(ValueError, match="needs unit_vectors"):
        ScorerConfig(**base, novelty_fallback="scalars", unit_vectors=False)
    with pytest.raises(ValueError, match="novelty_quantile"):
        ScorerConfig(**base, novelty_fallback="scalars", novelty_quantile=0.0)
    with pytest.raises(ValueError, match="novelty_components"):
        ScorerConfig(**base, novelty_fallback="scalars", novelty_components=0)


def _novel(records: list[dict]) -> list[dict]:
    """The same traces with hidden states from elsewhere: a constant lean no training trace has."""
    lean = torch.randn(32, generator=torch.Generator().manual_seed(99))
    lean = 4.0 * lean / lean.norm()
    out = []
    for r in records:
        states = torch.tensor(r["hidden_states"]) + lean
        out.append({**r, "id": r["id"] + "-novel", "hidden_states": states.tolist()})
    return out


def _train(tmp_path, small_tok, tiny_lm_dir, fallback: str | None, name: str) -> SelectorModule:
    L.seed_everything(0, verbose=False)
    records = synthetic_records(small_tok, 48, hidden=32, model=str(tiny_lm_dir), seed=0)
    for r in records:
        r["labels"] = [4 * (y - 0.5) for y in r["labels"]]
    folder = tmp_path / "labels"
    if not folder.exists():
        ShardWriter(folder).write(records)
    dm = TraceDataModule(str(folder), small_model=str(tiny_lm_dir), batch_size=8, val_fraction=0.3)
    config = ScorerConfig(hidden_layer=-1, d_model=32, min_score=0.0, novelty_fallback=fallback)
    module = SelectorModule(config, loss="pointwise", lr=3e-3)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, max_epochs=3, gradient_clip_val=0.05,
        default_root_dir=str(tmp_path / name),
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    return module


def test_a_scalars_fallback_leaves_the_main_head_as_it_was_and_scores_novel_traces(
    tmp_path, small_tok, tiny_lm_dir
):
    plain = _train(tmp_path, small_tok, tiny_lm_dir, None, "plain")
    module = _train(tmp_path, small_tok, tiny_lm_dir, "scalars", "fallback")
    # same initial weights, dropout draws and clipped steps (each head clipped on its own norm)
    for key, value in plain.net.state_dict().items():
        assert torch.equal(value, module.net.state_dict()[key]), key
    info = module.fit_novelty()
    assert info["traces_calibrated"] == len(module.trainer.datamodule.val_items)
    out = module.selector.save_pretrained(tmp_path / "release")
    loaded = TokenSelector.from_pretrained(out)
    saved = load_file(out / "model.safetensors")
    assert any(k.startswith("fallback.") for k in saved) and "novelty.threshold" in saved
    for key, value in module.net.state_dict().items():
        assert torch.equal(value, loaded.net.state_dict()[key]), key
    assert "novelty fallback" in (out / "README.md").read_text()

    records = synthetic_records(small_tok, 12, hidden=32, model=str(tiny_lm_dir), seed=5)
    familiar = [view_from_trace(r, tokenizer=small_tok) for r in records]
    novel = [view_from_trace(r, tokenizer=small_tok) for r in _novel(records)]
    flags: list[bool] = []
    loaded.score_views(familiar, fallback=flags)
    assert sum(flags) <= 2  # about 1 - quantile of familiar traces fall back, by design
    scores = loaded.score_views(novel, fallback=flags)
    assert all(flags)
    with torch.inference_mode():
        for view, got in zip(novel, scores):
            batch = loaded.collate([loaded.featurize(view)])
            assert got == pytest.approx(loaded.net.fallback(batch)[0].tolist(), abs=1e-6)


def test_a_nothing_fallback_sends_nothing_from_a_novel_trace(tmp_path, small_tok, tiny_lm_dir):
    module = _train(tmp_path, small_tok, tiny_lm_dir, "nothing", "nothing")
    module.fit_novelty()
    assert module.net.fallback is None
    selector = TokenSelector.from_pretrained(module.selector.save_pretrained(tmp_path / "release"))
    records = synthetic_records(small_tok, 8, hidden=32, model=str(tiny_lm_dir), seed=6)
    for record in _novel(records):
        view = view_from_trace(record, tokenizer=small_tok)
        transfer = select_transfer(selector, view, [1] * len(view.units), Budget.ratio(1.0))
        assert transfer.fallback and not any(transfer.mask) and transfer.text == ""
    sent = 0
    for record in records:
        view = view_from_trace(record, tokenizer=small_tok)
        transfer = select_transfer(selector, view, [1] * len(view.units), Budget.ratio(1.0))
        sent += any(transfer.mask) and not transfer.fallback
    assert sent >= len(records) - 2  # familiar traces keep their predicted-helpful units


def test_the_cli_releases_a_fallback_with_its_own_best_epoch(tmp_path, small_tok, tiny_lm_dir):
    records = synthetic_records(small_tok, 24, hidden=32, model=str(tiny_lm_dir))
    folder = tmp_path / "labels"
    ShardWriter(folder).write(records)
    root = tmp_path / "run"
    args = [
        "train", "--config", str(CONFIGS / "train.yaml"),
        "--data.data", str(folder), "--data.small_model", str(tiny_lm_dir), "--data.batch_size", "8",
        "--model.scorer.d_model", "32", "--model.scorer.novelty_fallback", "scalars",
        "--trainer.default_root_dir", str(root), "--trainer.accelerator", "cpu", "--trainer.max_epochs", "3",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
    assert tokenrelay(args) == 0
    card = json.loads((root / "selector" / "config.json").read_text())["card"]
    assert card["novelty_fallback"]["traces_fitted"] + card["novelty_fallback"]["traces_calibrated"] == 24
    assert card["released_fallback_weights"].startswith("best epoch ")
    assert "fallback/loss" in card["metrics"]
    readme = (root / "selector" / "README.md").read_text()
    assert "| novelty fallback |" in readme and "| fallback head's weights |" in readme
    selector = TokenSelector.from_pretrained(root / "selector")
    assert selector.net.novelty.fitted
    # a resumed fit keeps the fallback head's best epoch so far (callback state in last.ckpt)
    resumed = [*args, "--trainer.max_epochs", "4", "--ckpt_path", str(root / "checkpoints" / "last.ckpt")]
    assert tokenrelay(resumed) == 0
    card = json.loads((root / "selector" / "config.json").read_text())["card"]
    assert card["released_fallback_weights"].startswith("best epoch ")

    bad = [*args, "--model.scorer.novelty_fallback", "nothing"]  # no floor: refused before any training
    bad[bad.index("--trainer.default_root_dir") + 1] = str(tmp_path / "run2")
    assert tokenrelay(bad) == 2


def test_scalar_only_checkpoints_with_unused_vector_layers_still_load(tmp_path, tiny_lm_dir):
    """Before the fallback, a scalar-only net kept its unit-vector layers (unused): such releases load."""
    config = ScorerConfig(hidden_layer=-1, hidden_size=32, d_model=16, unit_vectors=False)
    out = TokenSelector(config).save_pretrained(tmp_path / "scalars")
    tensors = load_file(out / "model.safetensors")
    old = {**tensors, "unit_proj.weight": torch.zeros(16, 32), "unit_norm.weight": torch.ones(32)}
    save_file(old, str(out / "model.safetensors"), metadata={"format": "tokenrelay-selector/1"})
    loaded = TokenSelector.from_pretrained(out)
    assert all(torch.equal(v, loaded.net.state_dict()[k]) for k, v in tensors.items())
    save_file({**tensors, "mystery.weight": torch.zeros(2)}, str(out / "model.safetensors"))
    with pytest.raises(CheckpointError, match="mystery.weight"):
        TokenSelector.from_pretrained(out)


def test_novelty_holdout_script_flags_the_left_out_task_that_differs(
    tmp_path, small_tok, tiny_lm_dir, capsys
):
    from scripts.novelty_holdout import main as holdout

    folders = []
    for task, seed in (("plain", 0), ("alike", 1), ("other", 2)):
        records = synthetic_records(small_tok, 30, hidden=32, model=str(tiny_lm_dir), seed=seed)
        if task == "other":
            records = _novel(records)
        for k, r in enumerate(records):
            r["id"] = f"{task}-0-{k}"
        folders.append(str(tmp_path / task))
        ShardWriter(tmp_path / task).write(records)
    out = tmp_path / "holdout"
    args = ["--data", *folders, "--small-model", str(tiny_lm_dir), "--quantile", "0.95", "--out", str(out)]
    assert holdout(args) == 0
    rows = {r["left_out"]: r for r in json.loads((out / "holdout.json").read_text())["rows"]}
    assert rows["other"]["left_out_flagged"] == 1.0  # a new kind of trace
    assert rows["alike"]["left_out_flagged"] < 0.3  # drawn like the tasks it was fitted on
    assert all(r["validation_flagged"] <= 0.1 for r in rows.values())
    assert (
        "| other | 30 | 100% |" in (out / "holdout.md").read_text()
        and "left-out task" in capsys.readouterr().out
    )


def test_a_selfinfo_fallback_keeps_what_the_selfinfo_selector_keeps(small_tok, tiny_lm_dir):
    """Every trace novel (threshold below any novelty): the transfer is the selfinfo selector's under the
    same budget, the score floor not applied (self-information is not a predicted gain)."""
    from selector.baselines import SelfInfoScorer

    config = ScorerConfig(
        hidden_layer=-1, hidden_size=32, d_model=16, min_score=1e6, novelty_fallback="selfinfo"
    )  # a floor above every score: without the fallback nothing would be sent
    selector = TokenSelector(config).eval()
    records = synthetic_records(small_tok, 4, hidden=32, model=str(tiny_lm_dir), seed=3)
    views = [view_from_trace(r, tokenizer=small_tok) for r in records]
    budget = Budget.ratio(0.5)
    for view in views:  # not fitted yet: the main head's scores, all below the floor
        assert not any(select_transfer(selector, view, [1] * len(view.units), budget).mask)
    selector.net.novelty.threshold.fill_(-1.0)
    for view in views:
        counts = [1] * len(view.units)
        transfer = select_transfer(selector, view, counts, budget)
        assert transfer.fallback and selector.min_score is None
        assert transfer.mask == select_transfer(SelfInfoScorer(), view, counts, budget).mask
        assert any(transfer.mask)


def test_a_disagreement_fallback_sends_only_the_forced_units_when_both_models_agree(
    tiny_lm_dir, tiny_plain_lm_dir
):
    """The relay's check on a planted pair of answers: a novel trace whose stated answer is the large
    model's direct answer sends only the units the relay forces (here the last one), a disagreeing or
    unanswered one keeps the fallback's selection; a familiar trace is never touched."""
    from dataclasses import replace

    from selector.agents import Agent
    from selector.data import Example
    from selector.relay import Relay, RelayConfig, RelayResult
    from selector.selection import Transfer, forced_keeps

    small, large = Agent.from_pretrained(str(tiny_lm_dir)), Agent.from_pretrained(str(tiny_plain_lm_dir))
    config = ScorerConfig(
        hidden_layer=-1, hidden_size=32, small_model=str(tiny_lm_dir), d_model=16, granularity="word",
        small_vocab_size=len(small.tokenizer), min_score=1e6, novelty_fallback="disagreement",
    )  # fmt: skip
    relay = Relay(
        small, large, TokenSelector(config), RelayConfig(gate="always", force_last=True, granularity="word")
    )
    assert relay.fallback_needs_direct
    assert not Relay(small, large, "selfinfo", RelayConfig(gate="always")).fallback_needs_direct
    ex = Example(id="q", question="What is 2 + 3?", answer="5")
    gen = small.generate(["What is 2 + 3? Think step by step."], max_new_tokens=12)[0]
    result = RelayResult(id="q", answer=None, path="direct", output="", small_answer="5", direct_answer=" 5")
    novel = Transfer(text="kept", mask=[True], kept_tokens=1, total_tokens=1, fallback=True)
    assert relay._fallback_agrees(novel, result)
    assert not relay._fallback_agrees(replace(novel, fallback=False), result)
    assert not relay._fallback_agrees(novel, replace(result, direct_answer="6"))
    assert not relay._fallback_agrees(novel, replace(result, small_answer=None))
    sent = relay._forced_only(ex, gen)
    view = relay.view(ex, gen)
    assert sent.fallback and sent.mask == forced_keeps(view.units, last=True) and sum(sent.mask) == 1
    assert sent.text.strip() == view.units[-1].text.strip()


def test_set_fallback_changes_the_mode_and_nothing_else(tmp_path, small_tok, tiny_lm_dir):
    """A fitted selector copied with another fallback mode: every tensor equal, the mode and the card
    changed, the source untouched; an unfitted selector, an existing folder and a bad mode refused."""
    from scripts.set_fallback import main as set_fallback

    config = ScorerConfig(
        hidden_layer=-1, hidden_size=32, d_model=16, min_score=0.0, novelty_fallback="nothing"
    )
    selector = TokenSelector(config)
    source = selector.save_pretrained(tmp_path / "unfitted")
    assert set_fallback([str(source), "--mode", "selfinfo", "--out", str(tmp_path / "x")]) == 2  # not fitted
    selector.net.novelty.threshold.fill_(3.0)
    source = selector.save_pretrained(tmp_path / "fitted")
    out = tmp_path / "asks"
    assert set_fallback([str(source), "--mode", "disagreement", "--out", str(out), "--note", "why"]) == 0
    copy, original = TokenSelector.from_pretrained(out), TokenSelector.from_pretrained(source)
    assert copy.config.novelty_fallback == "disagreement" and original.config.novelty_fallback == "nothing"
    a, b = copy.net.state_dict(), original.net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert copy.card["notes"] == "why" and "derived from" in (out / "README.md").read_text()
    assert set_fallback([str(source), "--mode", "disagreement", "--out", str(out)]) == 2  # exists
    with pytest.raises(SystemExit):
        set_fallback([str(source), "--mode", "scalars", "--out", str(tmp_path / "y")])
