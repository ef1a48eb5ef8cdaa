"""Baseline selectors: each ranks units as it claims, the registry loads them and rejects bad names."""

from __future__ import annotations

import pytest

from selector.baselines import (
    BASELINES,
    SelfInfoScorer,
    check_selector_name,
    load_selector,
    select_transfer,
)
from selector.reasoning import ReasoningView, UnitScorer, spans_from_token_ids
from selector.selection import Budget
from selector.units import split_units
from tests.tiny_models import build_tokenizer

REASONING = "First, 2 + 3 = 5.\nThen y = 5 * 2 = 10.\nSo the answer is 10."


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _view(tokenizer, logprob_of=None, labels=None, granularity="sentence"):
    ids = tokenizer(REASONING, add_special_tokens=False)["input_ids"]
    text, spans = spans_from_token_ids(tokenizer, ids)
    assert text == REASONING
    lps = [logprob_of(i) if logprob_of else -1.0 for i in range(len(ids))]
    units = split_units(REASONING, granularity)
    return ReasoningView("What is y?", REASONING, units, ids, lps, spans, labels=labels)


def test_every_baseline_is_a_unit_scorer(tokenizer):
    view = _view(tokenizer, labels=[0.1, 0.5, 0.2])
    for name in BASELINES:
        scorer = load_selector(name)
        assert isinstance(scorer, UnitScorer) and scorer.name == name
        assert len(scorer(view)) == len(view.units) == 3


def test_first_last_oracle_order(tokenizer):
    view = _view(tokenizer, labels=[0.1, 0.5, 0.2])
    counts = [1, 1, 1]
    top1 = {n: select_transfer(load_selector(n), view, counts, Budget.topk(1)).mask for n in BASELINES}
    assert top1["first"] == [True, False, False]
    assert top1["last"] == [False, False, True]
    assert top1["oracle"] == [False, True, False]


def test_none_and_full_ignore_the_budget_and_forced_keeps(tokenizer):
    view = _view(tokenizer)
    counts = [7, 9, 8]
    none = select_transfer(load_selector("none"), view, counts, Budget.ratio(0.5), forced=[2])
    full = select_transfer(load_selector("full"), view, counts, Budget.tokens(1))
    assert (none.text, none.kept_tokens, none.total_tokens) == ("", 0, 24)
    assert full.text == REASONING and full.kept_tokens == 24


def test_random_is_seeded_and_call_order_free(tokenizer):
    view = _view(tokenizer)
    other = ReasoningView("Q2", "a. b. c. d.", split_units("a. b. c. d.", "sentence"))
    a, b = load_selector("random", seed=3), load_selector("random", seed=3)
    first = a(view)
    a(other)
    assert a(view) == first == b(view)
    assert load_selector("random", seed=4)(view) != first


def test_selfinfo_sums_or_averages_token_surprisal(tokenizer):
    view = _view(tokenizer, logprob_of=lambda i: -0.1 * (i + 1))
    units = view.units
    expected_sum = [0.0] * len(units)
    expected_n = [0] * len(units)
    for (s, e), lp in zip(view.token_spans, view.token_logprobs):
        for j, u in enumerate(units):
            if s < u.end and e > u.start and not REASONING[s:e].isspace():
                expected_sum[j] += -lp
                expected_n[j] += 1
                break
    assert SelfInfoScorer()(view) == pytest.approx(expected_sum)
    assert SelfInfoScorer("mean")(view) == pytest.approx([t / n for t, n in zip(expected_sum, expected_n)])
    # Later tokens are more surprising here, so the last sentence ranks first by mean surprisal.
    assert select_transfer(SelfInfoScorer("mean"), view, [1, 1, 1], Budget.topk(1)).mask == [
        False,
        False,
        True,
    ]


def test_selfinfo_and_oracle_fail_clearly_without_their_signals():
    view = ReasoningView("q", "a. b.", split_units("a. b.", "sentence"))
    with pytest.raises(ValueError, match="log-probs"):
        load_selector("selfinfo")(view)
    with pytest.raises(ValueError, match="labels"):
        load_selector("oracle")(view)
    with pytest.raises(ValueError, match="reduce"):
        load_selector("selfinfo", reduce="max")


def test_unknown_selector_names_and_paths(tmp_path):
    with pytest.raises(ValueError, match="unknown selector 'bogus'"):
        check_selector_name("bogus")
    with pytest.raises(ValueError, match="unknown selector"):
        load_selector(str(tmp_path / "missing"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_selector_name(str(tmp_path / "file.txt"))
    check_selector_name(str(tmp_path))  # an existing folder passes the cheap check
