"""Property-based tests (hypothesis): random columns, types, empty and unicode values at the data
loader, random scores and budgets at selection. Each input gives a clear error or a correct result."""

from __future__ import annotations

import csv
import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from selector.data import ColumnMap, DataError, load_examples
from selector.selection import BUDGET_KINDS, Budget, select_units

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.text(min_size=1, max_size=6)  # any unicode, spaces and symbols included
cells = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),  # empty strings and unicode
    st.lists(st.one_of(st.integers(), st.text(max_size=4)), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def tables(draw):
    """Rows over a few random column names; the ColumnMap names some of them, or names absent ones."""
    columns = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    value = st.one_of(st.text(min_size=1, max_size=8), st.integers(), cells)  # valid ones often enough
    rows = draw(st.lists(st.fixed_dictionaries({c: value for c in columns}), min_size=0, max_size=5))
    pick = st.one_of(st.sampled_from(columns), st.sampled_from(columns), names)
    cols = ColumnMap(question=draw(pick), answer=draw(pick), id=draw(st.one_of(st.none(), pick)))
    return columns, rows, cols


def _check(examples, rows, require_answer: bool) -> None:
    assert len(examples) == len(rows)
    ids = [ex.id for ex in examples]
    assert len(set(ids)) == len(ids) and all(isinstance(i, str) and i for i in ids)
    for ex in examples:
        assert isinstance(ex.question, str) and ex.question.strip()
        assert isinstance(ex.answer, str) and (ex.answer.strip() or not require_answer)


@SETTINGS
@given(table=tables(), require_answer=st.booleans())
def test_jsonl_loader_gives_examples_or_a_clear_error(table, require_answer):
    _, rows, cols = table
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        try:
            examples = load_examples(path, cols, require_answer=require_answer)
        except DataError as err:
            assert str(err).strip() and "\n" not in str(err).strip()  # one line that says what is wrong
            event("clear error")
            return
    event("examples")
    _check(examples, rows, require_answer)


@SETTINGS
@given(table=tables(), require_answer=st.booleans())
def test_csv_loader_gives_examples_or_a_clear_error(table, require_answer):
    columns, rows, cols = table
    assume(all("\r" not in c and "\n" not in c for c in columns))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows({c: "" if r[c] is None else str(r[c]) for c in columns} for r in rows)
        try:
            examples = load_examples(path, cols, require_answer=require_answer)
        except DataError as err:
            assert str(err).strip()
            event("clear error")
            return
    event("examples")
    _check(examples, rows, require_answer)


scores = st.floats(allow_nan=True, allow_infinity=True, width=64)


@st.composite
def selections(draw):
    n = draw(st.integers(min_value=0, max_value=12))
    finite = st.floats(allow_nan=False, allow_infinity=True)
    unit_scores = draw(
        st.one_of(st.lists(finite, min_size=n, max_size=n), st.lists(scores, min_size=n, max_size=n))
    )
    good, bad = st.integers(min_value=0, max_value=20), st.integers(min_value=-1, max_value=20)
    counts = draw(st.one_of(st.lists(good, min_size=n, max_size=n), st.lists(bad, min_size=n, max_size=n)))
    kind = draw(st.sampled_from([*BUDGET_KINDS, "other"]))
    value = draw(
        st.one_of(
            st.floats(min_value=0, max_value=1),
            st.integers(-3, 30),
            st.floats(allow_nan=True, allow_infinity=True),
        )
    )
    forced = draw(
        st.one_of(
            st.none(),
            st.lists(st.integers(0, max(n - 1, 0)), max_size=3),
            st.lists(st.integers(-2, n + 2), max_size=3),
        )
    )
    return unit_scores, counts, kind, value, forced


@st.composite
def valid_selections(draw):
    """Inputs that must always select: no NaN, counts >= 0, a budget in range, forced indices that exist."""
    n = draw(st.integers(min_value=1, max_value=12))
    unit_scores = draw(st.lists(st.floats(allow_nan=False), min_size=n, max_size=n))
    counts = draw(st.lists(st.integers(min_value=0, max_value=20), min_size=n, max_size=n))
    kind = draw(st.sampled_from(BUDGET_KINDS))
    value = draw(
        {
            "ratio": st.floats(min_value=1e-6, max_value=1),
            "tokens": st.integers(1, 200),
            "topk": st.integers(0, 15),
            "threshold": st.floats(min_value=0, max_value=1),
        }[kind]
    )
    forced = draw(st.one_of(st.none(), st.lists(st.integers(0, n - 1), max_size=3)))
    return unit_scores, counts, kind, value, forced


@SETTINGS
@given(selection=selections())
def test_selection_keeps_a_correct_set_or_says_why_not(selection):
    unit_scores, counts, kind, value, forced = selection
    assume(not (kind in ("tokens", "topk") and isinstance(value, float) and math.isinf(value)))  # see below
    try:
        keep = select_units(unit_scores, counts, Budget(kind, value), forced)
    except ValueError as err:
        assert str(err).strip()
        event("clear error")
        return
    event(f"selected ({kind})")
    _check_selection(keep, unit_scores, counts, kind, value, forced)


@SETTINGS
@given(selection=valid_selections())
def test_selection_of_valid_inputs_is_correct(selection):
    unit_scores, counts, kind, value, forced = selection
    _check_selection(select_units(unit_scores, counts, Budget(kind, value), forced), *selection)


def _check_selection(keep, unit_scores, counts, kind, value, forced) -> None:
    n = len(unit_scores)
    assert len(keep) == n and all(isinstance(k, bool) for k in keep)
    pinned = {i for i in (forced or [])}
    assert all(keep[i] for i in pinned)
    free = [i for i in range(n) if i not in pinned]
    if kind == "threshold":
        for i in free:
            x = unit_scores[i]  # the logistic function, computed as selection does (no overflow either way)
            p = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
            assert keep[i] == (p >= value)
    elif kind == "topk":
        kept = [i for i in free if keep[i]]
        assert len(kept) == min(len(free), max(0, int(value) - len(pinned)))
        dropped = [i for i in free if not keep[i]]
        if kept and dropped:  # the best scores are the ones kept
            assert min(unit_scores[i] for i in kept) >= max(unit_scores[i] for i in dropped)
    else:
        cap = value * sum(counts) if kind == "ratio" else float(value)
        cap += 1e-9 * max(1.0, cap)
        used = sum(c for c, k in zip(counts, keep) if k)
        if not pinned:
            assert used <= cap
        for i in free:  # greedy and maximal: nothing left out would still fit
            assert keep[i] or used + counts[i] > cap


@pytest.mark.parametrize("kind", ["tokens", "topk"])
def test_an_infinite_whole_number_budget_is_a_clear_error(kind):
    with pytest.raises(ValueError, match="whole number"):
        Budget(kind, math.inf)
