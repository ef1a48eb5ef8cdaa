"""'When necessary': decide per question whether the large model answers directly or from a transfer.

- ``never``: the large model answers directly; the small model never runs.
- ``always``: always transfer; the large model's direct answer is never computed.
- ``confidence``: transfer when the large model's direct-answer probability is under ``tau``. That
  probability is exp(mean token log-prob) of the answer line it generated (a per-token geometric
  mean, so a long answer is not penalised for its length). The small model runs only for the
  questions that transfer (unless the relay runs it in parallel with the direct answer).
- ``agreement`` (mutual verification): transfer when the small model's answer (extracted from its
  reasoning) and the large model's direct answer disagree; the small model runs for every question.
- ``small_confidence``: transfer when the small model is sure of its own answer: the probability of
  the answer where its reasoning states it (``stated_answer_probability``; its least sure statement)
  is at least ``small_tau``. Otherwise its reasoning is dropped and the large model answers directly.
  A selector keeps the small model's conclusion when it is right and wrong alike; a wrong one
  costs the large model far more than a right one gains, and an unsure small model is more often
  wrong. The small model runs for every question; the large model's direct answer is the fallback.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .answers import answers_match, extract_answer
from .reasoning import spans_from_token_ids

__all__ = [
    "GATES",
    "Gate",
    "answer_from_generation",
    "answer_probability",
    "check_gate",
    "stated_answer_probability",
]

GATES = ("never", "always", "confidence", "agreement", "small_confidence")
_MARKERS = re.compile(r"answer|\\boxed|\\fbox", re.IGNORECASE)


def check_gate(kind: str, tau: float, small_tau: float = 0.9) -> None:
    """Raise ValueError for an unknown gate or a threshold outside [0, 1]."""
    if kind not in GATES:
        raise ValueError(f"unknown gate {kind!r}; expected one of {GATES}")
    for name, value in (("tau", tau), ("small_tau", small_tau)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"gate threshold {name} must be in [0, 1], got {value!r}")


@dataclass(frozen=True)
class Gate:
    """Which questions go through the small model and the transfer."""

    kind: str = "agreement"
    """never, always, confidence, agreement, or small_confidence."""
    tau: float = 0.5
    """confidence gate: transfer when the direct-answer probability is below this."""
    small_tau: float = 0.9
    """small_confidence gate: transfer when the small model's answer probability is at least this."""

    def __post_init__(self) -> None:
        check_gate(self.kind, self.tau, self.small_tau)

    @property
    def needs_direct(self) -> bool:
        """Whether the large model's direct answer is computed (for the answer or the decision)."""
        return self.kind != "always"

    @property
    def small_for_all(self) -> bool:
        """Whether the small model must reason on every question before the decision."""
        return self.kind in ("always", "agreement", "small_confidence")

    def transfer(
        self,
        direct_answer: str | None,
        direct_prob: float | None,
        small_answer: str | None,
        small_prob: float | None = None,
    ) -> bool:
        """Whether this question is answered from a transfer."""
        if self.kind == "never":
            return False
        if self.kind == "always":
            return True
        if self.kind == "confidence":
            if direct_prob is None:
                raise ValueError("the confidence gate needs the direct answer's probability")
            return direct_prob < self.tau
        if self.kind == "small_confidence":  # no stated answer: nothing the small model is sure of
            return small_answer is not None and small_prob is not None and small_prob >= self.small_tau
        # agreement: a missing answer on either side is a disagreement.
        if direct_answer is None or small_answer is None:
            return True
        return not answers_match(small_answer, direct_answer)


def answer_from_generation(text: str) -> str | None:
    """The answer in a short generation after 'Answer:': its first non-empty line, unwrapped.

    The line is kept as written (answers_match normalizes later) unless it carries an answer
    marker ('Answer:', 'the answer is', \\boxed{}), which extract_answer then reads.
    """
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if not line:
        return None
    if _MARKERS.search(line):
        return extract_answer(line) or line
    return line


def answer_probability(tokenizer, token_ids: Sequence[int], logprobs: Sequence[float]) -> float | None:
    """exp(mean log-prob) of the tokens that make up the first non-empty line of a generation.

    Leading whitespace-only tokens are skipped; None when nothing was generated.
    """
    chosen: list[float] = []
    for k, lp in enumerate(logprobs):
        before = tokenizer.decode(list(token_ids[:k]), skip_special_tokens=True).lstrip()
        if "\n" in before:
            break  # the answer line ended at an earlier token
        now = tokenizer.decode(list(token_ids[: k + 1]), skip_special_tokens=True)
        if now.strip():  # leading whitespace-only tokens are not part of the answer
            chosen.append(lp)
    if not chosen:
        return None
    return math.exp(math.fsum(chosen) / len(chosen))


def stated_answer_probability(
    tokenizer, token_ids: Sequence[int], logprobs: Sequence[float], answer: str | None
) -> float | None:
    """How sure the small model was of ``answer`` where its reasoning wrote it, from its own log-probs.

    For each place the reasoning states the answer (the answer's text, not inside a longer number),
    exp(mean log-prob) of the tokens that overlap it; the least of these (the model's least sure
    statement of its answer, usually where it first derives it: later copies are near-certain).
    None when there is no answer or the text never states it.
    """
    if answer is None or not answer.strip() or not token_ids:
        return None
    text, spans = spans_from_token_ids(tokenizer, token_ids)
    pattern = re.compile(r"(?<![\d.])" + re.escape(answer.strip()) + r"(?![\d])")
    probs = []
    for m in pattern.finditer(text):
        lps = [lp for (s, e), lp in zip(spans, logprobs) if s < m.end() and e > m.start()]
        if lps:
            probs.append(math.exp(math.fsum(lps) / len(lps)))
    return min(probs) if probs else None
