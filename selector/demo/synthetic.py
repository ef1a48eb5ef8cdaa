"""A seedable world of multi-step questions with distractors, for the embedded demo, tests and ablations.

A question is a list of variable assignments and asks for one variable::

    q = 7. h = q + 5. x = 3. f = h - 4. k = x + 2. m = f + 9. What is m?

Only the assignments on the asked variable's dependency chain (q, h, f, m) matter; the others are
distractors. Every question comes with its gold answer and a *verbose* worked solution (filler
words around each step, one step per line, a recap ``So the answer is N.``, then ``Answer: N``):
the kind of reasoning a small model writes, where the few tokens that matter to a reader are a small
fraction of the text.

The demo's small model has one characteristic slip (``verbose_reasoning(..., slip=True)``): when the
question's last line goes one step past the asked variable (``g = d + 2`` after ``d`` is asked), its
recap and final answer overshoot to that last value, although its step for the asked variable (the
line marked "which the question asks for") is right; asked for a stated constant (a lookup), it works
the chain through and reports the last value computed from it. A reader of its whole reasoning meets two
answers; a selector that keeps the marked step and drops the recap filters the mistake out.

Some questions may be lookups (``SyntheticConfig.lookup_rate``: ``... What is q?``, whose value the
question states): questions a large model can answer directly, so a confidence gate can skip the
small model there; the shipped demo's world (``DEMO_WORLD``) has a quarter of them.

Everything is a pure function of ``(config, seed)``, so a test, an ablation and the demo build see
the same questions.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, field

from ..data import Example, write_jsonl

__all__ = [
    "ANSWER_LINE_RE",
    "DEMO_WORLD",
    "TARGET_MARK",
    "Assignment",
    "ChainProblem",
    "SyntheticConfig",
    "generate_problem",
    "generate_problems",
    "recap_sentence",
    "relevant_lines",
    "strip_answer_line",
    "verbose_reasoning",
    "write_synthetic_jsonl",
]

# Letters used as variable names: single letters that never appear as words in the filler text.
VARIABLE_NAMES = "bcdefghjkmnpqrstuvwxyz"
ORDERED_NAMES = "abcdefghjkmnpqrstuvwxyz"  # ordered naming: a, b, c, ... (i, l and o are skipped)
OPS = ("+", "-", "*")
TARGET_MARK = "which the question asks for"
ANSWER_LINE_RE = re.compile(r"\n?Answer:[^\n]*\s*$")

_OPENINGS = (
    "Let me work through this step by step.",
    "Okay, let me figure this out carefully.",
    "Alright, I will go through each line in order.",
    "Let me think about this problem slowly and carefully.",
    "Okay, there are several lines here, so let me take them one by one.",
)
_LEADS = ("First,", "Next,", "Then,", "Now,", "Okay,", "Moving on,", "Alright,", "After that,", "Hmm,")
# Values are always stated as "<name> is <value>" and formulas as "<name> = ...", so a reader (or a
# tiny model) finds a variable's value by one unambiguous pattern.
_CONST_STEPS = (
    "{lead} {v} is {n}, given directly.",
    "{lead} the problem says {v} is {n}.",
    "{lead} we are told {v} is {n}.",
)
_DERIVED_STEPS = (
    "{lead} {v} = {u} {op} {k}, and {u} is {a}.",
    "{lead} {v} = {u} {op} {k}, where {u} is {a}.",
    "{lead} we have {v} = {u} {op} {k}, where {u} is {a}.",
)
_RESULTS = (
    "So {a} {op} {k} = {n}, and {v} is {n}{mark}.",
    "That gives {a} {op} {k} = {n}, so {v} is {n}{mark}.",
    "Then {a} {op} {k} = {n}, meaning {v} is {n}{mark}.",
)
_FILLERS = (
    "That one is easy.",
    "Let me keep track of the values.",
    "I must not mix up the letters.",
    "Everything looks consistent.",
    "Good, that step is done.",
    "Let me double check that.",
    "This part needs care.",
)


@dataclass
class SyntheticConfig:
    """Shape of the generated questions: keep numbers small so tiny models can learn the world."""

    chain_ops: int = 3
    """Operations on the asked variable's dependency chain (after its root constant): its depth."""
    n_distractors: int = 2
    """Assignments that do not matter for the asked variable (constants or derived from any earlier one)."""
    max_value: int = 9
    """Every variable's value lies in 0..max_value."""
    max_operand: int = 5
    """Constants added or subtracted lie in 1..max_operand; root constants in 0..max_value."""
    multiply: bool = False
    """Also use ``* 2`` and ``* 3`` steps (when the product stays in range)."""
    filler_rate: float = 0.3
    """Chance of a pure filler sentence after each step of the verbose reasoning."""
    distractor_after_target: float = 0.5
    """Chance that each distractor not tied to the chain is placed after the asked variable."""
    ordered_names: bool = True
    """Name the variables in the order they are assigned (a, b, c, ...); else random letters."""
    lookup_rate: float = 0.0
    """Share of questions that ask for the chain's root, a constant the question states: a lookup,
    which a large model can answer directly (its chain's derived lines then follow from the asked
    variable). 0 keeps every question ``chain_ops`` deep (and the seeded questions unchanged)."""

    def __post_init__(self) -> None:
        if self.chain_ops < 1:
            raise ValueError(f"chain_ops must be >= 1, got {self.chain_ops}")
        if self.n_distractors < 0:
            raise ValueError(f"n_distractors must be >= 0, got {self.n_distractors}")
        if 1 + self.chain_ops + self.n_distractors > len(VARIABLE_NAMES):
            raise ValueError(f"at most {len(VARIABLE_NAMES)} assignments per question (variable names)")
        if self.max_operand < 1 or self.max_value < self.max_operand:
            raise ValueError("need 1 <= max_operand <= max_value")
        for name in ("filler_rate", "distractor_after_target", "lookup_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")


DEMO_WORLD = SyntheticConfig(lookup_rate=0.25)
"""The world of the shipped demo (its agents, its selector, its gate's dev questions and its held-out
questions): one source for the agents' training script, the demo build and `tokenrelay demo`. A
quarter of its questions are lookups, which the large agent answers directly and the small agent
overshoots: the confidence gate skips the small model exactly there."""


@dataclass(frozen=True)
class Assignment:
    """One line of a question: ``name = value`` or ``name = parent op operand``."""

    name: str
    value: int
    """The variable's value (the line's result)."""
    parent: str | None = None
    """The variable it is computed from; None for a constant."""
    op: str | None = None
    operand: int | None = None

    @property
    def text(self) -> str:
        if self.parent is None:
            return f"{self.name} = {self.value}"
        return f"{self.name} = {self.parent} {self.op} {self.operand}"


@dataclass
class ChainProblem:
    """A generated question with its gold answer and which lines matter."""

    id: str
    assignments: list[Assignment]
    target: str
    """The asked variable."""
    chain: list[str] = field(default_factory=list)
    """The asked variable's dependency chain, root first (the lines that matter)."""
    lookup: bool = False
    """The asked variable is a constant the question states (``SyntheticConfig.lookup_rate``)."""

    @property
    def values(self) -> dict[str, int]:
        return {a.name: a.value for a in self.assignments}

    @property
    def answer(self) -> str:
        return str(self.values[self.target])

    @property
    def overshoot(self) -> str:
        """The variable a hasty reader reports: the last line when it is computed from the asked one;
        asked for a stated constant (a lookup), the last line computed from it, through any steps
        (it works the chain through instead of reading the value off)."""
        last = self.assignments[-1]
        if last.parent == self.target:
            return last.name
        if self.lookup:
            below = {self.target}
            for a in self.assignments:
                if a.parent in below:
                    below.add(a.name)
            return [a.name for a in self.assignments if a.name in below][-1]
        return self.target

    @property
    def question(self) -> str:
        return " ".join(f"{a.text}." for a in self.assignments) + f" What is {self.target}?"

    def to_example(self) -> Example:
        return Example(id=self.id, question=self.question, answer=self.answer)


def _apply(a: int, op: str, k: int) -> int:
    return a + k if op == "+" else a - k if op == "-" else a * k


def _step(rng: random.Random, value: int, config: SyntheticConfig) -> tuple[str, int]:
    """A random operation on ``value`` whose result stays in 0..max_value."""
    options = [("+", k) for k in range(1, config.max_operand + 1) if value + k <= config.max_value]
    options += [("-", k) for k in range(1, config.max_operand + 1) if value - k >= 0]
    if config.multiply:
        options += [("*", k) for k in (2, 3) if 0 < value * k <= config.max_value]
    return rng.choice(options)


def generate_problem(rng: random.Random, config: SyntheticConfig, id: str = "0") -> ChainProblem:
    """One question drawn with ``rng`` (see :func:`generate_problems` for the seeded batch)."""
    lookup = config.lookup_rate > 0 and rng.random() < config.lookup_rate  # no draw at rate 0
    names = rng.sample(VARIABLE_NAMES, 1 + config.chain_ops + config.n_distractors)
    chain_names, other_names = names[: 1 + config.chain_ops], names[1 + config.chain_ops :]
    chain = [Assignment(chain_names[0], rng.randint(0, config.max_value))]
    for name in chain_names[1:]:
        op, k = _step(rng, chain[-1].value, config)
        chain.append(Assignment(name, _apply(chain[-1].value, op, k), chain[-1].name, op, k))
    # Interleave: the chain in order, each distractor after its parent (if any).
    order: list[Assignment] = list(chain)
    for name in other_names:
        if rng.random() < 0.4:
            line = Assignment(name, rng.randint(0, config.max_value))
            lowest = 0
        else:
            parent_pos = rng.randrange(len(order))
            parent = order[parent_pos]
            op, k = _step(rng, parent.value, config)
            line = Assignment(name, _apply(parent.value, op, k), parent.name, op, k)
            lowest = parent_pos + 1
        target_pos = next(i for i, a in enumerate(order) if a.name == chain[-1].name)
        if lowest <= target_pos and rng.random() < config.distractor_after_target:
            lowest = target_pos + 1
        order.insert(rng.randint(lowest, len(order)), line)
    if config.ordered_names:  # rename so the k-th line assigns the k-th letter
        rename = {a.name: ORDERED_NAMES[i] for i, a in enumerate(order)}
        order = [
            Assignment(rename[a.name], a.value, rename.get(a.parent), a.op, a.operand)
            if a.parent
            else Assignment(rename[a.name], a.value)
            for a in order
        ]
        chain = [Assignment(rename[a.name], a.value) for a in chain]
    if lookup:
        chain = chain[:1]
    return ChainProblem(
        id=id, assignments=order, target=chain[-1].name, chain=[a.name for a in chain], lookup=lookup
    )


def generate_problems(n: int, seed: int = 0, config: SyntheticConfig | None = None) -> list[ChainProblem]:
    """``n`` questions, the same for the same ``(seed, config)``; ids are ``chain-<seed>-<i>``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    config = config or SyntheticConfig()
    rng = random.Random(f"tokenrelay-synthetic-{seed}")
    return [generate_problem(rng, config, id=f"chain-{seed}-{i}") for i in range(n)]


def verbose_reasoning(
    problem: ChainProblem,
    rng: random.Random,
    config: SyntheticConfig | None = None,
    *,
    with_answer: bool = True,
    slip: bool = False,
) -> str:
    """A worked solution with filler: an opening, one line per assignment in question order, a recap
    line ``So the answer is N.``, then ``Answer: N``.

    The asked variable's line says so ("which the question asks for"), as chatty reasoning does; the
    lines after it are the remaining distractors. ``slip``: the recap and the answer give the value of
    :attr:`ChainProblem.overshoot` (the demo small model's mistake); every step stays right.
    """
    config = config or SyntheticConfig()
    values = problem.values
    lines = [rng.choice(_OPENINGS)]
    for a in problem.assignments:
        lead = rng.choice(_LEADS)
        if a.parent is None:
            # A lookup question's asked constant is marked as a derived target is: "x is N, which ...".
            n = f"{a.value}, {TARGET_MARK}" if a.name == problem.target else a.value
            line = rng.choice(_CONST_STEPS).format(lead=lead, v=a.name, n=n)
        else:
            mark = f", {TARGET_MARK}" if a.name == problem.target else ""
            fields = dict(
                v=a.name, u=a.parent, op=a.op, k=a.operand, a=values[a.parent], n=a.value, mark=mark
            )
            line = (
                rng.choice(_DERIVED_STEPS).format(lead=lead, **fields)
                + " "
                + rng.choice(_RESULTS).format(**fields)
            )
        if rng.random() < config.filler_rate:
            line += " " + rng.choice(_FILLERS)
        lines.append(line)
    reported = str(values[problem.overshoot]) if slip else problem.answer
    lines.append(recap_sentence(reported))
    text = "\n".join(lines)
    return f"{text}\nAnswer: {reported}" if with_answer else text


def recap_sentence(value: str) -> str:
    """The worked solution's closing recap (the line before ``Answer:``)."""
    return f"So the answer is {value}."


def strip_answer_line(reasoning: str) -> str:
    """The reasoning without its final ``Answer: ...`` line: what the relay transfers in the demo."""
    return ANSWER_LINE_RE.sub("", reasoning)


def relevant_lines(problem: ChainProblem, reasoning: str) -> list[int]:
    """Indices of the reasoning's lines (``split('\\n')``) that compute a variable of the asked chain.

    A step line names its own variable first (the filler text holds no single-letter words).
    """
    chain = set(problem.chain)
    out = []
    for i, line in enumerate(reasoning.split("\n")):
        m = re.search(rf"\b([{ORDERED_NAMES}])\b", line)
        if m and m.group(1) in chain:
            out.append(i)
    return out


def write_synthetic_jsonl(
    path: str | os.PathLike, n: int, seed: int = 0, config: SyntheticConfig | None = None
) -> list[ChainProblem]:
    """Write ``n`` seeded questions as JSONL in the Example contract (id, question, answer)."""
    problems = generate_problems(n, seed, config)
    write_jsonl([p.to_example() for p in problems], path)
    return problems
