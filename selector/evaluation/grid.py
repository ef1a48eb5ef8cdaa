"""The evaluation grid: ``EvalConfig`` (what `tokenrelay eval` runs) and the conditions it expands to."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..baselines import BASELINES
from ..data import ColumnMap
from ..gating import GATES
from ..relay import RelayConfig
from ..remote import RemoteConfig

__all__ = [
    "CONDITIONS",
    "FIXED_SELECTORS",
    "RELAY_GATES",
    "Condition",
    "EvalConfig",
    "build_grid",
    "selector_labels",
]

CONDITIONS = ("large_direct", "large_reasoning", "small_reasoning", "relay")
RELAY_GATES = ("always", "confidence", "agreement", "small_confidence")
FIXED_SELECTORS = ("none", "full")
"""Baselines that mean one fixed transfer whatever the budget: run once per gate."""


# --------------------------------------------------------------------------- config


@dataclass
class EvalConfig:
    """`tokenrelay eval`: every condition of a grid over a dataset, with a cache of model outputs."""

    data: str | None = None
    """Questions with gold answers: a JSONL / CSV / Parquet file, a save_to_disk folder or a hub id."""
    columns: ColumnMap = field(default_factory=ColumnMap)
    """Column names in the data."""
    split: str | None = None
    """Split to read from a DatasetDict folder or hub dataset."""
    limit: int | None = None
    """Use only the first N examples."""
    relay: RelayConfig = field(default_factory=RelayConfig)
    """What every relay cell shares (models, budget_kind, tau, units, tokens, batch size, device, ...);
    each cell takes its selector, budget and gate from selectors, budgets and gates. relay.small is
    needed for small_reasoning and relay; relay.large always (or large_endpoint.tokenizer)."""
    small_endpoint: RemoteConfig | None = None
    """Run the small model behind an OpenAI-compatible engine (vLLM, `tokenrelay serve`); relay.small (or
    small_endpoint.tokenizer) is then the local folder of its tokenizer. Not with the 'hidden' selector."""
    large_endpoint: RemoteConfig | None = None
    """Run the large model behind an OpenAI-compatible engine; its gold-answer log-probs come from the
    engine's prompt log-probs (vLLM's prompt_logprobs). relay.large: its tokenizer folder."""
    out: str = "runs/eval"
    """Output folder: results.md/.csv/.json, records.jsonl, plots, and cache/ (model outputs, reused)."""
    selectors: list[str] = field(
        default_factory=lambda: ["none", "full", "random", "first", "last", "selfinfo"]
    )
    """Relay selectors: trained checkpoint folders and/or none, full, random, first, last, selfinfo, oracle."""
    budgets: list[float] = field(default_factory=lambda: [0.1, 0.25, 0.5])
    """Budgets for every selector but none/full, counted as relay.budget_kind says (ratios by default)."""
    gates: list[str] = field(default_factory=lambda: ["always"])
    """Relay gates: always, confidence, agreement, small_confidence ('never' is the large_direct condition)."""
    conditions: list[str] = field(default_factory=lambda: list(CONDITIONS))
    """Conditions to run: large_direct, large_reasoning (its own step-by-step answer),
    small_reasoning (the small model's own answer), relay (the selector x budget x gate grid)."""
    large_reason_tokens: int = 512
    """Cap on the large model's own reasoning tokens (large_reasoning condition)."""
    gain_min_nats: float = 1.0
    """Gain recovered is averaged over problems where f(all) - f(none) is at least this many nats."""
    plot: bool = True
    """Write the PNG plots (accuracy vs transferred tokens, accuracy vs latency with the Pareto front)."""

    def __post_init__(self) -> None:
        if not self.data or not str(self.data).strip():
            raise ValueError("--data is required: questions with gold answers")
        large_tokenizer = self.large_endpoint is not None and self.large_endpoint.tokenizer is not None
        if not self.relay.large and not large_tokenizer:
            raise ValueError("--relay.large is required (the answering model, or large_endpoint.tokenizer)")
        if not str(self.out).strip():
            raise ValueError("--out is empty")
        for name, default, why in _NOT_IN_GRID:
            if getattr(self.relay, name) != default:
                raise ValueError(f"eval does not take relay.{name} = {getattr(self.relay, name)!r}: {why}")
        self.conditions = _unique(self.conditions, "conditions")
        self.gates = _unique(self.gates, "gates")
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown:
            raise ValueError(f"unknown condition(s) {unknown}; expected some of {CONDITIONS}")
        bad_gates = [g for g in self.gates if g not in GATES]
        if bad_gates:
            raise ValueError(f"unknown gate(s) {bad_gates}; expected some of {RELAY_GATES} (or never)")
        if "never" in self.gates:  # 'never' is the large model answering directly
            self.gates = [g for g in self.gates if g != "never"]
            if "large_direct" not in self.conditions:
                self.conditions = ["large_direct", *self.conditions]
        if not self.conditions:
            raise ValueError("no conditions to run")
        if "relay" in self.conditions:
            if not self.gates:
                raise ValueError(f"the relay condition needs at least one gate of {RELAY_GATES}")
            self.selectors = _unique([str(s) for s in self.selectors], "selectors")
            if not self.selectors:
                raise ValueError("the relay condition needs at least one selector")
            if any(s not in FIXED_SELECTORS for s in self.selectors) and not self.budgets:
                raise ValueError("give at least one budget for the selectors other than none/full")
        self.budgets = sorted(set(self.budgets))
        # Every cell's relay is checked where relay options are defined: RelayConfig.__post_init__.
        for gate in self.gates or ["always"]:
            for s in self.selectors if "relay" in self.conditions else ["full"]:
                for b in self.budgets or [None]:
                    self.relay_config(s, gate, b)
        if self.large_reason_tokens < 1:
            raise ValueError(f"large_reason_tokens must be >= 1, got {self.large_reason_tokens}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if not math.isfinite(self.gain_min_nats) or self.gain_min_nats <= 0:
            raise ValueError(f"gain_min_nats must be > 0, got {self.gain_min_nats}")
        small_tokenizer = self.small_endpoint is not None and self.small_endpoint.tokenizer is not None
        if self.needs_small and not self.relay.small and not small_tokenizer:
            raise ValueError("--relay.small is required for the small_reasoning and relay conditions")

    @property
    def needs_small(self) -> bool:
        return "small_reasoning" in self.conditions or "relay" in self.conditions

    def relay_config(self, selector: str, gate: str, budget: float | None) -> RelayConfig:
        """The relay's config for one grid cell (gold answers always scored); ``budget`` None: the
        whole reasoning (none / full)."""
        kind = "ratio" if budget is None else self.relay.budget_kind
        return replace(
            self.relay,
            selector=selector,
            budget=1.0 if budget is None else budget,
            budget_kind=kind,
            gate=gate,
            score_gold=True,
        )


_NOT_IN_GRID = (
    ("budget", None, "a grid cell's budget comes from budgets (counted as relay.budget_kind says)"),
    ("keep_answer_line", False, "the grid transfers the reasoning alone, as the labels measure it"),
    ("concurrent", False, "eval's latency is the sum of cached stage times (scripts.bench_latency measures it live)"),
    ("early_stop", "none", "eval caches whole reasonings (scripts.bench_latency measures early stopping)"),
)  # fmt: skip
"""Relay options a grid cannot honour: eval refuses them rather than ignore them."""


def _unique(values: Sequence, what: str) -> list:
    values = list(values or [])
    dupes = sorted({str(v) for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"{what} lists {dupes} more than once")
    return values


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Condition:
    """One row of the results: what answered, and for the relay with which selector, budget, gate."""

    kind: str
    """large_direct, large_reasoning, small_reasoning, or relay."""
    selector: str | None = None
    """The selector as configured (baseline name or checkpoint folder)."""
    label: str | None = None
    """Short selector name for tables (a checkpoint's folder name)."""
    budget: float | None = None
    gate: str | None = None
    budget_kind: str = "ratio"

    @property
    def id(self) -> str:
        if self.kind != "relay":
            return self.kind
        budget = "" if self.budget is None else f"@{self.budget:g}"
        return f"relay:{self.label}{budget}:{self.gate}"

    @property
    def title(self) -> str:
        if self.kind != "relay":
            return self.kind.replace("_", " ")
        if self.budget is None:
            return f"relay {self.label} ({self.gate})"
        budget = (
            f"{self.budget:.0%}" if self.budget_kind == "ratio" else f"{self.budget_kind} {self.budget:g}"
        )
        return f"relay {self.label} @ {budget} ({self.gate})"


def selector_labels(selectors: Sequence[str]) -> dict[str, str]:
    """Short unique names: baselines by name, checkpoints by folder name (the path when they clash)."""
    labels = {}
    for s in selectors:
        labels[s] = s if s in BASELINES else Path(s).name or s
    counts = Counter(labels.values())
    return {
        s: (s if counts[lab] > 1 or (lab in BASELINES and s not in BASELINES) else lab)
        for s, lab in labels.items()
    }


def build_grid(config: EvalConfig) -> list[Condition]:
    """The conditions in table order: baselines of the models, then the relay grid."""
    grid = [
        Condition(kind)
        for kind in ("large_direct", "large_reasoning", "small_reasoning")
        if kind in config.conditions
    ]
    if "relay" in config.conditions:
        labels = selector_labels(config.selectors)
        for gate in config.gates:
            for s in config.selectors:
                budgets = [None] if s in FIXED_SELECTORS else config.budgets
                grid += [Condition("relay", s, labels[s], b, gate, config.relay.budget_kind) for b in budgets]
    return grid
