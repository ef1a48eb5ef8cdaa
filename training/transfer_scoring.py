"""What labeling scores: one trace's inputs and results, and f(S) — the large model's gold-answer
log-prob given the kept units S — batched with the shared prefix encoded once.

The labelers (``training.labelers``) decide which masks S to score and turn f into unit labels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, MutableMapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

from selector.prompts import PromptTemplate, answer_target, transfer_prompt
from selector.remote import RemoteAgent
from selector.units import Unit, join_units, split_units

__all__ = ["LabelInput", "LabelResult", "TransferScorer", "count_forwards", "mask_key", "score_passes"]


# --------------------------------------------------------------------------- data


@dataclass
class LabelInput:
    """One trace to label: the question, the reasoning cut into units, and the gold answer."""

    id: str
    question: str
    reasoning: str
    gold: str
    units: list[Unit]
    choices: list[str] | None = None
    images: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.gold is None or not str(self.gold).strip():
            raise ValueError(f"trace {self.id!r}: the gold answer is empty; cannot label it")
        if not self.units:
            raise ValueError(f"trace {self.id!r}: the reasoning has no units to label")

    @classmethod
    def from_trace(cls, record: Mapping, granularity: str = "sentence", tokenizer=None) -> LabelInput:
        """From a trace record; ``tokenizer`` (the small model's, as in the relay) cuts token units."""
        reasoning = record.get("reasoning") or ""
        return cls(
            id=str(record["id"]),
            question=record["question"],
            reasoning=reasoning,
            gold=None if record.get("answer") is None else str(record["answer"]),
            units=split_units(reasoning, granularity, tokenizer=tokenizer),
            choices=list(record["choices"]) if record.get("choices") else None,
            images=list(record.get("images") or []),
        )

    @property
    def target(self) -> str:
        return answer_target(self.gold)


@dataclass
class LabelResult:
    """Per-unit labels of one trace and what they cost."""

    scores: list[float]
    """Contribution of each unit to f (higher = keep first)."""
    f_all: float
    """f with every unit kept (the full transfer)."""
    f_none: float
    """f with no unit kept (the direct-answer prompt)."""
    method: str
    fit_r2: float | None = None
    """Ablation only: cross-validated R^2 of the surrogate on held-out masks (None: too few masks,
    or f constant over them)."""
    forward_passes: int = 0
    """Large-model forward passes actually run (cached f values cost none)."""
    seconds: float = 0.0
    """Wall time actually spent."""
    nominal_passes: int = 0
    """Forward passes an uncached run of this labeler needs (for comparing labelers)."""
    cost_s: float = 0.0
    """Wall time an uncached run would take, from the recorded cost of each f value."""
    reliability: float | None = None
    """How far the labels can be trusted to rank: for ablation, the split-half Spearman between the
    weights fitted on two disjoint halves of the random masks; for a deterministic labeler, its
    Spearman with a reference labeler when one was run (``reference_agreement``); else None."""
    reliability_kind: str | None = None
    """What ``reliability`` measures: 'split_half', 'vs_<reference method>', or None."""
    reliability_top: float | None = None
    """The same comparison (same kind) on the units that matter: the share of the top quarter of
    units that both sides put in their top quarter (``label_math.top_agreement``); None where
    ``reliability`` is None or there are fewer than 2 units."""


# --------------------------------------------------------------------------- scoring f(S)


def score_passes(n_prompts: int, batch_size: int, reuse_prefix: bool = True) -> int:
    """Forward passes ``Agent.score`` runs, at most, for ``n_prompts`` sharing one prefix.

    With prefix reuse: the prefix once, then per batch of rests one pass, plus (batches of more
    than one rest) one more for the start those rests share, when they share one.
    """
    if n_prompts == 0:
        return 0
    prefix = 1 if reuse_prefix and n_prompts > 1 else 0
    per_batch = 2 if reuse_prefix and n_prompts > 1 and batch_size > 1 else 1
    return prefix + per_batch * math.ceil(n_prompts / batch_size)


@contextmanager
def count_forwards(model: torch.nn.Module):
    """Count top-level forward calls of ``model`` inside the block."""
    counter = [0]
    handle = model.register_forward_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
    try:
        yield counter
    finally:
        handle.remove()


def mask_key(mask: Sequence[bool]) -> str:
    return "".join("1" if bool(k) else "0" for k in mask)


class TransferScorer:
    """f(S) for one trace: masks scored in one batched call, the shared prefix encoded once.

    ``cache`` maps a mask key ('0110...') to ``(f, seconds)``; values found there are not scored
    again (the benchmark keeps one on disk), and duplicate masks are scored once.
    """

    def __init__(
        self,
        agent,
        item: LabelInput,
        *,
        batch_size: int = 16,
        reuse_prefix: bool = True,
        template: PromptTemplate | None = None,
        cache: MutableMapping[str, tuple[float, float]] | None = None,
    ):
        self.agent = agent
        self.item = item
        self.batch_size = batch_size
        self.reuse_prefix = reuse_prefix
        self.template = template
        self.cache = {} if cache is None else cache
        self.forward_passes = 0
        self.seconds = 0.0
        self.nominal_passes = 0
        self.cost_s = 0.0

    def prompt(self, mask: Sequence[bool]):
        item = self.item
        text = join_units(item.reasoning, item.units, [bool(k) for k in mask])
        return transfer_prompt(
            self.agent, item.question, text, choices=item.choices, images=item.images, template=self.template
        )

    def __call__(self, masks: Sequence[Sequence[bool]], names: Sequence[str] | None = None) -> list[float]:
        n = len(self.item.units)
        names = list(names) if names is not None else [f"mask {k}" for k in range(len(masks))]
        keys = []
        for k, mask in enumerate(masks):
            if len(mask) != n:
                raise ValueError(f"trace {self.item.id!r}: {names[k]} has {len(mask)} entries for {n} units")
            keys.append(mask_key(mask))
        first = {}  # key -> first request index
        for k, key in enumerate(keys):
            first.setdefault(key, k)
        todo = [key for key in first if key not in self.cache]
        if todo:
            prompts = [self.prompt([c == "1" for c in key]).as_pair() for key in todo]
            # Similar lengths share a batch when rows are padded (no prefix reuse, or a cache that
            # cannot be cropped); with prefix reuse Agent.score walks the prompts in token order.
            order = sorted(range(len(todo)), key=lambda k: (len(prompts[k][1]), k))
            todo, prompts = [todo[k] for k in order], [prompts[k] for k in order]
            images = [list(self.item.images)] * len(todo)
            start = time.perf_counter()
            if isinstance(self.agent, RemoteAgent):  # no weights here: count the engine's requests
                counting = nullcontext([math.ceil(len(todo) / self.batch_size)])
            else:
                counting = count_forwards(self.agent.model)
            with counting as counter:
                results = self.agent.score(
                    prompts,
                    self.item.target,
                    images=images,
                    batch_size=self.batch_size,
                    reuse_prefix=self.reuse_prefix,
                )
            spent = time.perf_counter() - start
            self.forward_passes += counter[0]
            self.seconds += spent
            for key, res in zip(todo, results):
                if not math.isfinite(res.logprob):
                    k = first[key]
                    raise ValueError(
                        f"trace {self.item.id!r}: log-probability of the gold answer is {res.logprob} "
                        f"for mask #{k} ({names[k]}, {key.count('1')} of {n} units kept)"
                    )
                self.cache[key] = (float(res.logprob), spent / len(todo))
        self.nominal_passes += score_passes(len(first), self.batch_size, self.reuse_prefix)
        self.cost_s += sum(self.cache[key][1] for key in first)
        return [self.cache[key][0] for key in keys]
