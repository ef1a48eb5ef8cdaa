"""Selection: budgets give exact token counts, order is kept, forced keeps win, bad budgets fail."""

from __future__ import annotations

import pytest

from selector.selection import Budget, Transfer, build_transfer, forced_keeps, select_units
from selector.units import split_units

SCORES = [0.1, 0.9, 0.5, 0.7, 0.3]
COUNTS = [4, 3, 5, 2, 6]  # 20 tokens


def _kept(mask):
    return [i for i, k in enumerate(mask) if k]


def test_ratio_budget_fills_the_cap_exactly():
    # cap 0.25 x 20 = 5: unit 1 (3 tok) then unit 3 (2 tok) -> 5 tokens exactly.
    mask = select_units(SCORES, COUNTS, Budget.ratio(0.25))
    assert _kept(mask) == [1, 3]
    assert sum(c for c, k in zip(COUNTS, mask) if k) == 5


def test_ratio_budget_skips_a_unit_that_does_not_fit_and_tries_the_next():
    # cap 0.5 x 20 = 10: 1 (3), 3 (2) -> 5; 2 (5) -> 10; nothing else fits.
    assert _kept(select_units(SCORES, COUNTS, Budget.ratio(0.5))) == [1, 2, 3]
    # cap 0.3 x 20 = 6: 1 (3), 3 (2) -> 5; 2 (5) does not fit; 4 (6) neither; 0 (4) neither.
    assert _kept(select_units(SCORES, COUNTS, Budget.ratio(0.3))) == [1, 3]


def test_ratio_one_keeps_everything_and_tiny_ratio_keeps_nothing():
    assert all(select_units(SCORES, COUNTS, Budget.ratio(1.0)))
    assert not any(select_units(SCORES, COUNTS, Budget.ratio(0.05)))  # cap 1 token < every unit


def test_token_budget_is_a_strict_cap():
    for cap in range(1, 21):
        mask = select_units(SCORES, COUNTS, Budget.tokens(cap))
        assert sum(c for c, k in zip(COUNTS, mask) if k) <= cap
    assert _kept(select_units(SCORES, COUNTS, Budget.tokens(8))) == [1, 3]  # 3+2, then 5 would exceed
    assert _kept(select_units(SCORES, COUNTS, Budget.tokens(10))) == [1, 2, 3]


def test_topk_and_ties_prefer_earlier_units():
    assert _kept(select_units(SCORES, COUNTS, Budget.topk(2))) == [1, 3]
    assert _kept(select_units(SCORES, COUNTS, Budget.topk(0))) == []
    assert all(select_units(SCORES, COUNTS, Budget.topk(99)))
    assert _kept(select_units([1, 1, 1, 1], [1, 1, 1, 1], Budget.topk(2))) == [0, 1]


def test_threshold_on_logits_and_on_probabilities():
    logits = [-2.0, 0.0, 3.0]  # sigmoid: 0.12, 0.5, 0.95
    assert _kept(select_units(logits, [1, 1, 1], Budget.threshold(0.5))) == [1, 2]
    assert _kept(select_units([0.2, 0.6, 0.4], [1, 1, 1], Budget.threshold(0.4), probabilities=True)) == [
        1,
        2,
    ]
    assert all(select_units([0.2, 0.6], [1, 1], Budget.threshold(0.0), probabilities=True))
    with pytest.raises(ValueError, match="outside"):
        select_units([2.0], [1], Budget.threshold(0.5), probabilities=True)


def test_a_score_floor_keeps_nothing_below_it_under_every_budget():
    scores, counts = [-1.0, 2.0, 0.5, -0.2], [1, 1, 1, 1]
    assert _kept(select_units(scores, counts, Budget.ratio(1.0), min_score=0.0)) == [1, 2]
    assert _kept(select_units(scores, counts, Budget.topk(3), min_score=0.0)) == [1, 2]
    assert _kept(select_units(scores, counts, Budget.tokens(4), min_score=0.6)) == [1]
    assert _kept(select_units(scores, counts, Budget.threshold(0.1), min_score=0.0)) == [1, 2]
    # every unit below the floor: nothing is sent; forced keeps still are
    assert _kept(select_units([-3.0, -1.0], [1, 1], Budget.ratio(1.0), min_score=0.0)) == []
    assert _kept(select_units([-3.0, -1.0], [1, 1], Budget.ratio(1.0), forced=[0], min_score=0.0)) == [0]
    # no floor: as before; a NaN floor is an error
    assert _kept(select_units(scores, counts, Budget.topk(3))) == [1, 2, 3]
    with pytest.raises(ValueError, match="min_score"):
        select_units(scores, counts, Budget.ratio(1.0), min_score=float("nan"))


def test_forced_keeps_count_against_the_budget():
    # Force unit 4 (6 tokens) under a 10-token cap: 4 remain -> unit 1 (3) fits, unit 3 (2) not.
    mask = select_units(SCORES, COUNTS, Budget.tokens(10), forced=[4])
    assert _kept(mask) == [1, 4]
    # Forced units are kept even when they alone exceed the budget.
    assert _kept(
        select_units(SCORES, COUNTS, Budget.tokens(2), forced=[False, False, False, False, True])
    ) == [4]
    assert _kept(select_units(SCORES, COUNTS, Budget.topk(1), forced=[0])) == [0]
    assert _kept(select_units(SCORES, COUNTS, Budget.topk(2), forced=[0])) == [0, 1]
    with pytest.raises(ValueError, match="not a unit index"):
        select_units(SCORES, COUNTS, Budget.topk(1), forced=[7])


def test_forced_keeps_numbers_and_last():
    units = split_units("Start here. Add 3 and 4. Then think. Done.", "sentence")
    assert forced_keeps(units, numbers=True) == [False, True, False, False]
    assert forced_keeps(units, last=True) == [False, False, False, True]
    assert forced_keeps([], last=True) == []


@pytest.mark.parametrize(
    "kind, value",
    [("ratio", 0), ("ratio", 1.5), ("ratio", -0.1), ("topk", -1), ("tokens", 0), ("tokens", 2.5),
     ("threshold", 1.1), ("threshold", -0.01), ("median", 0.5), ("ratio", float("nan"))],
)  # fmt: skip
def test_bad_budgets_are_rejected(kind, value):
    with pytest.raises(ValueError):
        Budget(kind, value)


def test_mismatched_lengths_and_nan_scores_fail():
    with pytest.raises(ValueError, match="token counts"):
        select_units([1.0, 2.0], [1], Budget.ratio(0.5))
    with pytest.raises(ValueError, match="NaN"):
        select_units([float("nan")], [1], Budget.ratio(0.5))


def test_build_transfer_keeps_order_and_whole_words():
    text = "First, 2 + 3 = 5.\nThen multiply by 2.\nSo the answer is 10."
    units = split_units(text, "sentence")
    counts = [5, 4, 5]
    mask = select_units([0.9, 0.1, 0.8], counts, Budget.tokens(10))
    transfer = build_transfer(text, units, mask, counts)
    assert isinstance(transfer, Transfer)
    assert transfer.text == "First, 2 + 3 = 5.\nSo the answer is 10."
    assert (transfer.kept_tokens, transfer.total_tokens, transfer.kept_units) == (10, 14, 2)
    assert transfer.ratio == pytest.approx(10 / 14)
    words = split_units(text, "word")
    wmask = select_units(list(range(len(words))), [1] * len(words), Budget.topk(3))
    wt = build_transfer(text, words, wmask, [1] * len(words))
    assert wt.text.split() == [u.text for u in words[-3:]]  # whole words, original order
    empty = build_transfer(text, units, [False] * 3, counts)
    assert (empty.text, empty.kept_tokens, empty.ratio) == ("", 0, 0.0)
    assert build_transfer("", [], [], []).ratio == 0.0
