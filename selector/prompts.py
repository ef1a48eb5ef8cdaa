"""Prompt builders: the small model's reasoning prompt and the large model's transfer prompt.

One transfer-prompt builder serves labeling and inference, so the labels measure exactly what the
relay sends. A transfer prompt is split into a ``prefix`` shared by every reasoning variant of a
question (system, images, question) and a ``rest`` (the kept reasoning and the turn's end), so a
labeler can encode the prefix once and reuse its KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "PromptParts",
    "PromptTemplate",
    "answer_target",
    "format_question",
    "reasoning_prompt",
    "transfer_prompt",
]

_SLOT = "\x00TOKENRELAY_SLOT\x00"


@dataclass(frozen=True)
class PromptTemplate:
    """The wording of the prompts; change it per dataset, but label and infer with the same one."""

    reasoning_instruction: str = (
        "Solve the problem step by step. End with a final line of the form 'Answer: <answer>'."
    )
    """Appended to the question when the small model reasons."""
    direct_instruction: str = "Reply with the final answer only."
    """Appended to the question when the large model answers (directly or from a transfer)."""
    transfer_header: str = "Key steps from a helper's reasoning (may be incomplete or wrong):"
    """Introduces the transferred reasoning inside the large model's prompt."""
    answer_prefix: str = "Answer:"
    """Written at the start of the large model's turn; the gold answer is scored right after it."""

    def __post_init__(self) -> None:
        if _SLOT in self.direct_instruction or _SLOT in self.transfer_header:
            raise ValueError("prompt template text may not contain the internal slot marker")


@dataclass(frozen=True)
class PromptParts:
    """A formatted prompt: ``prefix + rest``, with the images it refers to."""

    prefix: str
    rest: str
    images: list = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.prefix + self.rest

    def as_pair(self) -> tuple[str, str]:
        return (self.prefix, self.rest)


def format_question(question: str, choices: Sequence[str] | None = None) -> str:
    """The question text, with lettered choices when there are any."""
    if not choices:
        return question.strip()
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    if len(choices) > len(letters):
        raise ValueError(f"at most {len(letters)} choices are supported, got {len(choices)}")
    lines = [f"{letters[i]}. {c}" for i, c in enumerate(choices)]
    return question.strip() + "\n" + "\n".join(lines)


def reasoning_prompt(
    agent,
    question: str,
    *,
    choices: Sequence[str] | None = None,
    images: Sequence = (),
    template: PromptTemplate | None = None,
) -> PromptParts:
    """The small model's prompt: the question and the step-by-step instruction."""
    template = template or PromptTemplate()
    user = f"{format_question(question, choices)}\n\n{template.reasoning_instruction}"
    return PromptParts(agent.format_chat(user, n_images=len(images)), "", list(images))


def transfer_prompt(
    agent,
    question: str,
    reasoning: str | None,
    *,
    choices: Sequence[str] | None = None,
    images: Sequence = (),
    template: PromptTemplate | None = None,
) -> PromptParts:
    """The large model's prompt holding ``reasoning`` (None or empty: the direct-answer prompt).

    The gold answer or the large model's answer follows ``rest`` directly; ``rest`` ends with the
    template's answer prefix.
    """
    template = template or PromptTemplate()
    user = f"{format_question(question, choices)}{_SLOT}\n\n{template.direct_instruction}"
    rendered = agent.format_chat(user, n_images=len(images))
    if rendered.count(_SLOT) != 1:
        raise RuntimeError(f"{agent.name}: the chat template altered the prompt; cannot place the transfer")
    prefix, after = rendered.split(_SLOT)
    reasoning = (reasoning or "").strip()
    hint = f"\n\n{template.transfer_header}\n{reasoning}" if reasoning else ""
    return PromptParts(prefix, f"{hint}{after}{template.answer_prefix}", list(images))


def answer_target(gold: str) -> str:
    """The string scored after the answer prefix: the gold answer, one space before it."""
    gold = str(gold).strip()
    if not gold:
        raise ValueError("the gold answer is empty")
    return " " + gold
