"""Labelers: the surrogate recovers planted unit weights; each labeler works end to end on tiny models."""

from __future__ import annotations

import math
from collections.abc import MutableMapping

import pytest
import torch
from PIL import Image

from selector.agents import Agent
from selector.prompts import answer_target, transfer_prompt
from selector.units import join_units, split_units
from training.labelers import (
    AblationLabeler,
    LabelInput,
    LooLabeler,
    draw_masks,
    fit_surrogate,
    get_labeler,
    gradient_attribution,
    score_passes,
)

REASONING = "First, 2 + 3 = 5.\nLet x = 3 and y = x + 4, so y is 7. So the answer is 5. Answer: 5"
RECORD = {"id": "t-1", "question": "What is 2 + 3?", "answer": "5", "reasoning": REASONING}


@pytest.fixture(scope="module")
def lm(tiny_lm_dir):
    return Agent.from_pretrained(tiny_lm_dir, device="cpu")


class PlantedF(MutableMapping):
    """A mask cache that answers every mask from a known linear f: no model is ever called."""

    def __init__(self, w0: float, w: torch.Tensor, noise: float = 0.0):
        self.w0, self.w, self.noise, self.asked = w0, w, noise, []

    def __getitem__(self, key):
        x = torch.tensor([c == "1" for c in key], dtype=torch.float64)
        self.asked.append(key)
        jitter = self.noise * math.sin(1000.0 * len(self.asked))  # deterministic "noise"
        return float(self.w0 + x @ self.w + jitter), 0.0

    def __contains__(self, key):
        return True

    def __setitem__(self, key, value):
        raise AssertionError("a planted f is never scored")

    __delitem__ = __setitem__

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


def _item(n_units: int) -> LabelInput:
    text = " ".join(f"s{i}." for i in range(n_units))
    units = split_units(text, "word")
    assert len(units) == n_units
    return LabelInput(id="planted", question="q", reasoning=text, gold="1", units=units)


@pytest.mark.parametrize("fit", ["ridge", "lasso"])
def test_ablation_surrogate_recovers_planted_weights(fit):
    n = 12
    w = torch.zeros(n, dtype=torch.float64)
    w[[1, 4, 7]] = torch.tensor([2.0, -1.5, 0.8], dtype=torch.float64)
    w[10] = 0.3
    planted = PlantedF(-4.0, w, noise=0.01)
    labeler = AblationLabeler(masks=64, fit=fit, alpha=1e-4 if fit == "ridge" else 1e-3, seed=3)
    result = labeler(None, _item(n), cache=planted)  # no agent needed: every f comes from the cache
    assert result.scores == pytest.approx(w.tolist(), abs=0.03)
    assert result.f_all == pytest.approx(-4.0 + float(w.sum()), abs=0.02)
    assert result.f_none == pytest.approx(-4.0, abs=0.02)
    assert result.fit_r2 is not None and result.fit_r2 > 0.99
    assert {"1" * n, "0" * n} <= set(planted.asked) and len(set(planted.asked)) > 50
    top = sorted(range(n), key=lambda i: -result.scores[i])[:2]
    assert top == [1, 7]


def test_fit_surrogate_lasso_is_sparse_and_ridge_exact_without_penalty():
    gen = torch.Generator().manual_seed(0)
    X = (torch.rand(40, 8, generator=gen) < 0.5).double()
    w = torch.tensor([0, 0, 1.0, 0, 0, -2.0, 0, 0], dtype=torch.float64)
    y = 0.5 + X @ w
    w0, got = fit_surrogate(X, y, method="ridge", alpha=0.0)
    assert w0 == pytest.approx(0.5, abs=1e-8) and torch.allclose(got, w, atol=1e-8)
    _, sparse = fit_surrogate(
        X, y + 0.01 * torch.randn(40, generator=gen, dtype=torch.float64), method="lasso", alpha=0.02
    )
    assert set(torch.nonzero(sparse.abs() > 1e-9).flatten().tolist()) == {2, 5}
    with pytest.raises(ValueError, match="unknown surrogate"):
        fit_surrogate(X, y, method="svm")


def test_loo_on_a_planted_f_gives_the_weights():
    w = torch.tensor([0.5, -1.0, 0.0, 2.0], dtype=torch.float64)
    result = LooLabeler()(None, _item(4), cache=PlantedF(-3.0, w))
    assert result.scores == pytest.approx(w.tolist())
    assert result.fit_r2 is None


def test_masks_are_seeded_per_trace_and_nested_across_m():
    big = draw_masks(9, 32, 0.5, seed=0, trace_id="a")
    assert torch.equal(draw_masks(9, 8, 0.5, seed=0, trace_id="a"), big[:8])
    assert torch.equal(draw_masks(9, 32, 0.5, seed=0, trace_id="a"), big)
    assert not torch.equal(draw_masks(9, 32, 0.5, seed=0, trace_id="b"), big)
    assert not torch.equal(draw_masks(9, 32, 0.5, seed=1, trace_id="a"), big)
    assert abs(float(draw_masks(50, 40, 0.3, 0, "a").double().mean()) - 0.3) < 0.05


@pytest.mark.parametrize("units", ["sentence", "word", "token"])
def test_each_labeler_end_to_end_on_a_tiny_model(lm, units):
    item = LabelInput.from_trace(RECORD, units, lm.tokenizer)
    n = len(item.units)
    # f(all) and f(none) are the relay's own transfer prompt scored by the agent.
    prompts = [transfer_prompt(lm, RECORD["question"], r).as_pair() for r in (REASONING, None)]
    f_all, f_none = (r.logprob for r in lm.score(prompts, answer_target("5")))
    results = {}
    for name in ("ablation", "loo", "gradient"):
        res = get_labeler(name, masks=10, batch_size=4)(lm, item)
        results[name] = res
        assert res.method == name and len(res.scores) == n
        assert all(math.isfinite(s) for s in res.scores)
        assert res.f_all == pytest.approx(f_all, abs=1e-4) and res.f_none == pytest.approx(f_none, abs=1e-4)
        assert res.seconds > 0
    abl = results["ablation"]
    # prefix once + batches of 4, each with at most one more pass for the start its masks share
    # (duplicate masks, likely with few units, are scored once)
    assert abl.forward_passes <= abl.nominal_passes <= score_passes(12, 4)
    assert abl.fit_r2 is not None
    loo = results["loo"]
    assert score_passes(n + 2, 4) // 2 < loo.forward_passes <= score_passes(n + 2, 4)
    i = n // 2
    without = join_units(REASONING, item.units, [j != i for j in range(n)])
    f_wo = lm.score([transfer_prompt(lm, RECORD["question"], without).as_pair()], answer_target("5"))[0]
    assert loo.scores[i] == pytest.approx(f_all - f_wo.logprob, abs=1e-4)
    assert results["gradient"].forward_passes <= 1 + score_passes(2, 4)


def test_ablation_labels_are_deterministic(lm):
    item = LabelInput.from_trace(RECORD, "word")
    a = AblationLabeler(masks=8, seed=5)(lm, item)
    b = AblationLabeler(masks=8, seed=5)(lm, item)
    assert a.scores == pytest.approx(b.scores, abs=1e-6)


def test_gradient_is_the_first_order_change_of_f(tiny_lm_dir):
    """Scaling all reasoning embeddings by (1 + eps) changes log p(gold) by eps * sum of the unit scores."""
    agent = Agent.from_pretrained(tiny_lm_dir, device="cpu")
    agent.model.double()
    item = LabelInput.from_trace(RECORD, "sentence")
    scores, logprob = gradient_attribution(agent, item)
    parts = transfer_prompt(agent, item.question, REASONING)
    assert logprob == pytest.approx(agent.score([parts.as_pair()], item.target)[0].logprob, abs=1e-6)
    prefix = agent.encode_prompt(parts.prefix, [])["input_ids"]
    enc = agent.tokenizer(parts.rest, add_special_tokens=False, return_offsets_mapping=True)
    target = agent.encode_text(item.target)
    start = parts.rest.index(REASONING)
    # Tokens overlapping a unit (whitespace between units belongs to none).
    inside = [
        any(s < start + u.end and e > start + u.start for u in item.units) for s, e in enc["offset_mapping"]
    ]
    ids = torch.cat([prefix, torch.tensor(enc["input_ids"]), target])[None]
    eps, where = 1e-3, torch.zeros(ids.shape[1], 1, dtype=torch.float64)
    where[len(prefix) : len(prefix) + len(inside)][torch.tensor(inside)] = 1.0

    def f(s):
        with torch.no_grad():
            logits = agent.model(inputs_embeds=agent.model.get_input_embeddings()(ids) * s).logits[0]
        ctx = ids.shape[1] - len(target)
        return float(logits[ctx - 1 : -1].log_softmax(-1).gather(-1, target[:, None]).sum())

    derivative = (f(1 + eps * where) - f(1 - eps * where)) / (2 * eps)  # central difference
    assert sum(scores) == pytest.approx(derivative, rel=1e-2, abs=1e-7)
    assert any(abs(s) > 1e-7 for s in scores)


def test_labelers_work_with_images(tiny_vlm_dir, tmp_path):
    vlm = Agent.from_pretrained(tiny_vlm_dir, device="cpu")
    Image.new("RGB", (20, 20), "red").save(tmp_path / "red.png")
    record = {**RECORD, "images": [str(tmp_path / "red.png")]}
    item = LabelInput.from_trace(record, "sentence")
    for name in ("ablation", "loo", "gradient"):
        res = get_labeler(name, masks=6)(vlm, item)
        assert len(res.scores) == len(item.units) and math.isfinite(res.f_all)


def test_bad_input_names_the_trace(tiny_lm_dir):
    with pytest.raises(ValueError, match="t-1.*gold answer is empty"):
        LabelInput.from_trace({**RECORD, "answer": "  "}, "sentence")
    agent = Agent.from_pretrained(tiny_lm_dir, device="cpu")
    with torch.no_grad():
        agent.model.lm_head.weight[5] = float("nan")
    item = LabelInput.from_trace(RECORD, "sentence")
    with pytest.raises(ValueError, match=r"'t-1'.*nan.*mask #1 \(no units"):
        AblationLabeler(masks=4)(agent, item)
    with pytest.raises(ValueError, match="unknown labeler"):
        get_labeler("shapley")
    with pytest.raises(ValueError, match="keep_prob"):
        AblationLabeler(keep_prob=1.0)


def test_throughput_benchmark_compares_the_scoring_strategies_on_the_same_masks(lm, tmp_path):
    from argparse import Namespace

    from scripts.bench_labels import THROUGHPUT_STRATEGIES, throughput

    args = Namespace(throughput_masks=6, keep_prob=0.5, seed=0, batch_size=4)
    result = throughput(lm, RECORD, args, tmp_path)
    assert (tmp_path / "throughput.json").exists()
    assert set(result["sets"]) == {"ablation_word", "loo_sentence"}
    loo = result["sets"]["loo_sentence"]
    assert loo["masks"] == loo["n_units"] + 2
    for row in result["sets"].values():
        for name, _, _ in THROUGHPUT_STRATEGIES:
            assert row[f"{name}_seconds"] > 0 and row[f"{name}_forward_passes"] >= 1
        for name, _, _ in THROUGHPUT_STRATEGIES[1:]:
            assert row[f"{name}_max_abs_diff"] < 1e-4 and row[f"{name}_speedup"] > 0


def test_r2_score_matches_the_textbook_formula():
    """torchmetrics' R^2 gives the numbers of 1 - SS_res / SS_tot on fixed data; constant y has none."""
    from training.label_math import r2_score

    y = torch.tensor([0.5, -1.0, 2.0, 0.25, 3.0], dtype=torch.float64)
    pred = torch.tensor([0.4, -0.7, 1.5, 0.5, 2.0], dtype=torch.float64)
    textbook = 1.0 - float(((y - pred) ** 2).sum()) / float(((y - y.mean()) ** 2).sum())
    assert r2_score(y, pred) == pytest.approx(textbook, abs=1e-12)
    assert r2_score(torch.ones(4), pred[:4]) is None and r2_score(y[:1], pred[:1]) is None
