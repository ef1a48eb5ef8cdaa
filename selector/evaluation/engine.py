"""The evaluation harness behind `tokenrelay eval`: a grid of conditions over a dataset, cached.

Conditions: the large model's direct answer; the large model's own step-by-step answer; the small
model's own answer from its reasoning; and the relay for each selector x budget x gate (``none``
and ``full`` take no budget, so they run once per gate). Relay conditions run through
``selector.relay.Relay`` itself (gating, selection, transfer prompt, latency accounting and
scoring are the relay's code, not a copy); only the models and the selection stage are wrapped
by a persistent cache:

- ``selector.evaluation.cache.CachedAgent`` wraps an ``Agent``: ``generate`` and ``score`` answer
  from ``out/cache`` what they have seen and call the model only for the rest. Each entry keeps
  the wall times measured when it was computed, so the latency of a condition served from the
  cache is the latency that was measured (stage times of batched generation are the batch's wall
  time, as in the relay: use ``batch_size: 1`` for exact per-question latency).
- The selection stage (a selector's transfer of one reasoning at one budget, with its measured
  seconds) is cached the same way, so a re-run reports the same selection time.

An interrupted run loses at most the batch in flight, and a re-run or a grown grid recomputes
nothing it has. Metrics, tables and plots are in ``selector.evaluation.report``.

Gold-answer log-probs: f(none) is the large model's log p(gold) after the direct prompt, f(all)
after the relay's full transfer (the ``full`` selector's), f(kept) after the condition's final prompt. "Gain recovered" is the mean
of (f(kept) - f(none)) / (f(all) - f(none)) over the problems where f(all) - f(none) >= 1 nat.
The ``oracle`` baseline scores each unit by its measured gain alone, f({unit}) - f(none) (one
extra large-model scoring per unit, cached; not counted in latency): an upper reference.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..agents import Agent, Generation
from ..answers import answers_match, extract_answer
from ..baselines import BASELINES, check_selector_name, load_selector
from ..data import ColumnMap, Example, load_examples
from ..gating import GATES, check_gate
from ..progress import progress_bar
from ..prompts import answer_target
from ..reasoning import ReasoningView, UnitScorer
from ..relay import Relay, RelayConfig, RelayResult, StageStats, check_images
from ..remote import HIDDEN_SELECTOR_ERROR, RemoteAgent, RemoteConfig
from ..selection import Transfer, check_budget
from ..units import GRANULARITIES
from .cache import CachedAgent, OutputCache, files_fingerprint, image_keys
from .paired import paired_vs_references
from .report import condition_metrics, markdown_table, pareto_front, write_outputs

__all__ = [
    "CONDITIONS",
    "CachedAgent",
    "Condition",
    "EvalConfig",
    "OutputCache",
    "build_grid",
    "condition_metrics",
    "markdown_table",
    "pareto_front",
    "run_eval",
    "write_outputs",
]

CONDITIONS = ("large_direct", "large_reasoning", "small_reasoning", "relay")
RELAY_GATES = ("always", "confidence", "agreement")
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
    small: str | None = None
    """The small (reasoning) model: a local folder or hub id (needed for small_reasoning and relay)."""
    large: str | None = None
    """The large (answering) model: a local folder or hub id."""
    small_endpoint: RemoteConfig | None = None
    """Run the small model behind an OpenAI-compatible engine (vLLM, `tokenrelay serve`); ``small`` (or
    small_endpoint.tokenizer) is then the local folder of its tokenizer. Not with the 'hidden' selector."""
    large_endpoint: RemoteConfig | None = None
    """Run the large model behind an OpenAI-compatible engine; its gold-answer log-probs come from the
    engine's prompt log-probs (vLLM's prompt_logprobs). ``large``: its tokenizer folder."""
    out: str = "runs/eval"
    """Output folder: results.md/.csv/.json, records.jsonl, plots, and cache/ (model outputs, reused)."""
    selectors: list[str] = field(
        default_factory=lambda: ["none", "full", "random", "first", "last", "selfinfo"]
    )
    """Relay selectors: trained checkpoint folders and/or none, full, random, first, last, selfinfo, oracle."""
    budgets: list[float] = field(default_factory=lambda: [0.1, 0.25, 0.5])
    """Budgets for every selector but none/full (ratios of the reasoning's large-model tokens by default)."""
    budget_kind: str = "ratio"
    """What the budgets count: ratio, tokens, topk, or threshold."""
    gates: list[str] = field(default_factory=lambda: ["always"])
    """Relay gates: always, confidence, agreement ('never' is the large_direct condition)."""
    tau: float = 0.5
    """The confidence gate's threshold on the large model's direct-answer probability."""
    conditions: list[str] = field(default_factory=lambda: list(CONDITIONS))
    """Conditions to run: large_direct, large_reasoning (its own step-by-step answer),
    small_reasoning (the small model's own answer), relay (the selector x budget x gate grid)."""
    granularity: str = "sentence"
    """Units for baseline selectors: token, word, or sentence (a trained selector uses its own)."""
    force_numbers: bool = False
    """Always keep units that hold a number (counted against the budget)."""
    force_last: bool = False
    """Always keep the reasoning's last unit (counted against the budget)."""
    selfinfo_reduce: str = "sum"
    """selfinfo selector: sum (Selective Context) or mean of token self-information per unit."""
    parallel: bool = False
    """Latency as if the small model ran alongside the large direct answer (see selector.relay)."""
    reason_tokens: int = 256
    """Cap on the small model's reasoning tokens."""
    answer_tokens: int = 16
    """Cap on the large model's answer tokens (its answer is the first line)."""
    large_reason_tokens: int = 512
    """Cap on the large model's own reasoning tokens (large_reasoning condition)."""
    batch_size: int = 8
    """Questions per batch (stage times are the batch's wall time: 1 gives exact per-question latency)."""
    gain_min_nats: float = 1.0
    """Gain recovered is averaged over problems where f(all) - f(none) is at least this many nats."""
    dtype: str = "float32"
    """Model dtype: float32, bfloat16, float16 or auto."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto."""
    seed: int = 0
    """Seed of the random selector."""
    plot: bool = True
    """Write the PNG plots (accuracy vs transferred tokens, accuracy vs latency with the Pareto front)."""

    def __post_init__(self) -> None:
        if not self.data or not str(self.data).strip():
            raise ValueError("--data is required: questions with gold answers")
        large_tokenizer = self.large_endpoint is not None and self.large_endpoint.tokenizer is not None
        if (not self.large or not str(self.large).strip()) and not large_tokenizer:
            raise ValueError("--large is required (the answering model, or large_endpoint.tokenizer)")
        if not str(self.out).strip():
            raise ValueError("--out is empty")
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
        check_gate("confidence", self.tau)
        if not self.conditions:
            raise ValueError("no conditions to run")
        if "relay" in self.conditions:
            if not self.gates:
                raise ValueError(f"the relay condition needs at least one gate of {RELAY_GATES}")
            self.selectors = _unique([str(s) for s in self.selectors], "selectors")
            if not self.selectors:
                raise ValueError("the relay condition needs at least one selector")
            for name in self.selectors:
                check_selector_name(name)
            if any(s not in FIXED_SELECTORS for s in self.selectors) and not self.budgets:
                raise ValueError("give at least one budget for the selectors other than none/full")
        for b in self.budgets:
            check_budget(self.budget_kind, b)
        self.budgets = sorted(set(self.budgets))
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"unknown granularity {self.granularity!r}; expected one of {GRANULARITIES}")
        if self.selfinfo_reduce not in ("sum", "mean"):
            raise ValueError(f"selfinfo_reduce must be 'sum' or 'mean', got {self.selfinfo_reduce!r}")
        for name in ("reason_tokens", "answer_tokens", "large_reason_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if not math.isfinite(self.gain_min_nats) or self.gain_min_nats <= 0:
            raise ValueError(f"gain_min_nats must be > 0, got {self.gain_min_nats}")
        small_tokenizer = self.small_endpoint is not None and self.small_endpoint.tokenizer is not None
        if self.needs_small and (not self.small or not str(self.small).strip()) and not small_tokenizer:
            raise ValueError("--small is required for the small_reasoning and relay conditions")

    @property
    def needs_small(self) -> bool:
        return "small_reasoning" in self.conditions or "relay" in self.conditions

    def relay_config(self, selector: str, gate: str, budget: float | None) -> RelayConfig:
        """The relay's config for one grid cell (gold answers always scored)."""
        return RelayConfig(
            selector=selector,
            budget=1.0 if budget is None else budget,
            budget_kind="ratio" if budget is None else self.budget_kind,
            gate=gate,
            tau=self.tau,
            granularity=self.granularity,
            force_numbers=self.force_numbers,
            force_last=self.force_last,
            reason_tokens=self.reason_tokens,
            answer_tokens=self.answer_tokens,
            batch_size=self.batch_size,
            parallel=self.parallel,
            dtype=self.dtype,
            device=self.device,
            seed=self.seed,
            selfinfo_reduce=self.selfinfo_reduce,
            score_gold=True,
        )


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
                grid += [Condition("relay", s, labels[s], b, gate, config.budget_kind) for b in budgets]
    return grid


def selector_fingerprint(name_or_path: str, config: EvalConfig) -> str:
    """A baseline with its options, or a checkpoint folder by its files' contents."""
    if name_or_path in BASELINES:
        return f"{name_or_path}|{json.dumps(config.relay_config(name_or_path, 'always', None).selector_kwargs())}"
    folder = Path(name_or_path).expanduser().resolve()
    return f"{folder}|{files_fingerprint(folder, ('*.json', '*.safetensors'), content=True)}"


_NOT_SELECTION = ("small", "large", "selector", "budget", "budget_kind", "gate", "tau", "answer_tokens",
                  "batch_size", "parallel", "dtype", "device", "score_gold", "granularity",
                  # how the reasoning was made (its text is keyed), not how it is selected:
                  "concurrent", "large_threads", "small_threads", "early_stop", "stop_threshold",
                  "check_every", "trial_tokens", "stop_cue")  # fmt: skip
"""RelayConfig fields that never change a selection (or are keyed separately)."""


class _EvalRelay(Relay):
    """The relay, with its selection stage cached (transfer + measured seconds) and oracle labels."""

    def __init__(self, small, large, selector, config: RelayConfig, cache: OutputCache, selector_key: str):
        super().__init__(small, large, selector, config)
        self.cache, self.selector_key = cache, selector_key
        self._labels: list[float] | None = None

    def _select_key(self, ex: Example, gen: Generation) -> str:
        # Every relay option that can change a transfer (budget, units, forced keeps, answer line, ...).
        options = {k: v for k, v in asdict(self.config).items() if k not in _NOT_SELECTION}
        return self.cache.key(
            self.selector_key, "select", str(self.budget), self.granularity, options,
            self.small.model_key, self.large.model_key, ex.question, ex.choices, image_keys(ex.images),
            ex.answer if self.selector.name == "oracle" else None, gen.text,
        )  # fmt: skip

    def select(self, ex: Example, gen: Generation) -> tuple[Transfer, float]:
        key = self._select_key(ex, gen)
        entry = self.cache.get(key, "select")
        if entry is None:
            self._labels = self._oracle_labels(ex, gen) if self.selector.name == "oracle" else None
            try:
                transfer, seconds = super().select(ex, gen)
            finally:
                self._labels = None
            entry = {"key": key, "kind": "select", "selector": self.selector_key,
                     "value": {**asdict(transfer), "seconds": seconds}}  # fmt: skip
            self.cache.put([entry])
        value = dict(entry["value"])
        seconds = value.pop("seconds")
        return Transfer(**value), seconds

    def view(self, ex: Example, gen: Generation) -> ReasoningView:
        view = super().view(ex, gen)
        if self._labels is not None:
            view.labels = self._labels
        return view

    def _oracle_labels(self, ex: Example, gen: Generation) -> list[float]:
        """Each unit's gain alone: f({unit}) - f(none), scored by the large model (cached)."""
        if not ex.answer:
            raise ValueError(f"the oracle selector needs a gold answer; example {ex.id!r} has none")
        units = super().view(ex, gen).units
        parts = [self._prompt(ex, None)] + [self._prompt(ex, u.text) for u in units]
        scores = self.large.score(
            [p.as_pair() for p in parts],
            answer_target(ex.answer),
            images=[p.images for p in parts],
            batch_size=self.config.batch_size,
        )
        return [s.logprob - scores[0].logprob for s in scores[1:]]


# --------------------------------------------------------------------------- running


def _load_agents(config: EvalConfig) -> tuple[Agent | RemoteAgent | None, Agent | RemoteAgent]:
    load = {"dtype": config.dtype, "device": config.device}

    def agent(endpoint: RemoteConfig | None, path: str | None):
        if endpoint is not None:  # as `tokenrelay serve` builds one: the model path is its tokenizer
            return RemoteAgent(replace(endpoint, tokenizer=endpoint.tokenizer or path))
        return Agent.from_pretrained(path, **load)

    large = agent(config.large_endpoint, config.large)
    small = agent(config.small_endpoint, config.small) if config.needs_small else None
    return small, large


def _reasoning_result(ex: Example, gen: Generation, path: str, own_stages: dict) -> RelayResult:
    answer = extract_answer(gen.text)
    r = RelayResult(id=ex.id, answer=answer, path=path, output=gen.text, gold=ex.answer or None)
    r.stages = own_stages
    r.latency_s = sum(s.seconds for s in own_stages.values())
    r.correct = answers_match(answer, ex.answer) if ex.answer else None
    return r


def run_eval(
    config: EvalConfig, agents: tuple[Agent | None, Agent] | None = None, progress: bool = True
) -> dict:
    """Run (or complete from the cache) every condition of the grid; write and return the results.

    ``agents`` = (small, large) already loaded (else loaded from the config).
    """
    started = time.perf_counter()
    examples = load_examples(config.data, config.columns, split=config.split, limit=config.limit)
    if not examples:
        raise ValueError(f"no examples in {config.data!r}")
    check_images(examples)
    grid = build_grid(config)
    selectors: dict[str, UnitScorer] = {}
    if "relay" in config.conditions:
        for s in config.selectors:
            kwargs = config.relay_config(s, "always", None).selector_kwargs(s) if s in BASELINES else {}
            selectors[s] = load_selector(s, **kwargs)
    if agents is None and config.small_endpoint is not None and config.needs_small:
        backbone = {
            s: getattr(getattr(sel, "config", None), "backbone", None) for s, sel in selectors.items()
        }
        hidden = [s for s, b in backbone.items() if b == "hidden"]
        if hidden:  # refused before any model is loaded or called
            raise ValueError(f"selector {hidden[0]!r}: {HIDDEN_SELECTOR_ERROR}")
    small_agent, large_agent = agents if agents is not None else _load_agents(config)
    if config.needs_small and small_agent is None:
        raise ValueError("the small_reasoning and relay conditions need a small model")
    out = Path(config.out)
    cache = OutputCache(out / "cache")
    large = CachedAgent(large_agent, cache)
    small = CachedAgent(small_agent, cache) if small_agent is not None else None

    # Build every relay first: a selector that does not fit the small model fails before any work.
    relays: dict[str, Relay] = {}
    for cond in grid:
        if cond.kind == "relay":
            key = selector_fingerprint(cond.selector, config)
            try:
                relays[cond.id] = _EvalRelay(
                    small, large, selectors[cond.selector], config.relay_config(cond.selector, cond.gate, cond.budget),
                    cache, key,
                )  # fmt: skip
            except ValueError as err:
                raise ValueError(f"selector {cond.selector!r}: {err}") from err
    if small is not None:
        layers = [r.hidden_layer for r in relays.values() if r.hidden_layer is not None]
        small.hidden_layer = layers[0] if layers else None
    base = config.relay_config("full", "always", None)
    direct_relay = Relay(None, large, "none", RelayConfig(**{**asdict(base), "gate": "never"}))
    reasoner = (
        _EvalRelay(small, large, "full", base, cache, selector_fingerprint("full", config))
        if small is not None
        else None
    )
    if small is not None:
        reasoner.hidden_layer = small.hidden_layer

    n, size = len(examples), config.batch_size
    batches = [examples[i : i + size] for i in range(0, n, size)]
    results: dict[str, list[RelayResult]] = {}
    f_none: list[float] = []
    f_all: list[float | None] = [None] * n
    relay_full = any(c.kind == "relay" and c.selector == "full" and c.gate != "never" for c in grid)
    with progress_bar(disable=not progress) as bar:
        # The stages every condition shares: the large direct answer and f(none); the small
        # reasoning and f(all). Served from the cache when present.
        task = bar.add_task("large direct + small reasoning", total=n)
        direct: list[RelayResult] = []
        small_results: list[RelayResult] = []
        for batch in batches:
            direct.extend(direct_relay.run(batch, progress=False))
            if reasoner is not None:
                gens = reasoner.reason(batch)
                for ex, gen in zip(batch, gens):
                    stats = StageStats(gen.prefill_s + gen.decode_s, gen.prompt_tokens, gen.new_tokens)
                    r = _reasoning_result(ex, gen, "small", {"small_reasoning": stats})
                    r.reasoning, r.small_answer = gen.text, r.answer
                    small_results.append(r)
                # f(all): the relay's own full transfer (whatever the relay sends of the reasoning).
                full_parts = [
                    reasoner._prompt(ex, reasoner.select(ex, gen)[0].text) for ex, gen in zip(batch, gens)
                ]
                pairs = [p.as_pair() for p in full_parts]
                golds = [answer_target(ex.answer) for ex in batch]
                images = [p.images for p in full_parts]
                if relay_full:  # the full relay's answer will be wanted too: from the same prefill
                    _, scores = large.answer_and_score(
                        pairs, golds, images=images, max_new_tokens=config.answer_tokens
                    )
                else:
                    scores = large.score(pairs, golds, images=images, batch_size=size)
                start = len(small_results) - len(batch)
                for k, s in enumerate(scores):
                    f_all[start + k] = s.logprob
            bar.advance(task, len(batch))
        f_none = [r.gold_logprob for r in direct]
        if "large_direct" in config.conditions:
            results["large_direct"] = direct
        if "small_reasoning" in config.conditions:
            results["small_reasoning"] = small_results
        if "large_reasoning" in config.conditions:
            task = bar.add_task("large own reasoning", total=n)
            own = Relay(
                large,
                large,
                "full",
                RelayConfig(**{**asdict(base), "reason_tokens": config.large_reason_tokens}),
            )
            rows = []
            for batch in batches:
                for ex, gen in zip(batch, own.reason(batch)):
                    stages = {
                        "large_prefill": StageStats(gen.prefill_s, gen.prompt_tokens, 1),
                        "large_decode": StageStats(gen.decode_s, 0, max(0, gen.new_tokens - 1)),
                    }
                    rows.append(_reasoning_result(ex, gen, "large_reasoning", stages))
                bar.advance(task, len(batch))
            results["large_reasoning"] = rows
        relay_conds = [c for c in grid if c.kind == "relay"]
        task = bar.add_task("relay grid", total=len(relay_conds) * n)
        for cond in relay_conds:
            bar.update(task, description=f"relay grid: {cond.title}")
            rows = []
            for batch in batches:
                rows.extend(relays[cond.id].run(batch, progress=False))
                bar.advance(task, len(batch))
            results[cond.id] = rows

    table = []
    for cond in grid:
        row = {"condition": cond.id, "title": cond.title, "kind": cond.kind, "selector": cond.label,
               "budget": cond.budget, "gate": cond.gate}  # fmt: skip
        row.update(
            condition_metrics(results[cond.id], f_none, f_all, config.gain_min_nats, cond.kind == "relay")
        )
        table.append(row)
    result = {
        "questions": n,
        "data": str(config.data),
        "small": config.small,
        "large": config.large,
        "budget_kind": config.budget_kind,
        "gain_min_nats": config.gain_min_nats,
        "full_helps": sum(
            1 for a, b in zip(f_all, f_none) if a is not None and a - b >= config.gain_min_nats
        ),
        "mean_f_none": statistics.fmean(f_none),
        "mean_f_all": statistics.fmean(f_all) if all(v is not None for v in f_all) else None,
        "cache": cache.stats(),
        "seconds": time.perf_counter() - started,
        "config": _jsonable(asdict(config)),
        "rows": table,
        # each trained (or oracle) selector against the best heuristic and the full transfer
        "paired": paired_vs_references(
            table,
            {cond.id: [r.gold_logprob for r in results[cond.id]] for cond in grid},
            f_none,
            f_all,
            gain_min_nats=config.gain_min_nats,
        ),
    }
    records = [
        {"condition": cond.id, **r.to_record(), "f_none": f_none[i], "f_all": f_all[i]}
        for cond in grid
        for i, r in enumerate(results[cond.id])
    ]
    result["outputs"] = {k: str(v) for k, v in write_outputs(result, records, out, plot=config.plot).items()}
    return result


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))
