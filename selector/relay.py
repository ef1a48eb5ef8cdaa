"""The relay: the large model answers briefly, and when necessary from a small model's key reasoning.

Per batch of questions: (1) the large model answers directly (unless the gate is ``always`` and the
selector's novelty fallback is not ``disagreement``, which compares the two models' answers);
(2) the small model reasons for the questions that need it (see ``selector.gating``); (3) the gate
decides which questions transfer; (4) a selector scores the reasoning's units and a budget keeps
the best (``selector.selection``) — a trace the selector's ``disagreement`` fallback handled sends only
forced units when its stated answer is the direct answer; (5) the large model answers again from the
transfer prompt (``selector.prompts.transfer_prompt``, the builder the labelers use). At batch 1 that answer
resumes from the direct prompt's KV cache (``reuse_prompt``): only the transfer is prefilled.

Every result carries per-stage wall time and token counts. Stage times of batched generation are
the batch's wall time (what each question waited); run with ``batch_size=1`` for per-question
latency. End-to-end latency is the sum of the stages that ran (``parallel=False``), or, with
``parallel=True``, it counts the small model as running concurrently with the large direct answer:
max(large direct, small reasoning) + the rest, and a question the gate answers directly does not
wait for the small model at all under the confidence gate (arithmetic on stage times).

``concurrent=True`` really runs them at the same time: the large model's direct answer and the
small model's reasoning each in its own worker thread with its own torch thread count (torch ops
release the GIL, so on a CPU the two overlap on their own cores; on a GPU both models stay
resident). Latency is then measured wall time, from the batch's start to the moment its answer is
ready. Answers are those of the sequential relay. Under the confidence gate a confident question is
answered as soon as the direct answer is, and its small-model stream is cancelled. Once the direct
answer is in, the small model's stream takes every thread (``handoff_threads``): the overlap costs it
only the direct answer's time at its share of the cores.

``early_stop`` (see ``selector.early_stop``) streams the small model's reasoning and stops it at a
unit boundary once a cheap check says it is enough; the relay transfers what it has. A stream that
stopped on its trial answer carries that answer as the small model's (the agreement gate reads it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from .agents import Agent, Generation
from .answers import answers_match, contains_answer, extract_answer
from .baselines import load_selector, select_transfer
from .data import Example
from .early_stop import StreamResult, reason_streams
from .gating import Gate, answer_from_generation, answer_probability, stated_answer_probability
from .progress import progress_bar
from .prompts import PromptParts, PromptTemplate, answer_target, reasoning_prompt, transfer_prompt
from .reasoning import ReasoningView, UnitScorer, view_from_generation
from .relay_config import STAGES, RelayConfig, RelayResult, StageStats, check_images
from .selection import Transfer, build_transfer, forced_keeps
from .stop_head import StopHead
from .units import unit_token_counts

__all__ = [
    "STAGES",
    "Relay",
    "RelayConfig",
    "RelayResult",
    "StageStats",
    "check_images",
    "resolve_granularity",
]

logger = logging.getLogger(__name__)
_told: set[tuple[str, str]] = set()


def resolve_granularity(requested: str, selector: UnitScorer | str) -> str:
    """The units a relay cuts the reasoning into: ``auto`` means a trained selector's own units (said
    once per selector) or sentences for a baseline; an explicit choice a trained selector was not
    trained on is refused, never silently replaced (its scores would mean nothing)."""
    trained = getattr(getattr(selector, "config", None), "granularity", None)
    if requested == "auto":
        if trained is None:
            return "sentence"
        name = str(getattr(selector, "name", selector))
        if (name, trained) not in _told:
            _told.add((name, trained))
            logger.info("granularity auto: selector %s uses %s units", name, trained)
        return trained
    if trained is not None and requested != trained:
        raise ValueError(
            f"granularity {requested!r} does not match the trained selector's {trained!r} units: "
            f"set granularity to {trained!r} or 'auto'"
        )
    return requested


def _generation_s(gens: Sequence[Generation]) -> float:
    """Wall seconds of one batched generation (prefill + decode, shared by the batch)."""
    return max((g.prefill_s + g.decode_s for g in gens), default=0.0)


def _batch_stats(gen: Generation) -> StageStats:
    return StageStats(gen.prefill_s + gen.decode_s, gen.prompt_tokens, gen.new_tokens)


class Relay:
    """Small agent, large agent, selector, budget and gate: ``run(examples)`` answers a batch."""

    def __init__(
        self,
        small: Agent | None,
        large: Agent,
        selector: UnitScorer | str = "selfinfo",
        config: RelayConfig | None = None,
        template: PromptTemplate | None = None,
    ):
        self.config = config or RelayConfig()
        self.small, self.large = small, large
        self.gate = Gate(self.config.gate, self.config.tau, self.config.small_tau)
        self.budget = self.config.budget_spec
        self.template = template
        if isinstance(selector, str):
            selector = load_selector(selector, **self.config.selector_kwargs(selector))
        self.selector = selector
        self._workers: ThreadPoolExecutor | None = None
        self.total_threads = torch.get_num_threads()
        """Torch threads of the process when the relay was built (what the concurrent workers share)."""
        if small is None and self.gate.kind != "never":
            raise ValueError(f"gate {self.gate.kind!r} needs a small model")
        selector_config = getattr(selector, "config", None)
        self.granularity = resolve_granularity(self.config.granularity, selector)
        backbone = getattr(selector_config, "backbone", "hidden")
        self.hidden_layer = getattr(selector_config, "hidden_layer", None) if backbone == "hidden" else None
        self.fallback_needs_direct = getattr(selector_config, "novelty_fallback", None) == "disagreement"
        """The selector's ``disagreement`` fallback compares the small model's answer with the large model's
        direct answer, which is then computed whatever the gate."""
        if small is not None and hasattr(selector, "check_compatible"):
            selector.check_compatible(small_agent=small)
        self.stop_head: StopHead | None = None
        """The early-stop ``head`` signal's probe (selector.stop_head), checked against the small model."""
        if self.config.early_stop == "head":
            self.stop_head = StopHead.from_pretrained(self.config.stop_head)
            model_config = getattr(getattr(small, "model", None), "config", None)
            if model_config is None:
                raise ValueError(
                    "early_stop 'head' reads the small model's hidden states: it needs a local small model"
                )
            self.stop_head.check_compatible(model_config)

    @classmethod
    def from_config(cls, config: RelayConfig) -> Relay:
        """Load the models and the selector named in ``config``."""
        if config.large is None:
            raise ValueError("the relay needs a large model (large=...)")
        if config.small is None and config.gate != "never":
            raise ValueError(f"gate {config.gate!r} needs a small model (small=...)")
        selector = load_selector(config.selector, **config.selector_kwargs())
        config = config.resolve_dtypes()
        large = Agent.from_pretrained(config.large, **config.load_kwargs("large"))
        small = (
            Agent.from_pretrained(config.small, **config.load_kwargs("small"))
            if config.gate != "never"
            else None
        )
        return cls(small, large, selector, config)

    # ------------------------------------------------------------------ public
    def answer(
        self, question: str, images: Sequence = (), choices: Sequence[str] | None = None
    ) -> RelayResult:
        """Run the relay on one question."""
        ex = Example(id="0", question=question, answer="", images=list(images), choices=choices)
        return self.run([ex], progress=False)[0]

    def run(self, examples: Sequence[Example], progress: bool = True) -> list[RelayResult]:
        """Answer every example (in order); batches of ``config.batch_size``."""
        examples = list(examples)
        check_images(examples)
        if any(ex.images for ex in examples):
            for agent in (self.large, self.small if self.gate.kind != "never" else None):
                if agent is not None and not agent.supports_images:
                    raise ValueError(f"the examples have images but {agent.name} is a text-only model")
        results: list[RelayResult] = []
        size = self.config.batch_size
        with progress_bar(disable=not progress) as bar:
            task = bar.add_task("relay", total=len(examples))
            for start in range(0, len(examples), size):
                batch = examples[start : start + size]
                results.extend(self._run_batch(batch))
                bar.advance(task, len(batch))
        return results

    # ------------------------------------------------------------------ stages
    def _prompt(self, ex: Example, reasoning: str | None) -> PromptParts:
        return transfer_prompt(
            self.large, ex.question, reasoning, choices=ex.choices, images=ex.images, template=self.template
        )

    def _answer_batch(self, parts: list[PromptParts], **cache) -> list[Generation]:
        return self.large.generate(
            [p.text for p in parts],
            images=[p.images for p in parts],
            max_new_tokens=self.config.answer_tokens,
            **cache,
        )

    def _answer_and_score(
        self, parts: list[PromptParts], golds: list[str | None], **cache
    ) -> tuple[list[Generation], list[float | None]]:
        """Answers, and with ``score_gold`` log p(gold | prompt) from the same prefill (None: no gold).
        ``cache``: the prompt-cache arguments (``prefix``, ``keep_prompt``) of a one-prompt call."""
        scored = [i for i, g in enumerate(golds) if g] if self.config.score_gold else []
        if not scored:
            return self._answer_batch(parts, **cache), [None] * len(parts)
        gens: list[Generation | None] = [None] * len(parts)
        logprobs: list[float | None] = [None] * len(parts)
        both = self.large.answer_and_score(
            [parts[i].as_pair() for i in scored],
            [answer_target(golds[i]) for i in scored],
            images=[parts[i].images for i in scored],
            max_new_tokens=self.config.answer_tokens,
            **cache,
        )
        for i, gen, s in zip(scored, *both):
            gens[i], logprobs[i] = gen, s.logprob
        rest = [i for i in range(len(parts)) if gens[i] is None]
        if rest:
            for i, gen in zip(rest, self._answer_batch([parts[i] for i in rest])):
                gens[i] = gen
        return gens, logprobs  # type: ignore[return-value]

    def _reuses_prompt(self, batch: Sequence[Example]) -> bool:
        """Whether the final answer resumes from the direct prompt's cache (``reuse_prompt``)."""
        return (
            self.config.reuse_prompt
            and len(batch) == 1
            and not batch[0].images
            and getattr(self.large, "supports_prompt_cache", False)
        )

    def _run_batch(self, batch: list[Example]) -> list[RelayResult]:
        cfg, gate = self.config, self.gate
        n = len(batch)
        t0 = time.perf_counter()
        res = [
            RelayResult(id=ex.id, answer=None, path="direct", output="", gold=ex.answer or None)
            for ex in batch
        ]
        direct_parts = [self._prompt(ex, None) for ex in batch]
        golds = [ex.answer or None for ex in batch]
        gold_logprob: list[float | None] = [None] * n
        known: dict[int, tuple[str | None, float | None]] = {}  # direct answers as they arrive
        reuse = self._reuses_prompt(batch)

        def run_direct() -> tuple[list[Generation], list[float | None], float]:
            start = time.perf_counter()
            gens, lps = self._answer_and_score(
                direct_parts, golds, **({"keep_prompt": True} if reuse else {})
            )
            for i, gen in enumerate(gens):
                known[i] = (
                    answer_from_generation(gen.text),
                    answer_probability(self.large.tokenizer, gen.token_ids, gen.logprobs),
                )
            return gens, lps, start + _generation_s(gens)  # gold scoring is not in the latency

        # (1) the large model's direct answer and (2) the small model's reasoning where it is needed,
        # at the same time with ``concurrent``.
        if gate.kind == "never":
            need: list[int] | None = []
        elif gate.small_for_all or cfg.parallel or cfg.concurrent:
            need = list(range(n))
        else:  # confidence, sequential: only the questions the gate sends on
            need = None
        direct_out = small_out = None
        needs_direct = gate.needs_direct or self.fallback_needs_direct
        if cfg.concurrent and needs_direct and need:
            pool = self._pool()
            fut_direct = pool.submit(self._in_worker, self.large, self.threads[0], run_direct)
            fut_small = pool.submit(
                self._in_worker, self.small, self.threads[1], self._reason, batch, need, known
            )
            direct_out, small_out = fut_direct.result(), fut_small.result()
        else:
            direct_out = run_direct() if needs_direct else None
            if need is None:
                need = [i for i in range(n) if gate.transfer(known[i][0], known[i][1], None)]
            small_out = self._reason(batch, need, known) if need else []
        direct_done, kept = t0, None
        if direct_out is not None:
            gens_direct, gold_logprob, direct_done = direct_out
            for r, gen in zip(res, gens_direct):
                r.output = gen.text
                r.direct_answer = r.answer = answer_from_generation(gen.text)
                r.direct_prob = answer_probability(self.large.tokenizer, gen.token_ids, gen.logprobs)
                r.stages["large_direct"] = _batch_stats(gen)
            kept = gens_direct[0].prompt_cache if reuse else None
        gens: dict[int, Generation] = {}
        ready = {i: direct_done for i in range(n)}  # when each answer could be given (concurrent)
        for i, (gen, stream, end) in zip(need, small_out):
            r = res[i]
            r.small_finish, r.stages["small_reasoning"] = gen.finish_reason, _batch_stats(gen)
            if gen.finish_reason == "cancelled":
                continue  # the gate answered directly: no reasoning to use
            gens[i] = gen
            r.reasoning = gen.text
            r.small_answer = extract_answer(gen.text)
            r.small_prob = stated_answer_probability(
                self.small.tokenizer, gen.token_ids, gen.logprobs, r.small_answer
            )
            if stream is not None:
                r.stop_checks, r.small_threads_end = stream.checks, stream.threads
                if gen.finish_reason == "early_stop" and stream.trial is not None:
                    r.small_answer, r.small_prob = stream.trial.answer, stream.trial.prob
            if gate.kind != "confidence":
                ready[i] = max(ready[i], end)
        # (3) the gate, (4) selection
        transfers: dict[int, Transfer] = {}
        for i in range(n):
            r = res[i]
            if i not in gens or not gate.transfer(
                r.direct_answer, r.direct_prob, r.small_answer, r.small_prob
            ):
                continue
            transfers[i], seconds = self.select(batch[i], gens[i])
            if self._fallback_agrees(transfers[i], r):
                started = time.perf_counter()
                transfers[i] = self._forced_only(batch[i], gens[i])
                seconds += time.perf_counter() - started
            r.stages["selection"] = StageStats(seconds, transfers[i].total_tokens, transfers[i].kept_tokens)
            r.path = "transfer"
            r.transfer_text = transfers[i].text
            r.transfer_tokens, r.reasoning_tokens = transfers[i].kept_tokens, transfers[i].total_tokens
            r.selector_fallback = transfers[i].fallback
        # (5) the large model answers from the transfer prompt
        order = sorted(transfers)
        final_parts = list(direct_parts)
        if order:
            for i in order:
                final_parts[i] = self._prompt(batch[i], transfers[i].text)
            start = time.perf_counter()
            answered, scores = self._answer_and_score(
                [final_parts[i] for i in order],
                [golds[i] for i in order],
                **({"prefix": kept} if kept else {}),
            )
            final_done = start + _generation_s(answered)
            for i, gen, lp in zip(order, answered, scores):
                gold_logprob[i] = lp
                r = res[i]
                r.output = gen.text
                r.answer = answer_from_generation(gen.text)
                r.stages["large_prefill"] = StageStats(gen.prefill_s, gen.prompt_tokens, 1, gen.cached_tokens)
                r.stages["large_decode"] = StageStats(gen.decode_s, 0, max(0, gen.new_tokens - 1))
                ready[i] = final_done
        for i, (ex, r) in enumerate(zip(batch, res)):
            r.latency_s = ready[i] - t0 if cfg.concurrent else self._latency(r)
            if ex.answer:
                r.correct = answers_match(r.answer, ex.answer)
                r.leaked = contains_answer(r.transfer_text, ex.answer) if r.transfer_text else False
        for r, lp in zip(res, gold_logprob):
            r.gold_logprob = lp
        # Golds the answering calls did not score (a direct prompt the gate never generated for).
        if cfg.score_gold and any(ex.answer and lp is None for ex, lp in zip(batch, gold_logprob)):
            scored = [i for i, ex in enumerate(batch) if ex.answer and gold_logprob[i] is None]
            scores = self.large.score(
                [final_parts[i].as_pair() for i in scored],
                [answer_target(batch[i].answer) for i in scored],
                images=[final_parts[i].images for i in scored],
                batch_size=max(1, n),
            )
            for i, s in zip(scored, scores):
                res[i].gold_logprob = s.logprob
        return res

    # ------------------------------------------------------------------ concurrency and streaming
    @property
    def threads(self) -> tuple[int, int]:
        """Torch threads of the (large, small) workers of a concurrent relay."""
        total = self.total_threads
        large = self.config.large_threads or max(1, (total + 1) // 2)
        small = self.config.small_threads or max(1, total - large)
        return large, small

    def _pool(self) -> ThreadPoolExecutor:
        if self._workers is None:
            self._workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="relay")
        return self._workers

    @staticmethod
    def _in_worker(agent, threads: int, fn, *args):
        """Run ``fn`` in this worker with its own torch thread count (and CUDA stream on a GPU)."""
        torch.get_num_threads()  # a thread's first torch call resets its count from the global one
        torch.set_num_threads(threads)
        device = getattr(agent, "device", None)  # a RemoteAgent has none: its engine runs elsewhere
        if device is None or device.type != "cuda":
            return fn(*args)
        stream = torch.cuda.Stream(device=agent.device)
        with torch.cuda.stream(stream):
            out = fn(*args)
        stream.synchronize()
        return out

    @property
    def streams(self) -> bool:
        """Whether the small model streams its reasoning (question by question) instead of one batch."""
        cfg = self.config
        # A concurrent stream can cancel itself (confidence gate) or take over the large worker's threads
        # once the direct answer is in (handoff_threads); batch 1 streams at no cost.
        concurrent = cfg.concurrent and (
            self.gate.kind == "confidence" or (cfg.handoff_threads and cfg.batch_size == 1)
        )
        # A selector that reads hidden states gets them from a stream's decoding steps; one generate call
        # needs a second forward over the reasoning for them (3.4 s per question for the real pair's fp16
        # small model on this project's CPU): at batch 1, streaming costs nothing else.
        states = self.hidden_layer is not None and cfg.batch_size == 1 and isinstance(self.small, Agent)
        return cfg.early_stop != "none" or concurrent or states

    def _reason(
        self, batch: Sequence[Example], need: list[int], known: dict
    ) -> list[tuple[Generation, StreamResult | None, float]]:
        """Stage 2 for ``batch[i]``, i in ``need``: (generation, its stream or None, when it ended)."""
        if not self.streams:
            gens = self.reason([batch[i] for i in need])
            end = time.perf_counter()
            return [(g, None, end) for g in gens]
        return reason_streams(self, batch, need, known)

    def reason(self, batch: Sequence[Example]) -> list[Generation]:
        """Stage 2: the small model's reasoning for ``batch`` (one generate call)."""
        prompts = [
            reasoning_prompt(
                self.small, ex.question, choices=ex.choices, images=ex.images, template=self.template
            )
            for ex in batch
        ]
        return self.small.generate(
            [p.text for p in prompts],
            images=[p.images for p in prompts],
            max_new_tokens=self.config.reason_tokens,
            hidden_layer=self.hidden_layer,
        )

    def view(self, ex: Example, gen: Generation) -> ReasoningView:
        """What the selector sees of one question's reasoning (without its final answer line,
        unless ``keep_answer_line``): units and the small model's signals."""
        return view_from_generation(
            ex.question,
            gen.text,
            gen.token_ids,
            gen.logprobs,
            self.small.tokenizer,
            granularity=self.granularity,
            hidden_states=gen.hidden_states,
            keep_answer_line=self.config.keep_answer_line,
        )

    def select(self, ex: Example, gen: Generation) -> tuple[Transfer, float]:
        """Stage 4 for one question: its transfer, and the seconds selection took."""
        t0 = time.perf_counter()
        transfer = self._select(ex, gen)
        return transfer, time.perf_counter() - t0

    def _select(self, ex: Example, gen: Generation) -> Transfer:
        """Units of the small model's reasoning, scored and cut to the budget."""
        view, counts, forced = self._units(ex, gen)
        return select_transfer(self.selector, view, counts, self.budget, forced if any(forced) else None)

    def _units(self, ex: Example, gen: Generation) -> tuple[ReasoningView, list[int], list[bool]]:
        """The selector's view, each unit's large-model token count, and the units the relay forces."""
        view = self.view(ex, gen)
        counts = unit_token_counts(view.reasoning, view.units, self.large.tokenizer)
        forced = forced_keeps(view.units, numbers=self.config.force_numbers, last=self.config.force_last)
        return view, counts, forced

    def _fallback_agrees(self, transfer: Transfer, r: RelayResult) -> bool:
        """The ``disagreement`` fallback handled this trace and the small model's stated answer is the
        large model's direct answer: the reasoning holds nothing the large model lacks."""
        return (
            self.fallback_needs_direct
            and transfer.fallback
            and r.small_answer is not None
            and r.direct_answer is not None
            and answers_match(r.small_answer, r.direct_answer)
        )

    def _forced_only(self, ex: Example, gen: Generation) -> Transfer:
        """What a novel trace sends when both models agree: only the units the relay forces (as under
        the ``nothing`` fallback)."""
        view, counts, forced = self._units(ex, gen)
        transfer = build_transfer(view.reasoning, view.units, forced, counts)
        transfer.fallback = True
        return transfer

    def _latency(self, r: RelayResult) -> float:
        s = {name: r.stages[name].seconds if name in r.stages else 0.0 for name in STAGES}
        tail = s["selection"] + s["large_prefill"] + s["large_decode"]
        if not self.config.parallel:
            return sum(s.values())
        if r.path == "direct" and self.gate.kind == "confidence":
            return s["large_direct"]  # answered without waiting for the concurrent small model
        return max(s["large_direct"], s["small_reasoning"]) + tail
