"""Turn unit scores into a transfer: a budget, optional forced keeps, original order, readable text.

Budgets count tokens with the LARGE model's tokenizer (``selector.units.unit_token_counts``): what a
transfer costs is the large model's prefill of it. Rules (exact, so token counts are testable):

- ``ratio r`` (0 < r <= 1): cap = r x total tokens. Units are visited from the highest score down
  (ties: earlier unit first); a unit is kept when it still fits under the cap, otherwise skipped
  and the next one tried, so the cap is filled as far as whole units allow. The cap is strict:
  a ratio too small for any unit keeps nothing (forced keeps excepted). ``r = 1`` keeps all.
- ``tokens n`` (n >= 1): the same with cap = n.
- ``topk k`` (k >= 0): the k highest-scoring units, whatever their length.
- ``threshold t`` (0 <= t <= 1): units whose probability is >= t. Scores are logits mapped through
  a sigmoid, unless ``probabilities=True`` says they already are probabilities in [0, 1]
  (a scorer tells with an ``outputs_probabilities = True`` attribute).

Forced keeps (numbers, the last step) are always kept and count against a ratio/tokens/topk budget
first, even past it; the remaining budget goes to the best other units.

A score floor (``min_score``) keeps no unit scoring below it under any budget, forced keeps excepted:
for scorers whose scores have an absolute scale (a selector trained with the pointwise loss predicts
each unit's gain in nats), so a trace whose every unit is predicted to hurt transfers nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from .units import Unit, join_units

__all__ = [
    "BUDGET_KINDS",
    "DEFAULT_BUDGETS",
    "Budget",
    "BudgetKind",
    "Transfer",
    "build_transfer",
    "forced_keeps",
    "select_units",
]

BudgetKind = Literal["ratio", "tokens", "topk", "threshold"]
BUDGET_KINDS: tuple[str, ...] = get_args(BudgetKind)
DEFAULT_BUDGETS: dict[str, float] = {"ratio": 0.25, "tokens": 64, "topk": 3, "threshold": 0.5}
"""The budget a kind means when none is given (a relay config's ``budget: null``)."""
_NUMBER_RE = re.compile(r"\d")


@dataclass(frozen=True)
class Budget:
    """How much of the reasoning a transfer may hold."""

    kind: str = "ratio"
    """ratio (of reasoning tokens), tokens (max count), topk (units), or threshold (probability)."""
    value: float = 0.25
    """The ratio in (0, 1], the token cap >= 1, k >= 0, or the probability threshold in [0, 1]."""

    def __post_init__(self) -> None:
        check_budget(self.kind, self.value)

    @classmethod
    def ratio(cls, value: float) -> Budget:
        return cls("ratio", float(value))

    @classmethod
    def tokens(cls, value: int) -> Budget:
        return cls("tokens", value)

    @classmethod
    def topk(cls, value: int) -> Budget:
        return cls("topk", value)

    @classmethod
    def threshold(cls, value: float) -> Budget:
        return cls("threshold", float(value))

    def __str__(self) -> str:
        return f"{self.kind}={self.value:g}"


def check_budget(kind: str, value) -> None:
    """Raise ValueError for a budget that makes no sense (used by Budget and the relay's config)."""
    if kind not in BUDGET_KINDS:
        raise ValueError(f"unknown budget kind {kind!r}; expected one of {BUDGET_KINDS}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"budget value must be a number, got {value!r}")
    if kind == "ratio" and not 0 < value <= 1:
        raise ValueError(f"a ratio budget must be in (0, 1], got {value}")
    if kind in ("tokens", "topk"):
        if math.isinf(value) or value != int(value):
            raise ValueError(f"a {kind} budget must be a whole number, got {value}")
        if kind == "topk" and value < 0:
            raise ValueError(f"top-k needs k >= 0, got {value}")
        if kind == "tokens" and value < 1:
            raise ValueError(f"a token budget must be >= 1, got {value}")
    if kind == "threshold" and not 0 <= value <= 1:
        raise ValueError(f"a probability threshold must be in [0, 1], got {value}")


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _forced_mask(forced, n: int) -> list[bool]:
    if forced is None:
        return [False] * n
    forced = list(forced)
    if forced and all(isinstance(f, bool) for f in forced):
        if len(forced) != n:
            raise ValueError(f"forced mask has {len(forced)} entries for {n} units")
        return forced
    mask = [False] * n
    for i in forced:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
            raise ValueError(f"forced keep {i!r} is not a unit index in [0, {n})")
        mask[i] = True
    return mask


def select_units(
    scores: Sequence[float],
    token_counts: Sequence[int],
    budget: Budget,
    forced=None,
    *,
    probabilities: bool = False,
    min_score: float | None = None,
) -> list[bool]:
    """Keep mask over units (original order) under ``budget``; see the module docstring for the rules.

    ``forced`` is a bool mask or unit indices that are always kept; units scoring below ``min_score``
    (raw scores, before any sigmoid) are never kept otherwise.
    """
    n = len(scores)
    if len(token_counts) != n:
        raise ValueError(f"{n} scores but {len(token_counts)} token counts")
    scores = [float(s) for s in scores]
    if any(math.isnan(s) for s in scores):
        raise ValueError("a unit score is NaN")
    if any(c < 0 for c in token_counts):
        raise ValueError("token counts must be >= 0")
    keep = _forced_mask(forced, n)
    if min_score is not None and math.isnan(min_score):
        raise ValueError("min_score is NaN")
    allowed = [min_score is None or s >= min_score for s in scores]
    if budget.kind == "threshold":
        if probabilities:
            bad = [s for s in scores if not 0 <= s <= 1]
            if bad:
                raise ValueError(f"probabilities=True but a score is outside [0, 1]: {bad[0]}")
            probs = scores
        else:
            probs = [_sigmoid(s) for s in scores]
        return [k or (p >= budget.value and a) for k, p, a in zip(keep, probs, allowed)]
    order = [i for i in sorted(range(n), key=lambda i: (-scores[i], i)) if allowed[i]]
    if budget.kind == "topk":
        room = int(budget.value) - sum(keep)
        for i in order:
            if room <= 0:
                break
            if not keep[i]:
                keep[i] = True
                room -= 1
        return keep
    total = sum(token_counts)
    cap = budget.value * total if budget.kind == "ratio" else float(budget.value)
    used = sum(c for c, k in zip(token_counts, keep) if k)
    # A small epsilon so 0.25 x 40 = 10.000000000000002 style rounding never drops a unit that fits.
    cap += 1e-9 * max(1.0, cap)
    for i in order:
        if not keep[i] and used + token_counts[i] <= cap:
            keep[i] = True
            used += token_counts[i]
    return keep


def forced_keeps(units: Sequence[Unit], *, numbers: bool = False, last: bool = False) -> list[bool]:
    """Units always to keep: those holding a digit (``numbers``) and/or the final unit (``last``)."""
    mask = [bool(numbers and _NUMBER_RE.search(u.text)) for u in units]
    if last and units:
        mask[-1] = True
    return mask


@dataclass
class Transfer:
    """What the relay sends to the large model: the kept reasoning as text, and what it cost."""

    text: str
    """Kept units joined in original order (see ``selector.units.join_units``)."""
    mask: list[bool]
    """Keep flag per unit."""
    kept_tokens: int
    """Large-model tokens of the kept units."""
    total_tokens: int
    """Large-model tokens of all units."""
    fallback: bool = False
    """The selector's novelty fallback handled this reasoning (``ScorerConfig.novelty_fallback``): the
    trace looked unlike its training data, so its unit vectors were not trusted."""

    @property
    def kept_units(self) -> int:
        return sum(self.mask)

    @property
    def ratio(self) -> float:
        """Share of the reasoning's tokens transferred (0 for empty reasoning)."""
        return self.kept_tokens / self.total_tokens if self.total_tokens else 0.0


def build_transfer(
    reasoning: str, units: Sequence[Unit], mask: Sequence[bool], token_counts: Sequence[int]
) -> Transfer:
    """The transfer of ``mask`` over ``units`` of ``reasoning``, with its token counts."""
    mask = [bool(m) for m in mask]
    if not len(mask) == len(units) == len(token_counts):
        raise ValueError(f"{len(units)} units, {len(mask)} mask entries, {len(token_counts)} token counts")
    text = join_units(reasoning, units, mask) if any(mask) else ""
    return Transfer(
        text=text,
        mask=mask,
        kept_tokens=sum(c for c, m in zip(token_counts, mask) if m),
        total_tokens=sum(token_counts),
    )
