"""Paired statistics against the best heuristic, on constructed records with a known answer."""

from __future__ import annotations

import pytest

from selector.evaluation.paired import paired_comparison, paired_markdown, paired_vs_references


def test_paired_comparison_counts_and_interval():
    a = [1.0, 2.0, 3.0, 4.0, None]
    b = [0.0, 1.0, 3.0, 5.0, 2.0]
    stats = paired_comparison(a, b, n_boot=500)
    assert stats["n"] == 4  # the problem missing on one side is left out
    assert (stats["wins"], stats["losses"], stats["ties"]) == (2, 1, 1)
    assert stats["mean_diff"] == pytest.approx(0.25)
    assert stats["ci_low"] <= 0.25 <= stats["ci_high"]
    assert stats == paired_comparison(a, b, n_boot=500)  # seeded: the same interval every time


def test_a_constant_shift_has_a_degenerate_interval_above_zero():
    stats = paired_comparison([x + 0.5 for x in range(20)], list(range(20)))
    assert stats["mean_diff"] == pytest.approx(0.5)
    assert stats["ci_low"] == pytest.approx(0.5) and stats["ci_high"] == pytest.approx(0.5)
    assert stats["wins"] == 20


def test_noise_around_zero_gives_an_interval_that_covers_zero():
    diffs = [(-1) ** k * (1 + k % 3) for k in range(40)]
    stats = paired_comparison(diffs, [0.0] * 40, n_boot=4000)
    assert stats["ci_low"] < 0 < stats["ci_high"]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="one value per problem"):
        paired_comparison([1.0], [1.0, 2.0])
    assert paired_comparison([None], [1.0])["mean_diff"] is None


def _cond(cid, selector, budget, gate="always"):
    return {"condition": cid, "kind": "relay", "selector": selector, "budget": budget, "gate": gate}


def test_the_best_heuristic_is_chosen_per_budget_and_metric():
    f_none = [-5.0, -5.0, -5.0, -5.0]
    f_all = [-1.0, -1.0, -9.0, -1.0]  # problem 2: the reasoning hurts (no gain figure there)
    conds = [
        _cond("first@.25", "first", 0.25),
        _cond("last@.25", "last", 0.25),
        _cond("mine@.25", "mine", 0.25),
        _cond("last@.5", "last", 0.5),
        _cond("mine@.5", "mine", 0.5),
        _cond("full", "full", None),
        _cond("none", "none", None),
        {"condition": "large_direct", "kind": "large_direct", "selector": None, "budget": None, "gate": None},
    ]
    lp = {
        "first@.25": [-4.0, -4.0, -4.0, -4.0],  # best mean log-prob at 25%
        "last@.25": [-2.0, -2.0, -9.0, -3.0],  # best gain recovered at 25%
        "mine@.25": [-1.0, -2.0, -5.0, -2.0],
        "last@.5": [-3.0, -3.0, -3.0, -3.0],
        "mine@.5": [-3.0, -3.0, -3.0, -3.0],
        "full": [-1.0, -1.0, -9.0, -1.0],
        "none": f_none,
        "large_direct": f_none,
    }
    rows = paired_vs_references(conds, lp, f_none, f_all, n_boot=200)
    by = {(r["condition"], r["reference"]): r for r in rows}
    assert set(by) == {
        ("mine@.25", "best heuristic"),
        ("mine@.25", "full transfer"),
        ("mine@.5", "best heuristic"),
        ("mine@.5", "full transfer"),
        ("mine@.25", "no transfer"),
        ("mine@.5", "no transfer"),
    }
    r = by[("mine@.25", "best heuristic")]
    assert r["reference_logprob"] == "first" and r["reference_gain"] == "last"
    assert r["gold_logprob"]["mean_diff"] == pytest.approx((3 + 2 - 1 + 2) / 4)
    # gain recovered only where the full transfer gains >= 1 nat: problems 0, 1, 3
    assert r["gain_recovered"]["n"] == 3
    assert r["gain_recovered"]["mean_diff"] == pytest.approx(((4 - 3) + (3 - 3) + (3 - 2)) / 3 / 4)
    tie = by[("mine@.5", "best heuristic")]
    assert tie["gold_logprob"]["ties"] == 4 and tie["gold_logprob"]["mean_diff"] == 0
    vs_full = by[("mine@.25", "full transfer")]
    assert vs_full["gold_logprob"]["mean_diff"] == pytest.approx((0 - 1 + 4 - 1) / 4)
    assert "gain_recovered" not in vs_full
    vs_none = by[("mine@.25", "no transfer")]
    assert vs_none["gold_logprob"]["mean_diff"] == pytest.approx((4 + 3 + 0 + 3) / 4)
    assert vs_none["gold_logprob"]["ties"] == 1
    table = paired_markdown(rows)
    assert table.count("\n") == len(rows) + 1 and "best heuristic" in table
    assert all(line.count("|") == 10 for line in table.splitlines())
