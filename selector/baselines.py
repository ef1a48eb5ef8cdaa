"""Baseline unit scorers (same interface as the trained selector) and the selector registry.

Every scorer maps a ``ReasoningView`` to one score per unit, higher = keep first; selection
(``selector.selection``) turns scores into a transfer under a budget. Two baselines ignore the
budget because they mean a fixed transfer: ``none`` (nothing) and ``full`` (everything); they say
so with a ``fixed_budget`` attribute, which ``select_transfer`` honours (and forced keeps are then
ignored too).
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Sequence
from pathlib import Path

from .reasoning import ReasoningView, UnitScorer
from .selection import Budget, Transfer, build_transfer, select_units
from .units import assign_spans_to_units

__all__ = [
    "BASELINES",
    "FirstScorer",
    "FullScorer",
    "LastScorer",
    "NoneScorer",
    "OracleScorer",
    "RandomScorer",
    "SelfInfoScorer",
    "check_selector_name",
    "load_selector",
    "select_transfer",
]


class NoneScorer:
    """Transfer nothing: the large model answers from the direct prompt."""

    name = "none"
    fixed_budget = Budget.topk(0)

    def __call__(self, view: ReasoningView) -> list[float]:
        return [0.0] * len(view.units)


class FullScorer:
    """Transfer the whole reasoning."""

    name = "full"
    fixed_budget = Budget.ratio(1.0)

    def __call__(self, view: ReasoningView) -> list[float]:
        return [0.0] * len(view.units)


class RandomScorer:
    """Uniform random scores; seeded per (seed, question, reasoning), so the order of calls never matters."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def __call__(self, view: ReasoningView) -> list[float]:
        key = zlib.crc32(f"{view.question}\x00{view.reasoning}".encode())
        rng = random.Random(self.seed * 1_000_003 + key)
        return [rng.random() for _ in view.units]


class FirstScorer:
    """Earlier units first (the start of the reasoning)."""

    name = "first"

    def __call__(self, view: ReasoningView) -> list[float]:
        return [-float(i) for i in range(len(view.units))]


class LastScorer:
    """Later units first (the end of the reasoning, where the answer usually is)."""

    name = "last"

    def __call__(self, view: ReasoningView) -> list[float]:
        return [float(i) for i in range(len(view.units))]


class SelfInfoScorer:
    """Selective Context: a unit's self-information under the small model, -log p of its tokens.

    ``reduce="sum"`` (default, as in Selective Context: self-information is additive over a
    unit's tokens) or ``"mean"`` (per token, so long units are not favoured). The log-probs are the
    small model's own from generation, so this costs nothing extra. A token whose character span is
    empty (part of a multi-byte character) counts for the unit at its position.
    """

    name = "selfinfo"

    def __init__(self, reduce: str = "sum"):
        if reduce not in ("sum", "mean"):
            raise ValueError(f"selfinfo reduce must be 'sum' or 'mean', got {reduce!r}")
        self.reduce = reduce

    def __call__(self, view: ReasoningView) -> list[float]:
        if view.token_logprobs is None or view.token_spans is None:
            missing = "token log-probs" if view.token_logprobs is None else "token spans"
            raise ValueError(
                "the selfinfo selector needs the small model's per-token log-probs and their character "
                f"spans in the reasoning; this view has no {missing} (traces edited after generation "
                "lose them)"
            )
        spans = [(s, e) if e > s else (max(0, s - 1), s + 1) for s, e in view.token_spans]
        owner = assign_spans_to_units(spans, view.units)
        total = [0.0] * len(view.units)
        count = [0] * len(view.units)
        for idx, lp in zip(owner, view.token_logprobs):
            if idx >= 0 and math.isfinite(lp):
                total[idx] += -lp
                count[idx] += 1
        if self.reduce == "mean":
            return [t / c if c else 0.0 for t, c in zip(total, count)]
        return total


class OracleScorer:
    """The labels themselves (per-unit contribution to the large model's gold log-prob)."""

    name = "oracle"

    def __call__(self, view: ReasoningView) -> list[float]:
        if view.labels is None:
            raise ValueError(
                "the oracle selector reads per-unit labels (from `tokenrelay label`); this view has none"
            )
        return list(view.labels)


BASELINES: dict[str, type] = {
    cls.name: cls
    for cls in (NoneScorer, FullScorer, RandomScorer, FirstScorer, LastScorer, SelfInfoScorer, OracleScorer)
}


def check_selector_name(name_or_path: str) -> None:
    """Raise ValueError unless ``name_or_path`` is a baseline name or an existing folder (no loading)."""
    if name_or_path in BASELINES:
        return
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise ValueError(f"selector {name_or_path!r} is a file; a trained selector is a checkpoint folder")
    raise ValueError(
        f"unknown selector {name_or_path!r}: not a baseline ({', '.join(BASELINES)}) "
        "and not an existing checkpoint folder"
    )


def load_selector(name_or_path: str, **kw) -> UnitScorer:
    """A baseline by name (``kw`` go to its constructor, e.g. seed=, reduce=) or a trained checkpoint folder."""
    name_or_path = str(name_or_path)
    check_selector_name(name_or_path)
    if name_or_path in BASELINES:
        return BASELINES[name_or_path](**kw)
    from .scorer import TokenSelector  # the trained selector pulls in more; import only when used

    return TokenSelector.from_pretrained(name_or_path, **kw)


def select_transfer(
    scorer: UnitScorer,
    view: ReasoningView,
    token_counts: Sequence[int],
    budget: Budget,
    forced=None,
) -> Transfer:
    """Score ``view`` with ``scorer`` and build its transfer under ``budget`` (or the scorer's fixed one)."""
    fixed = getattr(scorer, "fixed_budget", None)
    scores = scorer(view)
    if len(scores) != len(view.units):
        raise ValueError(f"selector {scorer.name!r} gave {len(scores)} scores for {len(view.units)} units")
    mask = select_units(
        scores,
        token_counts,
        fixed or budget,
        None if fixed else forced,
        probabilities=bool(getattr(scorer, "outputs_probabilities", False)),
        min_score=getattr(scorer, "min_score", None),
    )
    transfer = build_transfer(view.reasoning, view.units, mask, token_counts)
    transfer.fallback = bool(getattr(scorer, "last_fell_back", False))
    return transfer
