"""The shipped real-pair selector (Qwen2.5-Coder 0.5B -> 1.5B): it loads strictly, scores a trace of
its small model's width, documents itself, and refuses a small model it was not trained on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from selector.agents import Agent
from selector.reasoning import ReasoningView
from selector.scorer import IncompatibleSelectorError, TokenSelector
from selector.units import split_units

REAL = Path(__file__).resolve().parents[1] / "checkpoints" / "qwen2.5-coder-0.5b-to-1.5b-simple-eq"


def _view(hidden_size: int) -> ReasoningView:
    reasoning = "Subtract 30 from both sides: 15s = 255. Divide both sides by 15. So s = 17."
    units = split_units(reasoning, "sentence")
    spans = [(s, min(s + 4, len(reasoning))) for s in range(0, len(reasoning), 4)]
    return ReasoningView(
        question="Find s: 15*s + 30 = 285",
        reasoning=reasoning,
        units=units,
        token_ids=list(range(len(spans))),
        token_logprobs=[-0.5] * len(spans),
        token_spans=spans,
        hidden_states=torch.randn(len(spans), hidden_size),
    )


def test_real_selector_loads_and_scores_a_trace_of_its_small_model():
    selector = TokenSelector.from_pretrained(REAL)
    cfg = selector.config
    assert cfg.backbone == "hidden" and cfg.granularity == "sentence" and cfg.hidden_layer == -1
    assert cfg.hidden_size == 896 and cfg.small_model == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    view = _view(cfg.hidden_size)
    scores = selector(view)
    assert len(scores) == len(view.units) == 3 and all(torch.isfinite(torch.tensor(scores)))


def test_real_selector_card_names_the_pair_the_data_and_the_command():
    card = (REAL / "README.md").read_text()
    for needle in (
        "Qwen2.5-Coder-0.5B-Instruct",
        "Qwen2.5-Coder-1.5B-Instruct",
        "ablation",
        "tokenrelay train",
    ):
        assert needle in card, needle
    assert "## Evaluation" in card


def test_real_selector_refuses_another_small_model(tiny_lm_dir):
    selector = TokenSelector.from_pretrained(REAL)
    with pytest.raises(IncompatibleSelectorError, match="896-wide hidden states"):
        selector.check_compatible(Agent.from_pretrained(tiny_lm_dir, device="cpu"))
