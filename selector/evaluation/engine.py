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
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

from ..agents import Agent, Generation
from ..answers import answers_match, extract_answer
from ..baselines import BASELINES, load_selector
from ..data import Example, load_examples
from ..io import files_fingerprint
from ..progress import progress_bar
from ..prompts import answer_target
from ..reasoning import ReasoningView, UnitScorer
from ..relay import Relay, RelayConfig, RelayResult, StageStats, check_images, resolve_granularity
from ..remote import HIDDEN_SELECTOR_ERROR, RemoteAgent, RemoteConfig
from ..selection import Transfer
from .cache import CachedAgent, OutputCache, image_keys
from .grid import CONDITIONS, Condition, EvalConfig, build_grid
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


def selector_fingerprint(name_or_path: str, config: EvalConfig) -> str:
    """A baseline with its options, or a checkpoint folder by its files' contents."""
    if name_or_path in BASELINES:
        return f"{name_or_path}|{json.dumps(config.relay_config(name_or_path, 'always', None).selector_kwargs())}"
    folder = Path(name_or_path).expanduser().resolve()
    return f"{folder}|{files_fingerprint(folder, ('*.json', '*.safetensors'), content=True)}"


_NOT_SELECTION = ("small", "large", "selector", "budget", "budget_kind", "gate", "tau", "small_tau", "answer_tokens",
                  "batch_size", "parallel", "dtype", "small_dtype", "device", "score_gold", "granularity",
                  # how the reasoning was made (its text is keyed), not how it is selected:
                  "concurrent", "large_threads", "small_threads", "early_stop", "stop_threshold", "stop_head",
                  "check_every", "trial_tokens", "stop_cue", "reuse_prompt")  # fmt: skip
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
    def agent(endpoint: RemoteConfig | None, path: str | None, role: str):
        if endpoint is not None:  # as `tokenrelay serve` builds one: the model path is its tokenizer
            return RemoteAgent(replace(endpoint, tokenizer=endpoint.tokenizer or path))
        return Agent.from_pretrained(path, **config.relay.load_kwargs(role))

    large = agent(config.large_endpoint, config.relay.large, "large")
    small = agent(config.small_endpoint, config.relay.small, "small") if config.needs_small else None
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
            try:  # units that do not fit a trained selector stop the run before any model loads
                resolve_granularity(config.relay.granularity, selectors[s])
            except ValueError as err:
                raise ValueError(f"selector {s!r}: {err}") from err
    if agents is None and config.small_endpoint is not None and config.needs_small:
        backbone = {
            s: getattr(getattr(sel, "config", None), "backbone", None) for s, sel in selectors.items()
        }
        hidden = [s for s, b in backbone.items() if b == "hidden"]
        if hidden:  # refused before any model is loaded or called
            raise ValueError(f"selector {hidden[0]!r}: {HIDDEN_SELECTOR_ERROR}")
    if agents is None:  # `fastest` dtypes measured (or read from the machine's cache) before loading
        local = [
            r for r, e in (("large", config.large_endpoint), ("small", config.small_endpoint)) if e is None
        ]
        config = replace(config, relay=config.relay.resolve_dtypes(roles=local))
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
    direct_relay = Relay(None, large, "none", replace(base, gate="never"))
    reasoner = (
        _EvalRelay(small, large, "full", base, cache, selector_fingerprint("full", config))
        if small is not None
        else None
    )
    if small is not None:
        reasoner.hidden_layer = small.hidden_layer

    n, size = len(examples), config.relay.batch_size
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
                    # The small model's own answer needs no hidden states: their forward is not its time.
                    seconds = gen.prefill_s + gen.decode_s - gen.hidden_s
                    stats = StageStats(seconds, gen.prompt_tokens, gen.new_tokens)
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
                        pairs, golds, images=images, max_new_tokens=config.relay.answer_tokens
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
            own = Relay(large, large, "full", replace(base, reason_tokens=config.large_reason_tokens))
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
        "small": config.relay.small,
        "large": config.relay.large,
        "budget_kind": config.relay.budget_kind,
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
