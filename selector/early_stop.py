"""Early stop of the small model across models: stream its reasoning, stop once what it has is enough.

The small model generates greedily on its own KV cache, one token at a time. Each time a new unit
(sentence) begins, the units before it are complete, and every ``check_every``-th such boundary a
cheap check runs on the reasoning so far:

- the small model's **trial answer** (DEER-style): the answer cue (``"\\nAnswer:"``) is fed on the
  same cache, a few answer tokens are decoded greedily, and the cache is cropped back, so a check
  costs the cue and the answer tokens, never a second prefill. Its confidence is exp(mean token
  log-prob) of the answer line (as the confidence gate reads the large model's).
- ``confidence``: stop when the trial answer's confidence is at least ``stop_threshold``.
- ``agreement``: stop when the trial answer agrees with the large model's direct answer (known
  once the large model has answered; with a concurrent relay it may not be yet) and its confidence
  is at least ``stop_threshold`` (0: any agreement).
- ``selector``: stop when none of the last ``check_every`` units would be kept at the relay's
  budget: the new reasoning adds nothing the selector values (no trial answer needed).
- ``head``: stop when a trained stop head (``selector.stop_head``) reading the small model's hidden
  state at the boundary says the reasoning already states its answer with probability at least
  ``stop_threshold``: no decoding at a check, the state comes with the step that ended the unit.

A stopped stream drops the token that opened the new unit, so the reasoning ends on a whole unit.
A ``cancel`` callback ends a stream at any token (the confidence gate's direct path needs no
reasoning): ``finish_reason`` is then ``"cancelled"``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .agents import Agent, Generation
from .answers import answers_match
from .gating import answer_from_generation, answer_probability
from .prompts import reasoning_prompt
from .units import split_units

__all__ = [
    "STOP_SIGNALS",
    "Boundary",
    "StreamResult",
    "TrialAnswer",
    "check_early_stop",
    "reason_streams",
    "stop_rule",
    "stream_generate",
]

STOP_SIGNALS = ("none", "confidence", "agreement", "selector", "head")


def check_early_stop(signal: str, threshold: float, check_every: int, trial_tokens: int, cue: str) -> None:
    """Raise ValueError for an unknown signal or out-of-range settings (before any model loads)."""
    if signal not in STOP_SIGNALS:
        raise ValueError(f"unknown early_stop signal {signal!r}; expected one of {STOP_SIGNALS}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"stop_threshold must be in [0, 1], got {threshold!r}")
    for name, value in (("check_every", check_every), ("trial_tokens", trial_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not cue.strip():
        raise ValueError("stop_cue is empty: the trial answer needs a cue such as '\\nAnswer:'")


@dataclass
class TrialAnswer:
    """What the small model would answer if it stopped here."""

    text: str
    answer: str | None
    prob: float | None
    """exp(mean log-prob) of the trial answer line (None when nothing was generated)."""


@dataclass
class Boundary:
    """A unit boundary of the stream: the reasoning so far (the new unit's first token excluded)."""

    units: int
    """Complete units so far."""
    token_ids: list[int]
    logprobs: list[float]
    text: str
    trial: Callable[[], TrialAnswer]
    """The trial answer on the current cache (computed on first call, then remembered)."""
    hidden: torch.Tensor | None = None
    """The hidden state of the last kept token at the stream's ``hidden_layer`` (when asked for)."""
    states: torch.Tensor | None = None
    """Each kept token's state at the stream's ``record_layer`` (when asked for): what a selector reads."""


@dataclass
class StreamResult:
    """A streamed generation and what its checks saw."""

    generation: Generation
    checks: int = 0
    """Boundaries checked."""
    check_s: float = 0.0
    """Seconds spent in checks (inside decode_s)."""
    trial: TrialAnswer | None = None
    """The last trial answer computed (the one that stopped the stream, when it stopped early)."""
    trials: list[dict] = field(default_factory=list)
    """Per check: units, tokens, trial answer and its probability (None when not computed)."""
    threads: int | None = None
    """Torch threads of the generating thread when the stream ended (a concurrent relay may raise them)."""


def _count_units(text: str) -> int:
    return len(split_units(text, "sentence"))


@torch.inference_mode()
def stream_generate(
    agent: Agent,
    prompt: str,
    *,
    images: Sequence = (),
    max_new_tokens: int = 256,
    should_stop: Callable[[Boundary], bool] | None = None,
    check_every: int = 1,
    cue: str = "\nAnswer:",
    trial_tokens: int = 8,
    cancel: Callable[[], bool] | None = None,
    hidden_layer: int | None = None,
    record_layer: int | None = None,
) -> StreamResult:
    """Greedy generation for one prompt that asks ``should_stop`` at unit boundaries.

    With ``hidden_layer``, each boundary carries the last kept token's hidden state at that layer.
    With ``record_layer``, the generation's ``hidden_states`` hold each kept token's state at that
    layer, taken from the decoding steps themselves (what a selector reads; no second forward).

    Without a stop the tokens equal ``agent.generate([prompt])``'s (same greedy decoding, one
    cache); ``finish_reason`` is 'stop', 'length', 'early_stop' or 'cancelled'.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    model, tok = agent.model, agent.tokenizer
    enc = agent.encode_prompt(prompt, images)
    ids = enc["input_ids"].to(agent.device)[None]
    extra = {k: v.to(agent.device) for k, v in enc.items() if k != "input_ids"}
    eos = sorted(agent.eos_ids)
    start = time.perf_counter()
    want_hidden = {"output_hidden_states": True} if hidden_layer is not None else {}
    out = model(input_ids=ids, use_cache=True, **extra, **want_hidden, **agent._last_logits_only(1))
    cache, logits = out.cache, out.logits[0, -1].float()
    # the hidden state of the token whose logits are ``logits`` (the last one fed)
    hidden = out.hidden_states[hidden_layer][0, -1] if hidden_layer is not None else None
    recorded: list[torch.Tensor] = []  # record_layer's state of each reasoning token fed so far
    keep_states = hidden_layer is not None or record_layer is not None
    if not getattr(cache, "is_croppable", False) and should_stop is not None:
        raise ValueError(f"{agent.name}: its KV cache cannot be cropped, so trial answers cannot be read")
    length = ids.shape[1]
    tokens: list[int] = []
    logprobs: list[float] = []
    result = StreamResult(generation=None)  # type: ignore[arg-type]
    first: float | None = None
    units_before = 0
    finish = "length"
    cue_ids = agent.encode_text(cue).to(agent.device)

    def forward(token_ids: torch.Tensor, keep_hidden: bool = False) -> torch.Tensor:
        nonlocal length, hidden
        positions = torch.arange(length, length + len(token_ids), device=agent.device)[None]
        states = {"output_hidden_states": True} if keep_hidden else {}
        o = model(input_ids=token_ids[None], position_ids=positions, cache=cache, use_cache=True, **states)
        length += len(token_ids)
        if keep_hidden:
            if hidden_layer is not None:
                hidden = o.hidden_states[hidden_layer][0, -1]
            if record_layer is not None:
                recorded.append(o.hidden_states[record_layer][0, -1].float().cpu())
        return o.logits[0, -1].float()

    def trial_answer() -> TrialAnswer:
        nonlocal length
        base = length
        lg = forward(cue_ids)
        t_ids, t_lps = [], []
        for _ in range(trial_tokens):
            nxt = int(lg.argmax())
            if nxt in agent.eos_ids:
                break
            t_ids.append(nxt)
            t_lps.append(float(torch.log_softmax(lg, -1)[nxt]))
            if "\n" in tok.decode(t_ids, skip_special_tokens=True).strip():
                break
            lg = forward(torch.tensor([nxt], device=agent.device))
        cache.crop(-(length - base))  # back to the reasoning so far
        length = base
        text = tok.decode(t_ids, skip_special_tokens=True)
        return TrialAnswer(text, answer_from_generation(text), answer_probability(tok, t_ids, t_lps))

    for step in range(max_new_tokens):
        if cancel is not None and cancel():
            finish = "cancelled"
            break
        chooser = logits.clone()
        if step == 0 and eos:  # as generate(min_new_tokens=1)
            chooser[eos] = -math.inf
        nxt = int(chooser.argmax())
        if first is None:
            first = time.perf_counter()
        if nxt in agent.eos_ids:
            finish = "stop"
            break
        tokens.append(nxt)
        logprobs.append(float(torch.log_softmax(logits, -1)[nxt]))
        if should_stop is not None:
            units_now = _count_units(tok.decode(tokens, skip_special_tokens=True))
            complete = units_now - 1  # a new unit began: the ones before it are complete
            if units_now > units_before and complete >= 1 and complete % check_every == 0:
                t0 = time.perf_counter()
                memo: list[TrialAnswer] = []

                def trial(memo=memo) -> TrialAnswer:
                    if not memo:
                        memo.append(trial_answer())
                    return memo[0]

                kept = tokens[:-1]
                point = Boundary(
                    complete,
                    kept,
                    logprobs[:-1],
                    tok.decode(kept, skip_special_tokens=True),
                    trial,
                    hidden=hidden,
                    states=torch.stack(recorded[: len(kept)]) if record_layer is not None and kept else None,
                )
                stop = should_stop(point)
                result.checks += 1
                if memo:
                    result.trial = memo[0]
                result.trials.append(
                    {"units": complete, "tokens": len(kept), "answer": memo[0].answer if memo else None,
                     "prob": memo[0].prob if memo else None, "stop": bool(stop)}
                )  # fmt: skip
                result.check_s += time.perf_counter() - t0
                if stop:
                    tokens, logprobs = kept, logprobs[:-1]
                    finish = "early_stop"
                    break
            units_before = units_now
        if step + 1 < max_new_tokens or record_layer is not None:  # a recorded last token is fed too
            logits = forward(torch.tensor([nxt], device=agent.device), keep_hidden=keep_states)
    end = time.perf_counter()
    first = first or end
    result.generation = Generation(
        text=tok.decode(tokens, skip_special_tokens=True),
        token_ids=tokens,
        logprobs=logprobs,
        finish_reason=finish,
        prompt_tokens=int(ids.shape[1]),
        new_tokens=len(tokens),
        prefill_s=first - start,
        decode_s=end - first,
    )
    if record_layer is not None and tokens:
        result.generation.hidden_states = torch.stack(recorded[: len(tokens)])
    result.threads = torch.get_num_threads()
    return result


def stop_rule(relay, ex, direct: Callable[[], tuple | None]) -> Callable[[Boundary], bool] | None:
    """The relay's early-stop check for one question (None: never stop).

    ``direct()`` gives the large model's (answer, probability) once known, else None; the
    ``selector`` signal scores the reasoning so far with the relay's own selector and budget.
    """
    cfg = relay.config
    kind, threshold, every = cfg.early_stop, cfg.stop_threshold, cfg.check_every
    if kind == "none":
        return None

    def rule(b: Boundary) -> bool:
        if kind == "confidence":
            p = b.trial().prob
            return p is not None and p >= threshold
        if kind == "head":
            return b.hidden is not None and relay.stop_head.prob(b.hidden) >= threshold
        if kind == "agreement":
            known = direct()
            if known is None or known[0] is None:
                return False  # the large model has not answered yet
            t = b.trial()
            return t.answer is not None and answers_match(t.answer, known[0]) and (t.prob or 0) >= threshold
        # selector: none of the newest units would be kept at the budget
        gen = Generation(b.text, b.token_ids, b.logprobs, "early_stop", 0, len(b.token_ids), 0.0, 0.0)
        gen.hidden_states = b.states  # the stream records the selector's layer (reason_streams)
        mask = relay._select(ex, gen).mask
        return len(mask) > every and not any(mask[-every:])

    return rule


def reason_streams(relay, batch: Sequence, need: list[int], known: dict) -> list[tuple]:
    """The relay's stage 2, streamed question by question: (generation, stream, end time) for each
    ``batch[i]``, i in ``need``. ``known[i]`` holds the large model's (answer, probability) once it
    has answered; a concurrent confidence gate cancels the stream of a question it answers directly."""
    cfg, gate = relay.config, relay.gate
    out = []
    for i in need:
        ex = batch[i]
        prompt = reasoning_prompt(relay.small, ex.question, choices=ex.choices, images=ex.images,
                                  template=relay.template)  # fmt: skip
        cancel = None
        if cfg.concurrent:
            gated = gate.kind == "confidence"
            handoff = cfg.handoff_threads and relay.threads[1] < relay.total_threads

            def cancel(i=i, gated=gated, handoff=handoff) -> bool:
                """Asked before every token: the direct answer may have arrived meanwhile."""
                if i not in known:
                    return False
                if handoff and torch.get_num_threads() < relay.total_threads:
                    torch.set_num_threads(relay.total_threads)  # the large worker is idle now
                return gated and not gate.transfer(*known[i], None)

        stream = stream_generate(
            relay.small, prompt.text, images=prompt.images, max_new_tokens=cfg.reason_tokens,
            should_stop=stop_rule(relay, ex, lambda i=i: known.get(i)),
            check_every=cfg.check_every, cue=cfg.stop_cue, trial_tokens=cfg.trial_tokens, cancel=cancel,
            hidden_layer=relay.stop_head.hidden_layer if cfg.early_stop == "head" else None,
            record_layer=relay.hidden_layer,  # the selector's states come with the decoding steps
        )  # fmt: skip
        out.append((stream.generation, stream, time.perf_counter()))
    return out
