"""The synthetic chain-arithmetic world: gold answers checked by an independent reader of the text."""

from __future__ import annotations

import random
import re

import pytest

from selector.data import load_examples
from selector.demo.synthetic import (
    DEMO_WORLD,
    TARGET_MARK,
    SyntheticConfig,
    generate_problems,
    recap_sentence,
    relevant_lines,
    strip_answer_line,
    verbose_reasoning,
    write_synthetic_jsonl,
)

_LINE = re.compile(r"^([a-z]) = (?:(\d+)|([a-z]) ([+*-]) (\d+))$")
_ASK = re.compile(r"^What is ([a-z])\?$")


def read_statements(text: str) -> tuple[list[tuple[str, str | None, int]], str]:
    """The question's statements as (name, parent, value) in order, and the asked variable."""
    *statements, ask = [s.strip() for s in re.split(r"(?<=[.?])\s+", text.strip())]
    target = _ASK.fullmatch(ask).group(1)
    values: dict[str, int] = {}
    out = []
    for statement in statements:
        name, const, parent, op, operand = _LINE.fullmatch(statement[:-1]).groups()
        if const is not None:
            values[name] = int(const)
        else:
            values[name] = {"+": values[parent] + int(operand), "-": values[parent] - int(operand),
                            "*": values[parent] * int(operand)}[op]  # fmt: skip
        out.append((name, parent, values[name]))
    return out, target


def evaluate_question(text: str) -> tuple[int, set[str]]:
    """Read a question's text alone: the asked variable's value and the variables it depends on.

    Deliberately written from the question format, not from the generator's data structures.
    """
    *statements, ask = [s.strip() for s in re.split(r"(?<=[.?])\s+", text.strip())]
    asked = _ASK.fullmatch(ask)
    assert asked, f"no question at the end of {text!r}"
    values: dict[str, int] = {}
    parents: dict[str, str | None] = {}
    for statement in statements:
        assert statement.endswith("."), statement
        m = _LINE.fullmatch(statement[:-1])
        assert m, f"unreadable statement {statement!r}"
        name, const, parent, op, operand = m.groups()
        assert name not in values, f"{name} assigned twice"
        if const is not None:
            values[name], parents[name] = int(const), None
        else:
            assert parent in values, f"{parent} used before it is assigned"
            a, k = values[parent], int(operand)
            values[name] = {"+": a + k, "-": a - k, "*": a * k}[op]
            parents[name] = parent
    target = asked.group(1)
    needed, node = set(), target
    while node is not None:
        needed.add(node)
        node = parents[node]
    return values[target], needed


@pytest.mark.parametrize(
    "config",
    [
        SyntheticConfig(),
        SyntheticConfig(chain_ops=5, n_distractors=6, max_value=99, multiply=True),
        SyntheticConfig(chain_ops=1, n_distractors=0, max_value=9, max_operand=3),
    ],
    ids=["default", "long", "short"],
)
def test_gold_answers_match_an_independent_evaluator(config):
    problems = generate_problems(300, seed=3, config=config)
    for p in problems:
        value, needed = evaluate_question(p.question)
        assert p.answer == str(value)
        assert 0 <= value <= config.max_value
        assert needed == set(p.chain)  # the chain is exactly what the answer depends on
        assert len(p.chain) == 1 + config.chain_ops
        assert len(p.assignments) == 1 + config.chain_ops + config.n_distractors
    # Distractors really are there, and the asked variable is not always the last line.
    if config.n_distractors:
        assert any(p.assignments[-1].name != p.target for p in problems)


def test_values_stay_in_range():
    config = SyntheticConfig(max_value=9, max_operand=4, multiply=True)
    for p in generate_problems(300, seed=5, config=config):
        assert all(0 <= v <= 9 for v in p.values.values())
        assert all(a.operand is None or 1 <= a.operand <= 4 or a.op == "*" for a in p.assignments)


def test_same_seed_same_questions_and_other_seed_differs():
    a = generate_problems(50, seed=11)
    b = generate_problems(50, seed=11)
    c = generate_problems(50, seed=12)
    assert [p.question for p in a] == [p.question for p in b]
    assert [p.answer for p in a] == [p.answer for p in b]
    assert [p.id for p in a] == [p.id for p in b]
    assert [p.question for p in a] != [p.question for p in c]
    assert len({p.id for p in a}) == 50
    # A longer run starts with the shorter one (ids stay stable as a set grows).
    assert [p.question for p in generate_problems(80, seed=11)][:50] == [p.question for p in a]


WORLDS = pytest.mark.parametrize(
    "world", [DEMO_WORLD, SyntheticConfig(lookup_rate=0.25)], ids=["demo_world", "with_lookups"]
)


@WORLDS
def test_verbose_reasoning_is_correct_and_mostly_filler(world):
    problems = generate_problems(100, seed=2, config=world)
    for p in problems:
        text = verbose_reasoning(p, random.Random(p.id))
        lines = text.split("\n")
        assert lines[-1] == f"Answer: {p.answer}"
        # Every step's stated result agrees with the independent evaluator's values.
        for statement in p.question.split(". ")[:-1]:
            name = statement.split(" = ")[0]
            value = evaluate_question(f"{p.question.rsplit(' What', 1)[0]} What is {name}?")[0]
            assert re.search(rf"\b{name} is {value}\b", text), (name, text)
            assert not re.search(rf"\b{name} is (?!{value}\b)\d", text), (name, text)
        # The asked variable's line says so, and only that line.
        marked = [i for i, ln in enumerate(lines) if TARGET_MARK in ln]
        assert len(marked) == 1 and f"{p.target} is {p.answer}, {TARGET_MARK}" in lines[marked[0]]
        assert relevant_lines(p, text)[-1] == marked[0]
        assert len(relevant_lines(p, text)) == len(p.chain)
        stripped = strip_answer_line(text)
        assert "Answer:" not in stripped and text.startswith(stripped)
        # Key tokens (the values) are a small fraction of the words.
        words = text.split()
        assert sum(w.strip(".,;").isdigit() for w in words) < 0.35 * len(words)


def test_reasoning_is_seeded():
    p = generate_problems(1, seed=0)[0]
    assert verbose_reasoning(p, random.Random(4)) == verbose_reasoning(p, random.Random(4))
    assert verbose_reasoning(p, random.Random(4), with_answer=False) == strip_answer_line(
        verbose_reasoning(p, random.Random(4))
    )


def test_write_jsonl_round_trips_through_load_examples(tmp_path):
    path = tmp_path / "chains.jsonl"
    problems = write_synthetic_jsonl(path, 20, seed=9)
    examples = load_examples(path)
    assert [e.id for e in examples] == [p.id for p in problems]
    assert [(e.question, e.answer) for e in examples] == [(p.question, p.answer) for p in problems]
    for e in examples:
        assert e.answer == str(evaluate_question(e.question)[0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"chain_ops": 0},
        {"n_distractors": -1},
        {"chain_ops": 15, "n_distractors": 10},
        {"max_operand": 0},
        {"max_value": 3, "max_operand": 5},
        {"filler_rate": 1.5},
    ],
)
def test_bad_config_is_refused(kwargs):
    with pytest.raises(ValueError):
        SyntheticConfig(**kwargs)


def test_negative_count_is_refused():
    with pytest.raises(ValueError, match="n must be"):
        generate_problems(-1)


@WORLDS
def test_the_small_models_slip_against_an_independent_reading(world):
    """slip=True: the recap and answer overshoot exactly when the last line is computed from the asked one."""
    problems = generate_problems(400, seed=7, config=world)
    slipped = 0
    for p in problems:
        statements, target = read_statements(p.question)
        gold = evaluate_question(p.question)[0]
        _, last_parent, last_value = statements[-1]
        below = {target}  # a lookup's hasty reader follows the asked constant down to the last line from it
        for name, parent, _ in statements:
            if parent in below:
                below.add(name)
        from_target = [value for name, _, value in statements if name in below and name != target]
        constant = next(parent is None for name, parent, _ in statements if name == target)
        hasty = last_value if last_parent == target else from_target[-1] if constant and from_target else gold
        for slip, reported in ((False, gold), (True, hasty)):
            text = verbose_reasoning(p, random.Random(p.id), slip=slip)
            lines = text.split("\n")
            assert lines[-2:] == [recap_sentence(str(reported)), f"Answer: {reported}"]
            # The steps stay right either way: the marked step states the gold value.
            marked = [ln for ln in lines if TARGET_MARK in ln]
            assert len(marked) == 1 and f"{target} is {gold}, {TARGET_MARK}" in marked[0]
            for name, _, value in statements:
                assert re.search(rf"\b{name} is {value}\b", text)
        slipped += hasty != gold
    # The slip is a real but minority mistake: about one chain question in six, nearly every lookup.
    share = world.lookup_rate + (1 - world.lookup_rate) * 0.17
    assert share - 0.08 < slipped / len(problems) < share + 0.08


@pytest.mark.parametrize("rate", [0.25, 0.6])
def test_lookup_questions_ask_for_a_stated_value(rate):
    """lookup_rate: that share of questions asks for a constant the question states (checked from the
    text alone); the others keep the full chain; rate 0 leaves the seeded questions as they were."""
    config = SyntheticConfig(lookup_rate=rate)
    problems = generate_problems(400, seed=4, config=config)
    lookups = 0
    for p in problems:
        value, needed = evaluate_question(p.question)
        assert p.answer == str(value) and needed == set(p.chain)
        statements, target = read_statements(p.question)
        stated = {name: v for name, parent, v in statements if parent is None}
        if len(needed) == 1:
            lookups += 1
            assert stated[target] == value
            # The chain's derived lines are still there, computed from the asked variable or its children.
            assert len(statements) == 1 + config.chain_ops + config.n_distractors
        else:
            assert len(needed) == 1 + config.chain_ops
    assert abs(lookups / len(problems) - rate) < 0.08
    same = SyntheticConfig(lookup_rate=0.0)
    assert [p.question for p in generate_problems(50, 4, same)] == [
        p.question for p in generate_problems(50, 4)
    ]
    with pytest.raises(ValueError, match="lookup_rate"):
        SyntheticConfig(lookup_rate=1.5)
