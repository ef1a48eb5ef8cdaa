"""'When necessary': decide per question whether the large model answers directly or from a transfer.

- ``never``: the large model answers directly; the small model never runs.
- ``always``: always transfer; the large model's direct answer is never computed.
- ``confidence``: transfer when the large model's direct-answer probability is under ``tau``. That
  probability is exp(mean token log-prob) of the answer line it generated (a per-token geometric
  mean, so a long answer is not penalised for its length). The small model runs only for the
  questions that transfer (unless the relay runs it in parallel with the direct answer).
- ``agreement`` (mutual verification): transfer when the small model's answer (extracted from its
  reasoning) and the large model's direct answer disagree; the small model runs for every question.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .answers import answers_match, extract_answer

__all__ = ["GATES", "Gate", "answer_from_generation", "answer_probability", "check_gate"]

GATES = ("never", "always", "confidence", "agreement")
_MARKERS = re.compile(r"answer|\\boxed|\\fbox", re.IGNORECASE)


def check_gate(kind: str, tau: float) -> None:
    """Raise ValueError for an unknown gate or a threshold outside [0, 1]."""
    if kind not in GATES:
        raise ValueError(f"unknown gate {kind!r}; expected one of {GATES}")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 <= tau <= 1:
        raise ValueError(f"gate threshold tau must be in [0, 1], got {tau!r}")


@dataclass(frozen=True)
class Gate:
    """Which questions go through the small model and the transfer."""

    kind: str = "agreement"
    """never, always, confidence, or agreement."""
    tau: float = 0.5
    """confidence gate: transfer when the direct-answer probability is below this."""

    def __post_init__(self) -> None:
        check_gate(self.kind, self.tau)

    @property
    def needs_direct(self) -> bool:
        """Whether the large model's direct answer is computed (for the answer or the decision)."""
        return self.kind != "always"

    @property
    def small_for_all(self) -> bool:
        """Whether the small model must reason on every question before the decision."""
        return self.kind in ("always", "agreement")

    def transfer(
        self, direct_answer: str | None, direct_prob: float | None, small_answer: str | None
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
