"""What a unit scorer sees of one piece of reasoning: text, units, and the small model's signals.

Trained selectors and baselines (random, self-information, oracle, ...) all score a
``ReasoningView``, so the relay, the labelers and the evaluation treat them alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .units import Unit, split_units

__all__ = [
    "FINAL_ANSWER_LINE_RE",
    "ReasoningView",
    "UnitScorer",
    "answer_free_length",
    "spans_from_token_ids",
    "view_from_generation",
    "view_from_trace",
]

FINAL_ANSWER_LINE_RE = re.compile(
    r"(?:^|\n)[ \t>*#_]*(?:the\s+)?(?:final\s+)?answer\b[^\n]*\s*$", re.IGNORECASE
)
"""The reasoning's last line when it states the answer ("Answer: 5", "**Final answer:** 5", ...)."""


@dataclass
class ReasoningView:
    """One question's reasoning cut into units, with what the small model computed for free."""

    question: str
    reasoning: str
    units: list[Unit]
    token_ids: list[int] | None = None
    """The small model's reasoning token ids."""
    token_logprobs: list[float] | None = None
    """The small model's log-probability of each reasoning token (self-information = minus it)."""
    token_spans: list[tuple[int, int]] | None = None
    """Character span of each reasoning token in ``reasoning``."""
    hidden_states: torch.Tensor | None = None
    """(tokens, hidden) small-model hidden states of the reasoning tokens at one layer."""
    labels: list[float] | None = None
    """Per-unit labels from the large model (only the oracle baseline reads them)."""

    def __post_init__(self) -> None:
        n = len(self.token_ids) if self.token_ids is not None else None
        for name in ("token_logprobs", "token_spans"):
            value = getattr(self, name)
            if value is not None and n is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries for {n} reasoning tokens")
        if self.hidden_states is not None and n is not None and self.hidden_states.shape[0] != n:
            raise ValueError(f"hidden_states has {self.hidden_states.shape[0]} rows for {n} reasoning tokens")
        if self.labels is not None and len(self.labels) != len(self.units):
            raise ValueError(f"{len(self.labels)} labels for {len(self.units)} units")


@runtime_checkable
class UnitScorer(Protocol):
    """Anything that ranks units: higher score = keep first."""

    name: str

    def __call__(self, view: ReasoningView) -> list[float]: ...


def spans_from_token_ids(tokenizer, token_ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """Decode ids and give each token the character span it added to the decoded text.

    Decoding prefixes keeps the spans exact for byte-level BPE, where a token can hold part of a
    character (its span is then empty until the character completes).
    """
    spans, previous = [], ""
    for k in range(1, len(token_ids) + 1):
        text = tokenizer.decode(list(token_ids[:k]), skip_special_tokens=True)
        if not text.startswith(previous):  # a completed multi-byte character replaces '\ufffd'
            common = len(previous.rstrip("\ufffd"))
            previous = previous[:common]
        spans.append((len(previous), len(text)))
        previous = text
    return previous, spans


def view_from_trace(
    trace: Mapping,
    *,
    granularity: str = "sentence",
    tokenizer=None,
    with_labels: bool = False,
) -> ReasoningView:
    """A view of a trace record (``tokenrelay reason`` / ``label`` output).

    Units come from the record when it was labelled (``unit_starts``/``unit_ends``), else are cut
    at ``granularity``. With ``tokenizer`` (the small model's), token spans are recovered from
    the stored token ids.
    """
    reasoning = trace["reasoning"]
    if trace.get("unit_starts") is not None:
        units = [
            Unit(i, s, e, reasoning[s:e])
            for i, (s, e) in enumerate(zip(trace["unit_starts"], trace["unit_ends"]))
        ]
    else:
        units = split_units(reasoning, granularity, tokenizer=tokenizer)
    ids = trace.get("reasoning_token_ids")
    spans = None
    if tokenizer is not None and ids is not None:
        decoded, spans = spans_from_token_ids(tokenizer, ids)
        if decoded != reasoning:
            spans = None  # the text was edited after generation: token signals no longer line up
    hidden = trace.get("hidden_states")
    if hidden is not None and np.ndim(hidden) == 0:  # a row without states, read from an array column
        hidden = None
    return ReasoningView(
        question=trace["question"],
        reasoning=reasoning,
        units=units,
        token_ids=list(ids) if ids is not None else None,
        token_logprobs=list(trace["reasoning_logprobs"])
        if trace.get("reasoning_logprobs") is not None
        else None,
        token_spans=spans if spans is not None or ids is None else None,
        hidden_states=torch.tensor(np.asarray(hidden, dtype=np.float32)) if hidden is not None else None,
        labels=list(trace["labels"]) if with_labels and trace.get("labels") is not None else None,
    )


def answer_free_length(tokenizer, token_ids: Sequence[int], text: str) -> tuple[int, str]:
    """How many reasoning tokens come before the final answer line, and their decoded text.

    The relay transfers the small model's reasoning, not its final answer line (as one would
    relay a thinking block): that line alone hands over the small model's answer, right or
    wrong, and any selector keeping the last unit would win without selecting anything. The cut
    is at a token boundary, so the kept text is exactly ``decode(token_ids[:k])`` and the token
    signals (log-probs, hidden states) of the kept tokens still line up with it.
    """
    k, kept, _ = _cut_answer_line(tokenizer, token_ids, text)
    return k, kept


def _cut_answer_line(
    tokenizer, token_ids: Sequence[int], text: str
) -> tuple[int, str, list[tuple[int, int]] | None]:
    """``answer_free_length`` plus the kept tokens' character spans when it had to compute them
    (spans are decoded prefix by prefix, so the first k of the whole reasoning's are the kept ones')."""
    match = FINAL_ANSWER_LINE_RE.search(text)
    if match is None:
        return len(token_ids), text, None
    decoded, spans = spans_from_token_ids(tokenizer, token_ids)
    if decoded != text:
        raise ValueError("the reasoning text is not the decoding of its token ids; cannot cut it")
    k = sum(1 for _, end in spans if end <= match.start())
    while k > 0 and spans[k - 1][0] >= match.start():  # empty-span tokens after the cut
        k -= 1
    return k, tokenizer.decode(list(token_ids[:k]), skip_special_tokens=True), spans[:k]


def view_from_generation(
    question: str,
    text: str,
    token_ids: Sequence[int],
    token_logprobs: Sequence[float],
    tokenizer,
    *,
    granularity: str = "sentence",
    hidden_states: torch.Tensor | None = None,
    keep_answer_line: bool = False,
) -> ReasoningView:
    """A view of reasoning the small model just generated (the relay's and the evaluation's path).

    Unless ``keep_answer_line``, the final answer line is cut first (see ``answer_free_length``),
    exactly as ``tokenrelay reason`` cuts it from the traces the selector was trained on.
    """
    k, spans = len(token_ids), None
    if not keep_answer_line:
        k, text, spans = _cut_answer_line(tokenizer, token_ids, text)
    ids = list(token_ids[:k])
    decoded = text
    if spans is None:  # nothing was cut: decode the spans once here
        decoded, spans = spans_from_token_ids(tokenizer, ids)
    return ReasoningView(
        question=question,
        reasoning=text,
        units=split_units(text, granularity, tokenizer=tokenizer),
        token_ids=ids,
        token_logprobs=list(token_logprobs[:k]),
        token_spans=spans if decoded == text else None,
        hidden_states=hidden_states[:k] if hidden_states is not None else None,
    )
