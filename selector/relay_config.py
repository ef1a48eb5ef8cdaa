"""What a relay is configured with (``RelayConfig``) and what it returns (``RelayResult`` with
per-stage ``StageStats``); the ``Relay`` itself is in ``selector.relay``, which re-exports these."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

from .agent_types import DTYPES
from .baselines import check_selector_name
from .data import Example
from .dtype_choice import FASTEST, fastest_dtype, report
from .early_stop import check_early_stop
from .gating import check_gate
from .selection import DEFAULT_BUDGETS, Budget, BudgetKind, check_budget

__all__ = [
    "DTYPE_CHOICES",
    "GRANULARITY_CHOICES",
    "STAGES",
    "Granularity",
    "RelayConfig",
    "RelayResult",
    "StageStats",
    "check_images",
]

DTYPE_CHOICES = (*DTYPES, "auto", FASTEST)
STAGES = ("large_direct", "small_reasoning", "selection", "large_prefill", "large_decode")
Granularity = Literal["token", "word", "sentence", "auto"]
GRANULARITY_CHOICES: tuple[str, ...] = get_args(Granularity)


@dataclass
class RelayConfig:
    """The relay: which models, which selector, how much reasoning to transfer, and when."""

    small: str | None = None
    """The small (reasoning) model: a local folder or hub id (not needed with gate 'never')."""
    large: str | None = None
    """The large (answering) model: a local folder or hub id."""
    selector: str = "selfinfo"
    """A trained selector checkpoint folder, or a baseline: none, full, random, first, last, selfinfo, oracle."""
    budget: float | None = None
    """Budget value: a ratio in (0, 1], a token count >= 1, k >= 0 units, or a probability in [0, 1]
    (null: the kind's default, ratio 0.25, tokens 64, topk 3, threshold 0.5)."""
    budget_kind: BudgetKind = "ratio"
    """What the budget counts: ratio (of the reasoning's large-model tokens), tokens, topk, or threshold."""
    gate: str = "agreement"
    """When to transfer: never, always, confidence (direct-answer probability < tau), agreement, or
    small_confidence (the small model's probability of its own answer >= small_tau)."""
    tau: float = 0.5
    """The confidence gate's threshold on the large model's direct-answer probability."""
    small_tau: float = 0.9
    """The small_confidence gate's threshold on the small model's probability of its stated answer."""
    granularity: Granularity = "auto"
    """Reasoning units: token, word, sentence, or auto (a trained selector's own units; sentence for a
    baseline). A trained selector refuses units other than those it was trained on."""
    force_numbers: bool = False
    """Always keep units that hold a number (counted against the budget)."""
    force_last: bool = False
    """Always keep the reasoning's last unit (counted against the budget)."""
    keep_answer_line: bool = False
    """Transfer the small model's final answer line too (by default only its reasoning is transferred)."""
    reason_tokens: int = 256
    """Cap on the small model's reasoning tokens."""
    answer_tokens: int = 16
    """Cap on the large model's answer tokens (its answer is the first line)."""
    batch_size: int = 8
    """Questions per batch (1 gives exact per-question latency)."""
    parallel: bool = False
    """Account the small model as running concurrently with the large direct answer (see module doc)."""
    concurrent: bool = False
    """Really run the large direct answer and the small reasoning at the same time; latency = wall time."""
    large_threads: int = 0
    """concurrent: torch threads of the large model's worker (0 = half the process's threads, rounded up)."""
    small_threads: int = 0
    """concurrent: torch threads of the small model's worker (0 = the other half, at least 1)."""
    handoff_threads: bool = True
    """concurrent: once the large model's direct answer is in, the small model's worker takes every
    thread of the process (the large worker is idle until the transfer), instead of keeping its share."""
    early_stop: str = "none"
    """Stop the small model's reasoning early: none, confidence, agreement, selector, or head
    (selector.early_stop)."""
    stop_threshold: float = 0.9
    """Early stop: the trial answer's minimum probability (confidence; agreement too, 0 = any agreement),
    or the stop head's minimum probability that the answer is already stated (head)."""
    stop_head: str | None = None
    """Early stop 'head': a stop-head folder or hub id (``scripts/train_stop_head.py``) fitted on this
    small model's hidden states."""
    check_every: int = 1
    """Early stop: check at every n-th unit (sentence) boundary."""
    trial_tokens: int = 8
    """Early stop: cap on the small model's trial-answer tokens per check."""
    stop_cue: str = "\nAnswer:"
    """Early stop: the text fed after the reasoning so far to read the small model's trial answer."""
    dtype: str = "float32"
    """Model dtype: float32, bfloat16, float16, auto (the checkpoint's own) or fastest (measured on this
    machine once, then cached: selector.dtype_choice; the large model for answering, the small one for
    reasoning). The large model's, and the small one's unless ``small_dtype`` says otherwise."""
    small_dtype: str | None = None
    """The small model's dtype where it should differ from ``dtype`` (None: the same). E.g. a float32
    small model beside a bfloat16 large one: the hidden states and self-information a selector reads
    stay as it was trained on, while the large model's prefill-heavy scoring and answers run at
    bfloat16 speed on CPUs with bfloat16 units (AVX512-BF16, AMX) and on GPUs."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto."""
    seed: int = 0
    """Seed of the random selector."""
    selfinfo_reduce: str = "sum"
    """selfinfo selector: sum (Selective Context) or mean of token self-information per unit."""
    score_gold: bool = False
    """Also score the gold answer's log-prob after the final prompt (extra pass, not in latency)."""
    reuse_prompt: bool = True
    """Batch 1, text only: the large model's answer from a transfer resumes from the KV cache of its
    direct-answer prompt (the system message and the question are the same tokens), so only the
    transfer and the instructions after it are prefilled. Answers equal a full prefill's up to float
    rounding; off: every prompt is prefilled whole."""

    def __post_init__(self) -> None:
        for name in ("dtype", "small_dtype"):
            value = getattr(self, name)
            if value is not None and value not in DTYPE_CHOICES:
                raise ValueError(f"{name} must be one of {list(DTYPE_CHOICES)}, got {value!r}")
        check_budget(self.budget_kind, self.budget_value)
        check_gate(self.gate, self.tau, self.small_tau)
        check_selector_name(self.selector)
        if self.granularity not in GRANULARITY_CHOICES:
            raise ValueError(
                f"unknown granularity {self.granularity!r}; expected one of {GRANULARITY_CHOICES}"
            )
        for name in ("reason_tokens", "answer_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("large_threads", "small_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0 (0 = automatic), got {value!r}")
        check_early_stop(
            self.early_stop, self.stop_threshold, self.check_every, self.trial_tokens, self.stop_cue
        )
        if (self.early_stop == "head") != bool(self.stop_head):
            raise ValueError(
                "early_stop 'head' needs stop_head (a stop-head folder)"
                if self.early_stop == "head"
                else f"stop_head is only read with early_stop 'head', not {self.early_stop!r}"
            )
        if self.early_stop == "agreement" and self.gate == "always":
            raise ValueError(
                "early_stop 'agreement' needs the large model's direct answer: not with gate 'always'"
            )
        if self.selfinfo_reduce not in ("sum", "mean"):
            raise ValueError(f"selfinfo_reduce must be 'sum' or 'mean', got {self.selfinfo_reduce!r}")
        for name in ("small", "large"):
            value = getattr(self, name)
            if value is not None and not str(value).strip():
                raise ValueError(f"{name} is empty: give a model folder or hub id")

    @property
    def budget_value(self) -> float:
        """The budget in force: ``budget``, or the kind's default when it is None."""
        return DEFAULT_BUDGETS.get(self.budget_kind, 0.0) if self.budget is None else self.budget

    @property
    def budget_spec(self) -> Budget:
        value = self.budget_value
        return Budget(self.budget_kind, value if self.budget_kind in ("ratio", "threshold") else int(value))

    def load_kwargs(self, role: Literal["small", "large"]) -> dict:
        """``Agent.from_pretrained`` options of the small or the large model."""
        dtype = self.small_dtype if role == "small" and self.small_dtype is not None else self.dtype
        return {"dtype": dtype, "device": self.device}

    def resolve_dtypes(
        self, log: Callable[[str], None] | None = report, roles: Sequence[str] = ("large", "small")
    ) -> RelayConfig:
        """This config with ``fastest`` replaced by the dtype measured (or cached) on this machine: the large
        model's for answering, the small model's for reasoning (of ``roles``: models loaded here, not behind
        an endpoint). Other values are returned as they are."""

        def measured(role: str, path: str | None, workload: str) -> str | None:
            if path is None or role not in roles or self.load_kwargs(role)["dtype"] != FASTEST:
                return None
            choice = fastest_dtype(path, workload, device=self.device, log=log)
            if log is not None:
                log(f"dtype fastest, {role} model {path}: {choice.summary()}")
            return choice.dtype

        large_dtype = measured("large", self.large, "answer") or self.dtype
        small_dtype = measured("small", self.small, "reason") or self.small_dtype
        if large_dtype == self.dtype and small_dtype == self.small_dtype:
            return self
        return replace(self, dtype=large_dtype, small_dtype=small_dtype)

    def selector_kwargs(self, name: str | None = None) -> dict:
        """Constructor options for the baseline ``name`` (default: this config's selector)."""
        options = {"random": {"seed": self.seed}, "selfinfo": {"reduce": self.selfinfo_reduce}}
        return options.get(self.selector if name is None else name, {})


@dataclass
class StageStats:
    """One stage of one question: wall seconds and the tokens that went in and came out."""

    seconds: float = 0.0
    prompt_tokens: int = 0
    new_tokens: int = 0
    cached_tokens: int = 0
    """Of ``prompt_tokens``, those resumed from an earlier prompt's KV cache instead of prefilled."""


@dataclass
class RelayResult:
    """What the relay did for one question."""

    id: str
    answer: str | None
    """The final answer (first line of the large model's last generation)."""
    path: str
    """'direct' (the large model's direct answer) or 'transfer'."""
    output: str
    """The large model's raw final generation."""
    direct_answer: str | None = None
    direct_prob: float | None = None
    """exp(mean token log-prob) of the direct answer line (None when not computed)."""
    reasoning: str | None = None
    """The small model's reasoning (None when it did not run)."""
    small_answer: str | None = None
    small_prob: float | None = None
    """How sure the small model was of its answer where its reasoning states it (or of its early-stop
    trial answer); None when it did not run or stated none."""
    transfer_text: str | None = None
    """The kept reasoning sent to the large model (None on the direct path)."""
    transfer_tokens: int = 0
    """Large-model tokens of the kept units."""
    reasoning_tokens: int = 0
    """Large-model tokens of all the reasoning's units."""
    stages: dict[str, StageStats] = field(default_factory=dict)
    """Per stage that ran (names in STAGES)."""
    latency_s: float = 0.0
    """End-to-end seconds under the config's accounting (sequential or parallel)."""
    gold: str | None = None
    correct: bool | None = None
    """Final answer matches the gold (None without a gold answer)."""
    leaked: bool | None = None
    """The transfer text states the gold answer (False on the direct path; None without gold)."""
    gold_logprob: float | None = None
    """log p_large(gold | final prompt), with score_gold."""
    small_finish: str | None = None
    """How the small model's reasoning ended: stop, length, early_stop, or cancelled (None: it did not run)."""
    stop_checks: int = 0
    """Early-stop checks run on the small model's reasoning (their seconds are inside its stage)."""
    small_threads_end: int | None = None
    """Torch threads the small model's worker had when its reasoning ended (streamed reasoning only)."""
    selector_fallback: bool = False
    """The trained selector's novelty fallback handled the reasoning (a trace unlike its training data)."""

    def to_record(self) -> dict:
        """A flat JSON-friendly dict (stage stats as nested dicts)."""
        return asdict(self)


def check_images(examples: Sequence[Example]) -> None:
    """Fail before any model runs when an example's image file is missing (the error names it)."""
    for ex in examples:
        for image in ex.images:
            if isinstance(image, (str, os.PathLike)) and not Path(image).exists():
                raise FileNotFoundError(f"image file {str(image)!r} of example {ex.id!r} does not exist")
